"""The dashboard of ``dynwf dev`` at ``/__dynwf/``, and the playground's scratch tenants behind it.

The page is a single-page app in plain JavaScript modules shipped in ``emulator/server/static/``
(no build step, nothing fetched from elsewhere). ``GET /__dynwf/`` serves ``index.html`` with
the session's admin token in a ``<meta name="dynwf-token">`` tag; the page sends it as the
``x-dynwf-token`` header on every state-changing call of the admin API, exactly as scripts do.
Like the API, the page is served only to requests addressed to a loopback name (a rebound DNS
name gets a 403, so no other site can read the token), and a strict Content-Security-Policy keeps
the page from talking to anything but this server.

The playground runs code typed into the page as a *scratch tenant*: it never depends on the
project's dispatcher (which decides where tenant code comes from) and never writes into the
project's ``tenants/``. The code is kept in ``<state dir>/playground/<hash>.py``, named by its
content hash; the tenant id is ``scratch-<hash>``. Its instances belong to a built-in workflow,
:data:`PLAYGROUND_WORKFLOW`, registered on the engine when the app is made, whose runner loads the
code through the host's isolate pool (a Worker Loader of its own, keyed by the scratch id) and
runs its ``TenantWorkflow`` like any tenant's, with a ``WORKFLOWS`` binding scoped to the scratch
tenant in its env.
"""

from __future__ import annotations

import ast
import hashlib
import html
import re
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from emulator.analysis.check import _check_class, _classes, module_bindings
from emulator.analysis.lint import lint_tenant_source
from emulator.config.model import Diagnostic
from emulator.engine import WorkflowDefinition
from emulator.error_codes import Code
from emulator.errors import DynwfError
from emulator.host import ProjectHost
from emulator.loader import WorkerLoader
from emulator.analysis.outline import DEFAULT_ENTRY_CLASS, TenantSourceError, outline_steps

__all__ = ["PLAYGROUND_WORKFLOW", "SCRATCH_PREFIX", "STATIC_DIR", "dashboard_routes",
           "install_playground", "lint_playground", "playground_source", "save_playground",
           "source_outline"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
PLAYGROUND_WORKFLOW = "__playground"
PLAYGROUND_LOADER = "PLAYGROUND"
SCRATCH_PREFIX = "scratch-"
PLAYGROUND_FILE = "index.py"
MAX_CODE_BYTES = 1024 * 1024
_HASH = re.compile(r"^[0-9a-f]{12}$")
_CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                  ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml",
                  ".py": "text/plain; charset=utf-8"}
#: The page may load and call only this server: no CDN, no beacon, no framing by other sites.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


# ---- the scratch code ---------------------------------------------------------------------------

def playground_dir(host: ProjectHost) -> Path:
    return host.database.parent / "playground"


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()[:12]


def save_playground(host: ProjectHost, code: str) -> str:
    """Keep ``code`` in the state directory; returns its scratch tenant id."""
    digest = code_hash(code)
    folder = playground_dir(host)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.py"
    if not path.is_file():
        temporary = path.with_suffix(".tmp")
        temporary.write_text(code, encoding="utf-8")
        temporary.replace(path)
    return SCRATCH_PREFIX + digest


def playground_source(host: ProjectHost, tenant: Any) -> str | None:
    """The code of scratch tenant ``tenant``, or None when it is not one (or is gone)."""
    if not isinstance(tenant, str) or not tenant.startswith(SCRATCH_PREFIX):
        return None
    digest = tenant[len(SCRATCH_PREFIX):]
    if not _HASH.match(digest):
        return None
    try:
        return (playground_dir(host) / f"{digest}.py").read_text(encoding="utf-8")
    except OSError:
        return None


def lint_playground(code: str) -> list[Diagnostic]:
    """What ``dynwf check`` says of ``code`` as a tenant's ``index.py``: the step rules, and that
    it defines ``TenantWorkflow(WorkflowEntrypoint)`` with ``async def run(self, event, step)``."""
    found = list(lint_tenant_source(code, PLAYGROUND_FILE))
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return found                      # reported by the lint as DW200, with its line
    node = module_bindings(tree)[0].get(DEFAULT_ENTRY_CLASS)
    if not isinstance(node, ast.ClassDef):
        found.append(Diagnostic(
            "DW203", "error", f"{PLAYGROUND_FILE} does not define class {DEFAULT_ENTRY_CLASS}",
            PLAYGROUND_FILE, hint=f"define class {DEFAULT_ENTRY_CLASS}(WorkflowEntrypoint) with "
                                  "async def run(self, event, step)"))
    else:
        found.extend(_check_class(node, _classes(tree), DEFAULT_ENTRY_CLASS, PLAYGROUND_FILE))
    return sorted(found, key=lambda d: (d.line, d.column))


def source_outline(source: str) -> dict[str, Any]:
    """``{"steps": [...]}`` of the outline, or ``{"steps": [], "error": ...}`` when the source
    does not parse."""
    try:
        return {"steps": [asdict(step) for step in outline_steps(source)]}
    except TenantSourceError as exc:
        return {"steps": [], "error": {"message": exc.message, "line": exc.line,
                                       "column": exc.column}}


# ---- the built-in workflow --------------------------------------------------------------------

class PlaygroundCodeMissingError(DynwfError):
    """A playground instance of ``tenant`` whose scratch code is gone from the state directory."""

    code = Code.PLAYGROUND_CODE_MISSING

    def __init__(self, *, tenant: Any) -> None:
        super().__init__(f"the playground code of '{tenant}' is gone from the state directory",
                         hint="run it again from the dashboard's playground")


class _PlaygroundRunner:
    """Runs one playground instance: the scratch tenant's code in its own isolate."""

    def __init__(self, host: ProjectHost, loader: WorkerLoader) -> None:
        self.host = host
        self.loader = loader

    async def run(self, event: Any, step: Any) -> Any:
        from dynamic_workflows import _dispatcher_binding_impl, dispatch_workflow
        host, loader = self.host, self.loader

        def load_runner(context: Any) -> Any:
            metadata = context.metadata
            tenant = metadata.get("tenantId") if isinstance(metadata, dict) else None
            source = playground_source(host, tenant)
            if source is None:
                raise PlaygroundCodeMissingError(tenant=tenant)

            def code() -> dict[str, Any]:
                binding = _dispatcher_binding_impl(
                    lambda: host.engine.binding(PLAYGROUND_WORKFLOW), metadata)
                return {"compatibility_date": host.config.compatibility_date,
                        "main_module": PLAYGROUND_FILE, "modules": {PLAYGROUND_FILE: source},
                        "env": {"WORKFLOWS": binding}, "global_outbound": None}
            return loader.get(tenant, code).get_entrypoint(DEFAULT_ENTRY_CLASS)

        return await dispatch_workflow(SimpleNamespace(env=None, ctx=None), event, step,
                                       load_runner)


def install_playground(host: ProjectHost) -> None:
    """Register :data:`PLAYGROUND_WORKFLOW` on the host's engine (kept across dispatcher
    reloads: only workflows of the config are ever removed)."""
    loader = WorkerLoader(host.pool, PLAYGROUND_LOADER)
    runner = _PlaygroundRunner(host, loader)
    host.engine.register(WorkflowDefinition(PLAYGROUND_WORKFLOW, lambda row: runner,
                                            compatibility_date=host.config.compatibility_date))


async def create_playground_instance(host: ProjectHost, tenant: str, params: Any) -> str:
    """Start an instance of the scratch tenant, as its own wrapped binding would; the real id."""
    from dynamic_workflows import _dispatcher_binding_impl, scoped_instance_id
    metadata = {"tenantId": tenant}
    binding = _dispatcher_binding_impl(lambda: host.engine.binding(PLAYGROUND_WORKFLOW), metadata)
    instance = await binding.create({"params": params})
    return scoped_instance_id(metadata, instance.id)


# ---- the page -----------------------------------------------------------------------------------

def dashboard_routes(host: ProjectHost, token: str, prefix: str = "/__dynwf") -> list[Route]:
    """``GET {prefix}/`` (the page) and ``GET {prefix}/static/{file}`` (its modules)."""
    from emulator.server.admin import ForbiddenError, error_response, is_local

    def refused(request: Request) -> Response | None:
        if not is_local(request.headers.get("host")) or (
                "origin" in request.headers and not is_local(request.headers["origin"])):
            return error_response(ForbiddenError(what="the dashboard"))
        return None

    async def index(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        page = page.replace("{{TOKEN}}", html.escape(token, quote=True)).replace(
            "{{PROJECT}}", html.escape(host.config.name or "dynwf", quote=True))
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    async def static(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        name = request.path_params["file"]
        path = (STATIC_DIR / name).resolve()
        if path.parent != STATIC_DIR or not path.is_file() or path.name == "index.html":
            return JSONResponse({"error": {"code": str(Code.DEV_NOT_FOUND),
                                           "message": f"no dashboard file {name}"}},
                                status_code=Code.DEV_NOT_FOUND.http_status)
        return FileResponse(path, media_type=_CONTENT_TYPES.get(path.suffix, "text/plain"),
                            headers=SECURITY_HEADERS)

    return [
        Route(f"{prefix}/", index, methods=["GET"]),
        Route(f"{prefix}", index, methods=["GET"]),
        Route(prefix + "/static/{file}", static, methods=["GET"]),
    ]


# ---- the sample -------------------------------------------------------------------------------

SAMPLE_PARAMS: dict[str, Any] = {"name": "Ada", "items": [3, 4, 5]}


def sample_code() -> str:
    """The tenant workflow the playground's editor starts with."""
    return (STATIC_DIR / "sample.py").read_text(encoding="utf-8")

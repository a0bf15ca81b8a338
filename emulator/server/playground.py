"""The dashboard's playground: code typed into the page, run as a *scratch tenant*.

A scratch tenant never depends on the project's dispatcher (which decides where tenant code comes
from) and never writes into the project's ``tenants/``. The code is kept in
``<state dir>/playground/<hash>.py``, named by its content hash; the tenant id is
``scratch-<hash>``. Its instances belong to a built-in workflow, :data:`PLAYGROUND_WORKFLOW`,
registered on the engine when the app is made, whose runner loads the code through the host's
isolate pool (a Worker Loader of its own, keyed by the scratch id) and runs its
``TenantWorkflow`` like any tenant's, with a ``WORKFLOWS`` binding scoped to the scratch tenant
in its env. The admin API's ``/playground`` routes (:mod:`emulator.server.admin`) call it.
"""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from emulator.analysis.ast_tools import module_bindings, top_level_classes
from emulator.analysis.check import check_entrypoint_class
from emulator.analysis.lint import lint_tenant_source
from emulator.analysis.outline import DEFAULT_ENTRY_CLASS
from emulator.config.model import Diagnostic
from emulator.engine import WorkflowDefinition
from emulator.server.errors import PlaygroundCodeMissingError
from emulator.host import ProjectHost
from emulator.defaults import PLAYGROUND_WORKFLOW
from emulator.loader import WorkerLoader

__all__ = ["MAX_CODE_BYTES", "PLAYGROUND_WORKFLOW", "SAMPLE_PARAMS", "SCRATCH_PREFIX", "code_hash",
           "create_playground_instance", "install_playground", "lint_playground",
           "playground_source", "sample_code", "save_playground"]

PLAYGROUND_LOADER = "PLAYGROUND"
SCRATCH_PREFIX = "scratch-"
PLAYGROUND_FILE = "index.py"
MAX_CODE_BYTES = 1024 * 1024
#: The tenant workflow the playground's editor starts with, shipped beside the page.
SAMPLE_FILE = Path(__file__).resolve().parent / "static" / "sample.py"
SAMPLE_PARAMS: dict[str, Any] = {"name": "Ada", "items": [3, 4, 5]}
_HASH = re.compile(r"^[0-9a-f]{12}$")


def sample_code() -> str:
    """The tenant workflow the playground's editor starts with."""
    return SAMPLE_FILE.read_text(encoding="utf-8")


# ---- the scratch code ---------------------------------------------------------------------------

def playground_dir(host: ProjectHost) -> Path:
    return host.state_dir / "playground"


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
        found.extend(check_entrypoint_class(node, top_level_classes(tree), DEFAULT_ENTRY_CLASS,
                                            PLAYGROUND_FILE))
    return sorted(found, key=lambda d: (d.line, d.column))


# ---- the built-in workflow --------------------------------------------------------------------
# ``dynamic_workflows`` is imported by the name dispatcher code uses (the runtime folder on the
# import path, so its classes are the dispatcher's), inside functions: the host puts the folder
# there when it imports the dispatcher.

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

"""The admin API of ``dynwf dev``, under ``/__dynwf/api/``: the operations of ``emulator.ops``
over HTTP, for the dashboard and for scripts.

| method | path | does |
|---|---|---|
| GET | `/__dynwf/api/instances?tenant=&status=&workflow=&limit=` | list |
| POST | `/__dynwf/api/instances` `{"tenant", "params"?, "id"?, "workflow"?, "metadata"?}` | create |
| GET | `/__dynwf/api/instances/{id}?tenant=` | describe |
| POST | `/__dynwf/api/instances/{id}/{pause,resume,terminate,restart,wake}` | lifecycle |
| POST | `/__dynwf/api/instances/{id}/events` `{"type", "payload"?}` | send an event |
| GET | `/__dynwf/api/instances/{id}/logs?after=` | log lines |
| GET | `/__dynwf/api/events?instance=` | progress as server-sent events |
| GET | `/__dynwf/api/instances/{id}/outline?tenant=` | the steps its code declares, before they run |
| GET | `/__dynwf/api/playground/sample` | the playground's sample tenant code and params |
| POST | `/__dynwf/api/playground` `{"code", "params"?}` | check the code, then run it as a scratch tenant |

Exposure: requests whose ``Host`` (or ``Origin``, when sent) is not a loopback name are refused
(403), so a web page elsewhere cannot drive a local server even through DNS rebinding; every
state-changing request also needs the ``x-dynwf-token`` header holding the per-session token the
server writes to ``<state dir>/admin-token`` (mode 0600) when it starts. Errors are
``{"error": {"code", "message", "hint"}}`` with the status the code's entry in
:mod:`emulator.error_codes` gives.

Input: a body is one JSON object of the route's fields only, at most :data:`MAX_BODY` bytes and
:data:`MAX_DEPTH` levels deep; ``tenant`` is an id naming a folder of ``tenants/`` (when the
project has one), never a path; ``?limit=`` and ``?after=`` are whole numbers. Anything else is
refused before anything is written.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from emulator.rules.limits import MAX_ID_LENGTH, encode_json, is_valid_id
from emulator.error_codes import Code, http_status
from emulator.errors import DynwfError
from emulator.host import ProjectHost
from emulator.ops import InstanceOps, envelope_of, tenant_of
from emulator.runtime.dynamic_workflows import wrap_params

API = "/__dynwf/api"
TOKEN_FILE = "admin-token"
TOKEN_HEADER = "x-dynwf-token"
MAX_BODY = 2 * 1024 * 1024
#: How much of a body over :data:`MAX_BODY` is read (and dropped) before it is refused.
MAX_DRAIN = 32 * 1024 * 1024
#: How deep a request body's JSON may nest (a body is an object, so its values get one less).
MAX_DEPTH = 100
#: The largest whole number a query parameter may hold (SQLite's INTEGER).
MAX_QUERY_NUMBER = 2**63 - 1
#: What ``?limit=`` is cut down to.
MAX_LIST = 10_000
CREATE_FIELDS = ("tenant", "params", "id", "workflow", "metadata")
EVENT_FIELDS = ("type", "payload")
PLAYGROUND_FIELDS = ("code", "params")
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,19}")
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})



def ensure_token(state_dir: Path) -> str:
    """A new token for this server session, readable only by this user."""
    state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(24)
    path = state_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token)
    os.chmod(path, 0o600)
    return token


def read_token(state_dir: Path) -> str | None:
    try:
        return (state_dir / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


class AdminError(DynwfError):
    """A request the admin API refuses: a field, a value, a body."""

    code = Code.ADMIN_INVALID


class ForbiddenError(AdminError):
    """A request to ``what`` (the admin API, the dashboard) not addressed to this machine."""

    code = Code.ADMIN_FORBIDDEN

    def __init__(self, *, what: str) -> None:
        super().__init__(f"{what} answers only requests addressed to this machine's loopback")


class TokenError(AdminError):
    """A state-changing request without the session's token."""

    code = Code.ADMIN_TOKEN

    def __init__(self) -> None:
        super().__init__(f"missing or wrong {TOKEN_HEADER} header",
                         hint="read it from the state directory's admin-token file")


class TooLargeError(AdminError):
    """``what`` is over its limit of ``limit`` bytes."""

    code = Code.ADMIN_TOO_LARGE

    def __init__(self, *, what: str, limit: int) -> None:
        super().__init__(f"{what} is over the {limit:,} byte limit")


class InvalidTenantError(AdminError):
    """A ``tenant`` that is not an id (so never a path)."""

    code = Code.TENANT_INVALID

    def __init__(self, *, tenant: Any) -> None:
        super().__init__(f"'tenant' must be a tenant id: 1-{MAX_ID_LENGTH} characters matching "
                         f"^[a-zA-Z0-9_][a-zA-Z0-9-_]*$, not {shown(tenant)}")


class UnknownTenantError(AdminError):
    """A tenant with no folder in ``tenants/``; the hint names the ``known`` ones."""

    code = Code.TENANT_NOT_FOUND

    def __init__(self, *, tenant: str, known: list[str]) -> None:
        self.tenant = tenant
        super().__init__(f"no tenant '{tenant}': tenants/{tenant}/ does not exist",
                         hint="the tenants are " + ", ".join(known) if known
                         else "add the tenant's folder to tenants/")


def error_response(exc: DynwfError, status: int | None = None) -> JSONResponse:
    """The answer for ``exc``: its code, message and hint, with its code's status."""
    return JSONResponse({"error": exc.to_dict()}, status_code=status or http_status(exc.code))


def shown(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters for an error message."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


# ---- reading a request ------------------------------------------------------------------------

async def read_body(request: Request) -> bytes:
    """The request's body; over :data:`MAX_BODY`, refused (``admin.too_large``) without being
    held. A body up to :data:`MAX_DRAIN` is read to its end first (and dropped), since a client
    that is still sending may never read an answer given before it is done; a bigger one, by
    its ``Content-Length`` or as it arrives, is refused at once. A client that hangs up before
    the end of its body gets an ``admin.invalid`` error (which it will not read), not a
    traceback in the server's log."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_DRAIN:
        raise _too_large(f"request body of {int(declared):,} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size <= MAX_BODY:
                chunks.append(chunk)
            elif size > MAX_DRAIN:
                break
    except ClientDisconnect:
        raise AdminError(f"the client hung up after {size:,} bytes of the body") from None
    if size > MAX_BODY:
        raise _too_large("request body" if size > MAX_DRAIN else f"request body of {size:,} bytes")
    return b"".join(chunks)


def _too_large(what: str) -> DynwfError:
    return TooLargeError(what=what, limit=MAX_BODY)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object of ``pairs``; a key given twice is refused (which one wins is anyone's guess)."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"the key {shown(key, 40)} is given twice in one object")
        seen.add(key)
    return dict(pairs)


def parse_object(raw: bytes, fields: tuple[str, ...]) -> dict[str, Any]:
    """``raw`` as a JSON object whose keys are among ``fields`` (``{}`` for an empty body); its
    values plain JSON: UTF-8, no NaN or Infinity, no key given twice, nested at most
    :data:`MAX_DEPTH` deep, text that is valid Unicode."""
    if not raw:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant,
                          object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:   # not UTF-8, JSONDecodeError, a key twice, a number too long
        raise AdminError(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AdminError("the body must be a JSON object",
                         hint="send {" + ", ".join(f'"{name}": ...' for name in fields) + "}")
    check_plain(data)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise AdminError(f"unknown field{'s' * (len(unknown) > 1)} in the body: "
                         + ", ".join(shown(name, 40) for name in unknown),
                         hint="the fields are " + ", ".join(fields))
    return data


def check_plain(value: Any) -> None:
    """Refuse JSON nested deeper than :data:`MAX_DEPTH`, or text with a lone surrogate (which
    ``json`` reads from ``"\\ud800"`` but no UTF-8 store or response can hold)."""
    pending = [(value, 1)]                  # (a value, its depth: the body itself is 1)
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, (dict, list)) and depth > MAX_DEPTH:
            raise _too_deep()
        elif isinstance(item, dict):
            for key, inner in item.items():
                _check_text(key)
                pending.append((inner, depth + 1))
        elif isinstance(item, list):
            pending.extend((inner, depth + 1) for inner in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AdminError(f"the body's text holds {shown(text[exc.start:exc.end])}, a lone "
                         "surrogate, which is not Unicode") from None


def _too_deep() -> DynwfError:
    return AdminError(f"the body nests deeper than {MAX_DEPTH} levels")


def query_number(request: Request, name: str, *, least: int) -> int | None:
    """The query parameter ``name`` as a whole number from ``least`` up (None when absent)."""
    text = request.query_params.get(name)
    if not text:
        return None
    number = int(text) if _WHOLE_NUMBER.fullmatch(text) else None
    if number is None or not least <= number <= MAX_QUERY_NUMBER:
        raise AdminError(f"{name} must be a whole number from {least} to {MAX_QUERY_NUMBER}, "
                         f"not {shown(text, 40)}")
    return number


def check_tenant(tenants_dir: Path, tenant: Any) -> str:
    """``tenant`` when it names one of the project's tenants: an id (so never a path), and a
    folder of ``tenants/`` when the project keeps its tenants there."""
    if not is_valid_id(tenant):
        raise InvalidTenantError(tenant=tenant)
    if tenants_dir.is_dir() and not (tenants_dir / tenant).is_dir():
        known = sorted(path.name for path in tenants_dir.iterdir()
                       if path.is_dir() and is_valid_id(path.name))
        raise UnknownTenantError(tenant=tenant, known=known)
    return tenant


def create_metadata(tenants_dir: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The dispatcher metadata a create body names: ``{"tenantId": tenant}``, or its
    ``metadata`` object (whose ``tenantId``, when it has one, must be a tenant too)."""
    tenant, metadata = data.get("tenant"), data.get("metadata")
    if metadata is None:
        if tenant is None:
            raise AdminError("give 'tenant' (or 'metadata', an object)")
        return {"tenantId": check_tenant(tenants_dir, tenant)}
    if not isinstance(metadata, dict) or not metadata:
        raise AdminError("'metadata' must be a non-empty object")
    if "tenantId" in metadata:
        check_tenant(tenants_dir, metadata["tenantId"])
    if tenant is not None and metadata.get("tenantId") != tenant:
        raise AdminError("'tenant' and the tenantId of 'metadata' differ",
                         hint="give one of them")
    return metadata


def is_local(value: str | None) -> bool:
    """Whether a Host header or an Origin URL names this machine's loopback."""
    if not value:
        return False
    try:
        host = urlsplit(value if "//" in value else "//" + value).hostname
    except ValueError:          # "[::1", "http://[x]": not a host at all
        return False
    return host is not None and (host in LOCAL_HOSTS or host.startswith("127."))


def has_token(request: Request, token: str) -> bool:
    """Whether the request carries ``token`` (compared as bytes: a header may hold any byte,
    and ``compare_digest`` refuses non-ASCII text)."""
    given = request.headers.get(TOKEN_HEADER, "")
    return secrets.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def admin_routes(host: ProjectHost, token: str) -> list[Route]:
    tenants_dir = host.config.root / "tenants"
    ops = InstanceOps(host.engine.store, control=host.engine.control, tenants_dir=tenants_dir)

    def guarded(handler: Callable[..., Any], *, changes: bool):
        async def endpoint(request: Request) -> Response:
            try:
                if not is_local(request.headers.get("host")) or (
                        "origin" in request.headers and not is_local(request.headers["origin"])):
                    raise ForbiddenError(what="the admin API")
                if changes and not has_token(request, token):
                    raise TokenError()
                return await handler(request)
            except DynwfError as exc:
                return error_response(exc)
        return endpoint

    async def body_of(request: Request, fields: tuple[str, ...]) -> dict[str, Any]:
        return parse_object(await read_body(request), fields)

    def param(request: Request, name: str) -> str | None:
        return request.query_params.get(name) or None

    async def list_instances(request: Request) -> Response:
        limit = query_number(request, "limit", least=1) or 100
        return JSONResponse(ops.list_instances(tenant=param(request, "tenant"),
                                               status=param(request, "status"),
                                               workflow=param(request, "workflow"),
                                               limit=min(limit, MAX_LIST)))

    async def create(request: Request) -> Response:
        data = await body_of(request, CREATE_FIELDS)
        metadata = create_metadata(tenants_dir, data)
        options: dict[str, Any] = {"params": data.get("params", {})}
        if data.get("id") is not None:
            options["id"] = data["id"]
        workflow = data.get("workflow")
        if workflow is not None and not (isinstance(workflow, str) and workflow):
            raise AdminError("'workflow' must be the name of a workflow of the config, "
                             f"not {shown(workflow)}")
        instance_id = await host.create_as_tenant(metadata, options, workflow=workflow)
        return JSONResponse(ops.describe(instance_id), status_code=201)

    async def describe(request: Request) -> Response:
        return JSONResponse(ops.describe(request.path_params["id"], tenant=param(request, "tenant")))

    def lifecycle(action: str):
        async def act(request: Request) -> Response:
            method = getattr(ops, action)
            return JSONResponse(method(request.path_params["id"], tenant=param(request, "tenant")))
        return act

    async def send_event(request: Request) -> Response:
        data = await body_of(request, EVENT_FIELDS)
        if not isinstance(data.get("type"), str):
            raise AdminError("give 'type', the event type, as a string")
        return JSONResponse(ops.send_event(request.path_params["id"], data["type"],
                                           data.get("payload"), tenant=param(request, "tenant")))

    async def logs(request: Request) -> Response:
        after_seq = query_number(request, "after", least=0)
        return JSONResponse(ops.logs(request.path_params["id"], tenant=param(request, "tenant"),
                                     after_seq=after_seq))

    async def events(request: Request) -> Response:
        only = param(request, "instance")
        queue, unsubscribe = host.engine.progress.queue()

        async def stream():
            try:
                yield ": connected\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), 15)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if only is None or event.instance_id == only:
                        yield f"event: progress\ndata: {json.dumps(event.to_dict(), default=str)}\n\n"
            finally:
                unsubscribe()
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})

    async def outline(request: Request) -> Response:
        from emulator.server.dashboard import (PLAYGROUND_WORKFLOW, SCRATCH_PREFIX, playground_source,
                                               source_outline)
        row = ops.resolve(request.path_params["id"], param(request, "tenant"))
        metadata, _params = envelope_of(row)
        tenant = tenant_of(metadata)
        source, file = None, None
        if row.workflow == PLAYGROUND_WORKFLOW:
            source = playground_source(host, tenant)
            file = f"<state dir>/playground/{str(tenant).removeprefix(SCRATCH_PREFIX)}.py"
        elif isinstance(tenant, str) and is_valid_id(tenant):   # a valid id is never a path
            index = host.config.root / "tenants" / tenant / "index.py"
            if index.is_file():
                source, file = index.read_text(encoding="utf-8"), f"tenants/{tenant}/index.py"
        if source is None:
            return JSONResponse({"id": row.id, "tenant": tenant, "file": None, "steps": []})
        return JSONResponse({"id": row.id, "tenant": tenant, "file": file, "source": source,
                             **source_outline(source)})

    async def playground_sample(request: Request) -> Response:
        from emulator.server.dashboard import SAMPLE_PARAMS, sample_code
        return JSONResponse({"code": sample_code(), "params": SAMPLE_PARAMS})

    async def playground(request: Request) -> Response:
        from emulator.server.dashboard import (MAX_CODE_BYTES, SCRATCH_PREFIX, code_hash,
                                               create_playground_instance, lint_playground,
                                               save_playground)
        data = await body_of(request, PLAYGROUND_FIELDS)
        code = data.get("code")
        if not isinstance(code, str) or not code.strip():
            raise AdminError("give 'code', the tenant's index.py, as a string")
        if len(code.encode()) > MAX_CODE_BYTES:
            raise TooLargeError(what="the code", limit=MAX_CODE_BYTES)
        params = data.get("params", {})
        diagnostics = lint_playground(code)
        found = [d.to_dict() for d in diagnostics]
        errors = [d for d in diagnostics if d.severity == "error"]
        if errors:
            first = errors[0]
            failed = Code.PLAYGROUND_CHECK_FAILED
            return JSONResponse({"error": {
                "code": str(failed),
                "message": f"dynwf check found {len(errors)} error{'s' * (len(errors) != 1)}; "
                           f"the first: line {first.line}: {first.message}",
                "hint": first.hint}, "diagnostics": found}, status_code=failed.http_status)
        # refused params must not leave scratch code behind: check them as create() will
        encode_json(wrap_params(params, {"tenantId": SCRATCH_PREFIX + code_hash(code)}),
                    what="params")
        tenant = save_playground(host, code)
        instance_id = await create_playground_instance(host, tenant, params)
        return JSONResponse({**ops.describe(instance_id), "diagnostics": found}, status_code=201)

    routes = [
        Route(f"{API}/instances/{{id}}/outline", guarded(outline, changes=False), methods=["GET"]),
        Route(f"{API}/playground/sample", guarded(playground_sample, changes=False),
              methods=["GET"]),
        Route(f"{API}/playground", guarded(playground, changes=True), methods=["POST"]),
        Route(f"{API}/instances", guarded(list_instances, changes=False), methods=["GET"]),
        Route(f"{API}/instances", guarded(create, changes=True), methods=["POST"]),
        Route(f"{API}/instances/{{id}}", guarded(describe, changes=False), methods=["GET"]),
        Route(f"{API}/instances/{{id}}/events", guarded(send_event, changes=True), methods=["POST"]),
        Route(f"{API}/instances/{{id}}/logs", guarded(logs, changes=False), methods=["GET"]),
        Route(f"{API}/events", guarded(events, changes=False), methods=["GET"]),
    ]
    for action in ("pause", "resume", "terminate", "restart", "wake"):
        routes.append(Route(f"{API}/instances/{{id}}/{action}", guarded(lifecycle(action), changes=True),
                            methods=["POST"]))
    return routes

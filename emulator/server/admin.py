"""The admin API of ``dynwf dev``, under ``/__dynwf/api/``: the operations of ``emulator.ops``
over HTTP, for the dashboard and for scripts.

| method | path | does |
|---|---|---|
| GET | `/__dynwf/api/instances?tenant=&status=&workflow=&limit=` | list |
| POST | `/__dynwf/api/instances` `{"tenant", "params"?, "id"?, "workflow"?, "metadata"?}` | create as the tenant would |
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
``{"error": {"code", "message", "hint"}}`` with a status from one table (:data:`STATUS_OF`).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from emulator.engine.limits import is_valid_id
from emulator.errors import DynwfError, ValidationError
from emulator.host import ProjectHost
from emulator.ops import InstanceOps, envelope_of, tenant_of

API = "/__dynwf/api"
TOKEN_FILE = "admin-token"
TOKEN_HEADER = "x-dynwf-token"
MAX_BODY = 2 * 1024 * 1024
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

#: error code (or its last part) -> HTTP status; anything else from user input is 400
STATUS_OF = {
    "instance.not_found": 404, "state.not_found": 404,
    "instance.already_exists": 409, "instance.ambiguous": 409, "instance.cannot_terminate": 409,
    "instance.not_running": 409, "instance.finished": 409, "instance.invalid_transition": 409,
    "admin.forbidden": 403, "admin.token": 401, "admin.too_large": 413,
}


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
    code = "admin.invalid"


def _status_for(exc: DynwfError) -> int:
    if exc.code in STATUS_OF:
        return STATUS_OF[exc.code]
    return 400 if isinstance(exc, ValidationError) or exc.code.endswith(("invalid", "invalid_id",
                                                                        "invalid_type")) else 500


def error_response(exc: DynwfError, status: int | None = None) -> JSONResponse:
    return JSONResponse({"error": exc.to_dict()}, status_code=status or _status_for(exc))


def is_local(value: str | None) -> bool:
    """Whether a Host header or an Origin URL names this machine's loopback."""
    if not value:
        return False
    host = urlsplit(value).hostname if "//" in value else urlsplit("//" + value).hostname
    return host is not None and (host in LOCAL_HOSTS or host.startswith("127."))


def admin_routes(host: ProjectHost, token: str) -> list[Route]:
    ops = InstanceOps(host.engine.store, control=host.engine.control,
                      tenants_dir=host.config.root / "tenants")

    def guarded(handler: Callable[..., Any], *, changes: bool):
        async def endpoint(request: Request) -> Response:
            try:
                if not is_local(request.headers.get("host")) or (
                        "origin" in request.headers and not is_local(request.headers["origin"])):
                    raise AdminError("the admin API answers only requests addressed to this "
                                     "machine's loopback", code="admin.forbidden")
                if changes and not secrets.compare_digest(request.headers.get(TOKEN_HEADER, ""),
                                                          token):
                    raise AdminError(f"missing or wrong {TOKEN_HEADER} header",
                                     code="admin.token",
                                     hint="read it from the state directory's admin-token file")
                return await handler(request)
            except DynwfError as exc:
                return error_response(exc)
        return endpoint

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise AdminError(f"request body of {len(raw):,} bytes is over the {MAX_BODY:,} byte "
                             "limit", code="admin.too_large")
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AdminError(f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise AdminError("the body must be a JSON object")
        return data

    def param(request: Request, name: str) -> str | None:
        return request.query_params.get(name) or None

    async def list_instances(request: Request) -> Response:
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            raise AdminError("limit must be a whole number") from None
        return JSONResponse(ops.list_instances(tenant=param(request, "tenant"),
                                               status=param(request, "status"),
                                               workflow=param(request, "workflow"),
                                               limit=max(1, min(limit, 10_000))))

    async def create(request: Request) -> Response:
        data = await body_of(request)
        tenant = data.get("tenant")
        metadata = data.get("metadata", {"tenantId": tenant} if tenant else None)
        if not isinstance(metadata, dict) or not metadata:
            raise AdminError("give 'tenant' (or 'metadata', an object)")
        options: dict[str, Any] = {"params": data.get("params", {})}
        if data.get("id") is not None:
            options["id"] = data["id"]
        workflow = data.get("workflow")
        if workflow is not None and not isinstance(workflow, str):
            raise AdminError("'workflow' must be a string")
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
        data = await body_of(request)
        if not isinstance(data.get("type"), str):
            raise AdminError("give 'type', the event type, as a string")
        return JSONResponse(ops.send_event(request.path_params["id"], data["type"],
                                           data.get("payload"), tenant=param(request, "tenant")))

    async def logs(request: Request) -> Response:
        after = request.query_params.get("after")
        try:
            after_seq = int(after) if after else None
        except ValueError:
            raise AdminError("after must be a whole number") from None
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
        from emulator.server.dashboard import (MAX_CODE_BYTES, create_playground_instance,
                                               lint_playground, save_playground)
        data = await body_of(request)
        code = data.get("code")
        if not isinstance(code, str) or not code.strip():
            raise AdminError("give 'code', the tenant's index.py, as a string")
        if len(code.encode()) > MAX_CODE_BYTES:
            raise AdminError(f"the code is over the {MAX_CODE_BYTES:,} byte limit",
                             code="admin.too_large")
        params = data.get("params", {})
        diagnostics = lint_playground(code)
        found = [d.to_dict() for d in diagnostics]
        errors = [d for d in diagnostics if d.severity == "error"]
        if errors:
            first = errors[0]
            return JSONResponse({"error": {
                "code": "playground.check_failed",
                "message": f"dynwf check found {len(errors)} error{'s' * (len(errors) != 1)}; "
                           f"the first: line {first.line}: {first.message}",
                "hint": first.hint}, "diagnostics": found}, status_code=400)
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

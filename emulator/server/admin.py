"""The admin API of ``dynwf dev``, under ``/__dynwf/api/``: the operations of ``emulator.ops``
over HTTP, for the dashboard and for scripts.

| method | path | does |
|---|---|---|
| GET | `/__dynwf/api/instances?tenant=&status=&workflow=&limit=` | list |
| POST | `/__dynwf/api/instances` `{"tenant", "params"?, "id"?, "workflow"?, "metadata"?}` | create |
| GET | `/__dynwf/api/instances/{id}?tenant=` | describe |
| GET | `/__dynwf/api/tenants` | the project's tenants (folders of `tenants/`), to start one |
| GET | `/__dynwf/api/schedules` | each cron schedule with its next 3 firing times (epoch ms) |
| POST | `/__dynwf/api/instances/{id}/{pause,resume,wake}` | lifecycle |
| POST | `/__dynwf/api/instances/{id}/restart` `{"from"?: {"name", "count"?, "type"?}}` | run again |
| POST | `/__dynwf/api/instances/{id}/rerun` `{"from", "id"?, "output"?}` | a new instance from its history |
| POST | `/__dynwf/api/instances/{id}/delete` | stop and erase one instance |
| POST | `/__dynwf/api/instances/delete` `{"ids": [...]}` | delete 1-100 instances, each reported |
| POST | `/__dynwf/api/instances/{id}/terminate` `{"rollback"?: true}` | terminate (rollback first) |
| POST | `/__dynwf/api/instances/{id}/events` `{"type", "payload"?}` | send an event |
| GET | `/__dynwf/api/instances/{id}/logs?after=` | log lines |
| GET | `/__dynwf/api/events?instance=` | progress as server-sent events |
| GET | `/__dynwf/api/instances/{id}/outline?tenant=` | the steps its code declares, before they run |
| GET | `/__dynwf/api/playground/sample` | the playground's sample tenant code and params |
| POST | `/__dynwf/api/playground` `{"code", "params"?}` | check the code, then run it as a scratch tenant |

Every route answers only requests addressed to this machine's loopback, and every
state-changing one only with the session's token (:mod:`emulator.server.exposure`). Input is
read strictly and refused before anything is written (:mod:`emulator.server.input`). Errors are
``{"error": {"code", "message", "hint"}}`` with a status from one table
(:data:`emulator.server.errors.STATUS_OF`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from emulator.analysis.outline import TenantSourceError, outline_steps
from emulator.errors import DynwfError
from emulator.host import ProjectHost
from emulator.ops import InstanceOps, envelope_of, tenant_of
from emulator.rules.limits import encode_json, is_valid_id
from emulator.runtime.dynamic_workflows import wrap_params
from emulator.error_codes import Code
from emulator.server.errors import AdminError, TooLargeError, error_response
from emulator.server.exposure import dev_check
from emulator.server.input import create_metadata, project_tenants, query_number, read_object, shown
from emulator.server.playground import (MAX_CODE_BYTES, PLAYGROUND_WORKFLOW, SAMPLE_PARAMS,
                                        SCRATCH_PREFIX, code_hash, create_playground_instance,
                                        lint_playground, playground_source, sample_code,
                                        save_playground)

API = "/__dynwf/api"
#: What ``?limit=`` is cut down to.
MAX_LIST = 10_000
CREATE_FIELDS = ("tenant", "params", "id", "workflow", "metadata")
EVENT_FIELDS = ("type", "payload")
RESTART_FIELDS = ("from",)
RERUN_FIELDS = ("from", "id", "output")
DELETE_FIELDS = ("ids",)
TERMINATE_FIELDS = ("rollback",)
PLAYGROUND_FIELDS = ("code", "params")
#: Firing times the schedules route gives for each schedule.
UPCOMING_FIRINGS = 3


def source_outline(source: str) -> dict[str, Any]:
    """``{"steps": [...]}`` of the outline, or ``{"steps": [], "error": ...}`` when the source
    does not parse."""
    try:
        return {"steps": [asdict(step) for step in outline_steps(source)]}
    except TenantSourceError as exc:
        return {"steps": [], "error": {"message": exc.message, "line": exc.line,
                                       "column": exc.column}}


def admin_routes(host: ProjectHost, token: str, *,
                 check: Callable[[Request, str, bool], None] | None = None,
                 with_playground: bool = True) -> list[Route]:
    """The routes; ``check`` guards each (default: ``dynwf dev``'s, loopback and the session
    token for changes), ``with_playground`` mounts the playground's (``dynwf serve`` does not)."""
    check = check or dev_check(token)
    tenants_dir = host.config.root / "tenants"
    ops = InstanceOps(host.engine.store, control=host.engine.control, tenants_dir=tenants_dir,
                      keys_first=True)

    def guarded(handler: Callable[..., Any], *, changes: bool):
        async def endpoint(request: Request) -> Response:
            try:
                check(request, "the admin API", changes)
                return await handler(request)
            except DynwfError as exc:
                return error_response(exc)
        return endpoint

    def param(request: Request, name: str) -> str | None:
        return request.query_params.get(name) or None

    async def list_instances(request: Request) -> Response:
        limit = query_number(request, "limit", least=1) or 100
        return JSONResponse(ops.list_instances(tenant=param(request, "tenant"),
                                               status=param(request, "status"),
                                               workflow=param(request, "workflow"),
                                               limit=min(limit, MAX_LIST)))

    async def create(request: Request) -> Response:
        data = await read_object(request, CREATE_FIELDS)
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

    async def tenants(request: Request) -> Response:
        return JSONResponse({"tenants": project_tenants(tenants_dir)})

    async def schedules(request: Request) -> Response:
        """``{"now", "schedules": [{"workflow", "cron", "next": [ms, ms, ms]}]}``: firing times
        always after ``now`` (engine/scheduler.py)."""
        return JSONResponse({"now": host.engine.clock.now_ms(),
                             "schedules": host.scheduler.upcoming(UPCOMING_FIRINGS)})

    async def describe(request: Request) -> Response:
        return JSONResponse(ops.describe(request.path_params["id"], tenant=param(request, "tenant")))

    def lifecycle(action: str):
        async def act(request: Request) -> Response:
            method = getattr(ops, action)
            return JSONResponse(method(request.path_params["id"], tenant=param(request, "tenant")))
        return act

    async def restart(request: Request) -> Response:
        # an unknown instance is said before anything about the body, as for the other actions
        ops.resolve(request.path_params["id"], param(request, "tenant"))
        data = await read_object(request, RESTART_FIELDS)
        return JSONResponse(ops.restart(request.path_params["id"], tenant=param(request, "tenant"),
                                        start_from=data.get("from")))

    async def rerun(request: Request) -> Response:
        """A new instance from this one's history up to a step (``ops.rerun``)."""
        ops.resolve(request.path_params["id"], param(request, "tenant"))
        data = await read_object(request, RERUN_FIELDS)
        start = data.get("from")
        if not isinstance(start, dict):
            raise AdminError("give 'from': {\"name\", \"count\"?, \"type\"?}, the step to run "
                             "again from")
        new_id = data.get("id")
        if new_id is not None and not isinstance(new_id, str):
            raise AdminError(f"'id' must be a string, not {shown(new_id)}")
        output = json.dumps(data["output"]) if "output" in data else None
        result = ops.rerun(request.path_params["id"], start, tenant=param(request, "tenant"),
                           new_id=new_id, output=output)
        return JSONResponse(result, status_code=201)

    async def delete(request: Request) -> Response:
        return JSONResponse(ops.delete(request.path_params["id"], tenant=param(request, "tenant")))

    async def delete_many(request: Request) -> Response:
        data = await read_object(request, DELETE_FIELDS)
        if not isinstance(data.get("ids"), list):
            raise AdminError("give 'ids', a list of 1 to 100 instance ids")
        return JSONResponse(ops.delete_many(data["ids"], tenant=param(request, "tenant")))

    async def terminate(request: Request) -> Response:
        # an unknown instance is said before anything about the body, as for the other actions
        ops.resolve(request.path_params["id"], param(request, "tenant"))
        data = await read_object(request, TERMINATE_FIELDS)
        rollback = data.get("rollback", False)
        if not isinstance(rollback, bool):
            raise AdminError("give 'rollback' as true or false")
        return JSONResponse(ops.terminate(request.path_params["id"],
                                          tenant=param(request, "tenant"), rollback=rollback))

    async def send_event(request: Request) -> Response:
        data = await read_object(request, EVENT_FIELDS)
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
        return JSONResponse({"code": sample_code(), "params": SAMPLE_PARAMS})

    async def playground(request: Request) -> Response:
        data = await read_object(request, PLAYGROUND_FIELDS)
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
        Route(f"{API}/instances/delete", guarded(delete_many, changes=True), methods=["POST"]),
        Route(f"{API}/tenants", guarded(tenants, changes=False), methods=["GET"]),
        Route(f"{API}/schedules", guarded(schedules, changes=False), methods=["GET"]),
        Route(f"{API}/instances/{{id}}", guarded(describe, changes=False), methods=["GET"]),
        Route(f"{API}/instances/{{id}}/events", guarded(send_event, changes=True), methods=["POST"]),
        Route(f"{API}/instances/{{id}}/restart", guarded(restart, changes=True), methods=["POST"]),
        Route(f"{API}/instances/{{id}}/rerun", guarded(rerun, changes=True), methods=["POST"]),
        Route(f"{API}/instances/{{id}}/delete", guarded(delete, changes=True), methods=["POST"]),
        Route(f"{API}/instances/{{id}}/logs", guarded(logs, changes=False), methods=["GET"]),
        Route(f"{API}/events", guarded(events, changes=False), methods=["GET"]),
    ]
    if not with_playground:
        routes = [route for route in routes if not route.path.startswith(f"{API}/playground")]
    for action in ("pause", "resume", "wake"):
        routes.append(Route(f"{API}/instances/{{id}}/{action}", guarded(lifecycle(action), changes=True),
                            methods=["POST"]))
    routes.append(Route(f"{API}/instances/{{id}}/terminate", guarded(terminate, changes=True),
                        methods=["POST"]))
    return routes

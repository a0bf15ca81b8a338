"""Small projects the pytest plugin's tests run: written into a temporary folder per test."""

from __future__ import annotations

import textwrap
from pathlib import Path

WRANGLER = """\
{
  "name": "plugin-lab",
  "main": "src/entry.py",
  "compatibility_date": "2026-04-01",
  "workflows": [{"name": "lab", "binding": "WORKFLOWS", "class_name": "%(class_name)s"}],
  "worker_loaders": [{"binding": "LOADER"}],
}
"""

DISPATCHER = '''\
from pathlib import Path

from workers import Response, WorkerEntrypoint
from dynamic_workflows import (DynamicWorkflowBinding, create_dynamic_workflow_entrypoint,
                               wrap_workflow_binding)

TENANTS = Path(__file__).resolve().parent.parent / "tenants"


def load_tenant(env, tenant_id):
    async def code():
        folder = TENANTS / tenant_id
        return {"compatibility_date": "2026-04-01", "main_module": "index.py",
                "modules": {p.name: p.read_text() for p in folder.glob("*.py")},
                "env": {"WORKFLOWS": wrap_workflow_binding({"tenantId": tenant_id})},
                "global_outbound": None}
    return env.LOADER.get(tenant_id, code)


DynamicWorkflow = create_dynamic_workflow_entrypoint(
    lambda ctx: load_tenant(ctx.env, ctx.metadata["tenantId"]).get_entrypoint("TenantWorkflow"))


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        tenant_id = request.headers.get("x-tenant-id")
        return await load_tenant(self.env, tenant_id).get_entrypoint().fetch(request)
'''

# Retries an hour apart, a one-hour sleep, a step name used twice, and a body that refuses to
# run when the params say so (a mocked step must never reach it).
STEPS_TENANT = '''\
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint
from workers.workflows import NonRetryableError


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        params = event["payload"]

        @step.do("fetch", config={"retries": {"limit": 3, "delay": "1 hour",
                                              "backoff": "constant"}, "timeout": "30 seconds"})
        async def fetch(ctx):
            if params.get("explode"):
                raise NonRetryableError("the real body ran")
            if ctx["attempt"] <= params.get("fail_attempts", 0):
                raise ValueError(f"attempt {ctx['attempt']} failed")
            return {"source": "real", "attempt": ctx["attempt"]}

        fetched = await fetch()
        await step.sleep("nap", "1 hour")
        counts = []
        for i in (1, 2):
            @step.do("count")
            async def count():
                return i * 10
            counts.append(await count())
        return {"fetched": fetched, "counts": counts}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        instance = await self.env.WORKFLOWS.create({"params": await request.json()})
        return Response.json({"id": instance.id})
'''

# Waits a day for approval (a timeout is caught), then cools down for ten minutes.
EVENTS_TENANT = '''\
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        try:
            approval = await step.wait_for_event("approval", "approved", timeout="1 day")
            decision = approval["payload"]
        except Exception as exc:
            decision = {"timed_out": type(exc).__name__}
        await step.sleep("cool down", "10 minutes")

        @step.do("finish")
        async def finish():
            return "done"

        return {"decision": decision, "finished": await finish()}
'''

# A step whose first attempt kills its isolate: the engine fails that attempt and retries.
CRASHY_TENANT = '''\
import os

from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("risky", config={"retries": {"limit": 2, "delay": "1 hour",
                                              "backoff": "constant"}})
        async def risky(ctx):
            if ctx["attempt"] == 1:
                os._exit(3)
            return ctx["attempt"]

        return await risky()
'''

# The same steps run by the engine in the host process: no dispatcher, no isolate.
IN_PROCESS_ENTRY = '''\
from workers import WorkflowEntrypoint
from workers.workflows import NonRetryableError


class Plain(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("charge", config={"retries": {"limit": 2, "delay": "1 minute",
                                               "backoff": "constant"}})
        async def charge():
            if event["payload"].get("explode"):
                raise NonRetryableError("the real body ran")
            return {"charged": True}

        charged = await charge()
        await step.sleep("settle", "1 day")
        return charged
'''


def write_lab(root: Path, tenants: dict[str, str] | None = None) -> Path:
    """A dynamic project: the dispatcher above and one folder per tenant."""
    tenants = {"steps": STEPS_TENANT, "events": EVENTS_TENANT} if tenants is None else tenants
    _write(root / "wrangler.jsonc", WRANGLER % {"class_name": "DynamicWorkflow"})
    _write(root / "src" / "entry.py", DISPATCHER)
    for tenant, source in tenants.items():
        _write(root / "tenants" / tenant / "index.py", source)
    return root


def write_in_process(root: Path) -> Path:
    """A project whose workflow class runs in the host (the engine's own step client)."""
    _write(root / "wrangler.jsonc", WRANGLER % {"class_name": "Plain"})
    _write(root / "src" / "entry.py", IN_PROCESS_ENTRY)
    return root


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")

"""The SaaS platform's dispatcher: every customer (tenant) writes its own automation.

A request names its tenant in the ``x-tenant-id`` header and is handed to that tenant's own
``Default.fetch``, which starts its automation. The tenant's modules are the files of
``tenants/<tenant id>/``; each tenant runs in an isolate of its own with no network access, and
its ``WORKFLOWS`` binding is wrapped with its tenant id, so its instances run (and resume, after
a sleep of a day or a week-long wait for an approval) in its own code, and it cannot see any
other tenant's instances.
"""

import re
from pathlib import Path

from workers import Response, WorkerEntrypoint
# DynamicWorkflowBinding is imported to be exported: wrapped bindings call back through it.
from dynamic_workflows import (DynamicWorkflowBinding, create_dynamic_workflow_entrypoint,
                               wrap_workflow_binding)

TENANTS = Path(__file__).resolve().parent.parent / "tenants"
# The platform's id rule; it also keeps a header value from naming a folder outside TENANTS.
TENANT_ID = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9-_]{0,99}$")


def read_tenant_modules(tenant_id):
    """The tenant's module set, keyed by path inside its folder: {"index.py": "...", ...}."""
    folder = TENANTS / tenant_id
    return {path.relative_to(folder).as_posix(): path.read_text(encoding="utf-8")
            for path in sorted(folder.rglob("*.py")) if "__pycache__" not in path.parts}


def is_tenant(tenant_id):
    return bool(tenant_id and TENANT_ID.fullmatch(tenant_id)) \
        and (TENANTS / tenant_id / "index.py").is_file()


def load_tenant(env, tenant_id):
    if not is_tenant(tenant_id):
        known = ", ".join(sorted(p.name for p in TENANTS.iterdir() if is_tenant(p.name)))
        raise LookupError(f"no tenant {tenant_id!r}: tenants/{tenant_id}/index.py does not exist "
                          f"(tenants: {known})")

    async def code():
        return {"compatibility_date": "2026-04-01", "main_module": "index.py",
                "modules": read_tenant_modules(tenant_id),
                "env": {"WORKFLOWS": wrap_workflow_binding({"tenantId": tenant_id})},
                "global_outbound": None}             # tenant code gets no network access
    return env.LOADER.get(tenant_id, code)          # returns a stub at once; loads lazily


# The class_name in wrangler.jsonc: the engine runs every instance through it, and it forwards
# run() to the TenantWorkflow of the tenant whose id the instance was created with.
DynamicWorkflow = create_dynamic_workflow_entrypoint(
    lambda ctx: load_tenant(ctx.env, ctx.metadata["tenantId"]).get_entrypoint("TenantWorkflow"))


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        tenant_id = request.headers.get("x-tenant-id")
        if not is_tenant(tenant_id):
            return Response.json({"error": "unknown tenant; send an x-tenant-id header naming "
                                           "a folder of tenants/"}, status=404)
        return await load_tenant(self.env, tenant_id).get_entrypoint().fetch(request)

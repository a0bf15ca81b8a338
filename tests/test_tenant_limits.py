"""The platform's limits as a tenant meets them from its own code in its isolate, through its
wrapped binding (docs/semantics.md §8.2, §5):

- instance ids of 1-100 characters: the tenant scope is kept beside the id, never charged against
  it; each path a tenant's id takes (create, create_batch, get, send_event, status; the admin API
  the dashboard reads);
- an event payload's 1 MiB is the payload's own (no wrapper charged to the sender);
- an oversized step result fails with the platform's words, no internal code prefix."""

from __future__ import annotations

import pytest

from plugin_projects import write_lab

LONGEST = "a" * 100
OTHER = "b" * 99 + "z"

# A tenant's fetch handler that drives its own instances through its wrapped binding.
TENANT = '''\
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        approval = await step.wait_for_event("approval", "approved", timeout="1 day")
        return approval["payload"]


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        body = await request.json()
        try:
            if "event_bytes" in body:
                return await self.send_big_event(body)
            return await self.ids(body["ids"])
        except Exception as exc:
            return Response.json({"error": type(exc).__name__, "message": str(exc)}, status=400)

    async def send_big_event(self, body):
        instance = await self.env.WORKFLOWS.get(body["id"])
        await instance.send_event({"type": "approved", "payload": "x" * body["event_bytes"]})
        return Response.json({"sent": body["event_bytes"]})

    async def ids(self, ids):
        created = await self.env.WORKFLOWS.create({"id": ids[0]})
        batch = await self.env.WORKFLOWS.create_batch([{"id": i} for i in ids[1:]])
        got = await self.env.WORKFLOWS.get(ids[0])
        await got.send_event({"type": "approved", "payload": {"ok": ids[0]}})
        return Response.json({"created": created.id, "batch": [i.id for i in batch],
                              "got": got.id})
'''


@pytest.fixture
def dynwf_project(tmp_path):
    return write_lab(tmp_path / "lab", {"ids": TENANT, "big": BIG_RESULT})


async def test_a_tenant_uses_100_character_ids_from_its_isolate(dynwf):
    answer = await dynwf.fetch("/", method="POST", headers={"x-tenant-id": "ids"},
                               json={"ids": [LONGEST, OTHER]})
    assert answer.status == 200, await answer.text()
    assert await answer.json() == {"created": LONGEST, "batch": [OTHER], "got": LONGEST}
    first = dynwf.introspect_instance("ids", LONGEST)
    await first.wait_for_status("complete")
    assert await first.get_output() == {"ok": LONGEST}
    second = dynwf.introspect_instance("ids", OTHER)
    await second.wait_for_status("waiting")
    tenant = dynwf.tenant("ids")
    assert (await (await tenant.binding.get(OTHER)).status())["status"] == "waiting"


async def test_a_101_character_id_is_refused_in_the_tenants_code(dynwf):
    answer = await dynwf.fetch("/", method="POST", headers={"x-tenant-id": "ids"},
                               json={"ids": ["c" * 101]})
    refused = await answer.json()
    assert answer.status == 400 and refused["error"] == "InvalidIdError", refused
    assert "1-100 characters" in refused["message"], refused
    assert dynwf.introspect_instance("ids", "c" * 100).steps() == []


async def test_an_event_payload_of_exactly_1_mib_is_sent_from_the_tenants_code(dynwf):
    """docs/semantics.md §5: the limit is the payload's own, through the wrapped binding too."""
    await dynwf.tenant("ids").binding.create({"id": "big-event"})
    instance = dynwf.introspect_instance("ids", "big-event")
    await instance.wait_for_status("waiting")
    exact = 1024 * 1024 - 2            # with its two quotes: exactly 1 MiB of JSON
    over = await dynwf.fetch("/", method="POST", headers={"x-tenant-id": "ids"},
                             json={"id": "big-event", "event_bytes": exact + 1})
    refused = await over.json()
    assert over.status == 400 and refused["error"] == "PayloadTooLargeError", refused
    sent = await dynwf.fetch("/", method="POST", headers={"x-tenant-id": "ids"},
                             json={"id": "big-event", "event_bytes": exact})
    assert sent.status == 200, await sent.text()
    await instance.wait_for_status("complete")
    assert len(await instance.get_output()) == exact


BIG_RESULT = '''\
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("big", config={"retries": {"limit": 0, "delay": 0}})
        async def big():
            return "x" * (1024 * 1024 + 1)
        try:
            await big()
        except Exception as exc:
            return {"name": getattr(exc, "name", None), "message": str(exc)}
'''


async def test_an_oversized_step_result_in_an_isolate_reads_as_the_platforms_text(dynwf):
    """docs/semantics.md §2.11: the tenant sees the platform's words, no internal code prefix."""
    await dynwf.tenant("big").binding.create({"id": "big-1"})
    instance = dynwf.introspect_instance("big", "big-1")
    await instance.wait_for_status("complete")
    assert await instance.get_output() == {
        "name": "WorkflowInternalError",
        "message": "Step big-1 output is too large. Maximum allowed size is 1MiB."}


def test_the_admin_api_takes_100_character_ids(tmp_path, servers):
    from dev_harness import copy_hello, start
    from test_admin_api import API, call, token_of
    project = copy_hello(tmp_path)
    dev = start(servers, project)
    token = token_of(project)
    status, created = call(dev, "POST", f"{API}/instances",
                           {"tenant": "globex", "id": LONGEST, "params": {"email": "a@b.co"}},
                           token=token)
    assert status == 201, created
    assert created["tenant_instance_id"] == LONGEST
    dev.wait_for_record(kind="step.waiting", step__name="confirm email", timeout=30)
    status, listed = call(dev, "GET", f"{API}/instances?tenant=globex")
    assert [row["tenant_instance_id"] for row in listed] == [LONGEST]
    status, sent = call(dev, "POST", f"{API}/instances/{LONGEST}/events?tenant=globex",
                        {"type": "email-confirmed", "payload": {"ok": True}}, token=token)
    assert status == 200, sent
    dev.wait_for_record(kind="instance.status", status="complete", timeout=30)
    status, described = call(dev, "GET", f"{API}/instances/{LONGEST}?tenant=globex")
    assert (status, described["status"], described["tenant_instance_id"]) == \
        (200, "complete", LONGEST)
    status, body = call(dev, "POST", f"{API}/instances", {"tenant": "globex", "id": "c" * 101},
                        token=token)
    assert status == 400 and body["error"]["code"] == "instance.invalid_id"

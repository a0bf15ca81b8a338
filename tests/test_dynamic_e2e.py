"""The hello project end to end, with real isolates: a dispatcher loads two tenants' different
workflow code at runtime; instances survive a restart of the whole host mid-sleep and finish in
the right tenant's code (docs/semantics.md §6, §8; docs/architecture.md §1)."""

import asyncio
import json
from pathlib import Path

import pytest

from emulator.config import load_config
from emulator.engine import VirtualClock
from emulator.host import HostOptions, ProjectHost

HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def started(tmp_path, clock):
    from emulator.runtime.workers import Request
    host = ProjectHost(load_config(HELLO / "wrangler.jsonc"),
                       HostOptions(state_dir=tmp_path, clock=clock))
    await host.start()
    return host, Request


async def post(host, Request, tenant, body):
    response = await host.fetch(Request("http://localhost/", method="POST",
                                        headers={"x-tenant-id": tenant}, body=json.dumps(body)))
    assert response.status == 200, await response.text()
    return await response.json()


def real_id(tenant, tenant_visible_id):
    from dynamic_workflows import scoped_instance_id
    return scoped_instance_id({"tenantId": tenant}, tenant_visible_id)


def test_two_tenants_run_different_code_and_survive_a_restart_mid_sleep(tmp_path):
    clock = VirtualClock(flowing=False)

    async def first_life():
        host, Request = await started(tmp_path, clock)
        try:
            globex = await post(host, Request, "globex", {"email": "ann@globex.com"})
            acme = await post(host, Request, "acme", {"items": [{"price": 2.5, "quantity": 4}]})
            await host.engine.drain(jump=False)
            statuses = {t: (await (await host.engine.binding("tenant-workflows").get(real_id(t, i)))
                            .status())["status"] for t, i in (("globex", globex["id"]), ("acme", acme["id"]))}
            steps = [s.name for s in host.engine.store.list_steps(real_id("globex", globex["id"]))]
            return globex["id"], acme["id"], statuses, steps, host.pool.live_count
        finally:
            await host.close()

    globex_id, acme_id, statuses, steps, live = run(first_life())
    assert statuses == {"globex": "waiting", "acme": "waiting"}  # asleep / waiting for payment
    assert steps == ["open account", "grace period"]
    assert live == 2

    async def second_life():
        host, Request = await started(tmp_path, clock)
        try:
            assert host.pool.live_count == 0  # every isolate died with the first host
            raw = host.engine.binding("tenant-workflows")
            await (await raw.get(real_id("acme", acme_id))).send_event(
                {"type": "payment-received", "payload": {"amount": 10}})
            await host.engine.drain()          # jumps over both sleeps; globex now waits for email
            await post(host, Request, "globex", {"confirm": globex_id})
            await host.engine.drain()
            return ({t: await (await raw.get(real_id(t, i))).status()
                     for t, i in (("globex", globex_id), ("acme", acme_id))}, host.pool.loads)
        finally:
            await host.close()

    results, loads = run(second_life())
    assert results["globex"] == {"status": "complete", "error": None, "output": {
        "account": "ann", "plan": "free", "active": True, "confirmed": True}}
    assert results["acme"]["status"] == "complete"
    assert results["acme"]["output"]["total"] == 10.0
    assert results["acme"]["output"]["paid"] == {"amount": 10}
    assert loads == 2  # each tenant's code was loaded again through the loader callback


def test_tenants_cannot_reach_each_others_instances(tmp_path):
    clock = VirtualClock(flowing=False)

    async def scenario():
        host, Request = await started(tmp_path, clock)
        try:
            mine = await post(host, Request, "globex", {"email": "a@globex.com"})
            await host.engine.drain(jump=False)
            # an unknown id, through tenant code in its isolate: the error crosses back
            with pytest.raises(Exception) as missing:
                await host.fetch(Request(
                    "http://localhost/", method="POST", headers={"x-tenant-id": "globex"},
                    body=json.dumps({"confirm": "does-not-exist"})))
            from dynamic_workflows import wrap_workflow_binding, dispatcher_scope
            with dispatcher_scope(host.module, host.env):
                acme_binding = wrap_workflow_binding({"tenantId": "acme"})
                globex_binding = wrap_workflow_binding({"tenantId": "globex"})
            with pytest.raises(Exception) as info:
                await acme_binding.get(mine["id"])
            own = await (await globex_binding.get(mine["id"])).status()
            same_id_a = await acme_binding.create({"id": "order-1"})
            same_id_b = await globex_binding.create({"id": "order-1"})
            return info.value, own, missing.value, same_id_a.id, same_id_b.id
        finally:
            await host.close()

    error, own, missing, a_id, b_id = run(scenario())
    assert getattr(error, "code", None) == "instance.not_found"
    assert own["status"] == "waiting"
    assert getattr(missing, "code", None) == "instance.not_found"
    assert "does-not-exist" in str(missing)
    assert a_id == b_id == "order-1"  # the same tenant-visible id, no collision

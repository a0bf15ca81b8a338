"""Hostile tenant code, in its isolate, trying to reach what is not its own: each attempt is
refused with a clear error and changes nothing (issue: reliability, hostile tenant code)."""

import asyncio
import json

from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator.engine import VirtualClock
from emulator.host import HostOptions, ProjectHost
from emulator.project import open_project
from emulator.runtime.workers import Request

HOSTILE = '''
import json
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        return event["payload"]


async def attempt(name, action):
    try:
        value = action()
        if hasattr(value, "__await__"):
            value = await value
        return [name, "allowed", repr(value)[:200]]
    except BaseException as exc:
        return [name, type(exc).__name__, str(exc)[:300]]


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        victim = (await request.json())["victim"]
        wf = self.env.WORKFLOWS
        results = [
            await attempt("read database", lambda: open(".dynwf/state.sqlite", "rb").read(10)),
            await attempt("read other tenant", lambda: open("tenants/victim/index.py").read()),
            await attempt("import emulator", lambda: __import__("emulator.engine.store")),
            await attempt("import other tenant", lambda: __import__("victim_module")),
            await attempt("socket", lambda: __import__("socket").create_connection(("127.0.0.1", 9), 1)),
            await attempt("get victim", lambda: wf.get(victim)),
            await attempt("private method", lambda: wf._dispatcher_binding_impl()),
            await attempt("forge envelope", lambda: wf.create(
                {"id": "forged", "params": {"__dispatcherMetadata": {"tenantId": "victim"},
                                            "params": {"stolen": True}}})),
            await attempt("huge event", lambda: wf.create(
                {"id": "big", "params": {"blob": "x" * (10 * 1024 * 1024)}})),
        ]
        return Response.json(results)
'''

VICTIM = '''
from workers import WorkflowEntrypoint

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        return await step.wait_for_event("wait", "go", timeout="1 hour")
'''


def test_hostile_code_is_refused_and_changes_nothing(tmp_path):
    root = tmp_path / "p"
    assert CliRunner().invoke(app, ["init", str(root)]).exit_code == 0
    for name, source in (("hostile", HOSTILE), ("victim", VICTIM)):
        (root / "tenants" / name).mkdir()
        (root / "tenants" / name / "index.py").write_text(source)

    async def scenario():
        host = ProjectHost(open_project(root / "wrangler.jsonc").config,
                           HostOptions(state_dir=root / ".dynwf", clock=VirtualClock()))
        await host.start()
        try:
            victim = await host.create_as_tenant({"tenantId": "victim"}, {"id": "v-1"})
            await host.engine.drain(jump=False)
            before = [(r.id, r.status) for r in host.engine.store.list_instances()]
            response = await host.fetch(Request(
                "http://localhost/", method="POST", headers={"x-tenant-id": "hostile"},
                body=json.dumps({"victim": "v-1"})))
            results = await response.json()
            await host.engine.drain(jump=False)
            after = {r.id: r for r in host.engine.store.list_instances()}
            return victim, before, results, after
        finally:
            await host.close()

    victim, before, results, after = asyncio.run(scenario())
    outcome = {name: (kind, message) for name, kind, message in results}
    for name in ("read database", "read other tenant"):
        assert outcome[name][0] == "PermissionError", outcome[name]
    assert outcome["import emulator"][0] == "ModuleNotFoundError"
    assert outcome["import other tenant"][0] == "ModuleNotFoundError"
    assert "not permitted to access the internet" in outcome["socket"][1]
    assert "does not exist" in outcome["get victim"][1] and "v-1" in outcome["get victim"][1]
    assert outcome["private method"][0] != "allowed"
    assert "too_large" in outcome["huge event"][1] or "over the limit" in outcome["huge event"][1]
    # the victim is untouched; the "forged" instance belongs to the hostile tenant, not the victim
    assert after[victim].status == "waiting"
    forged = [r for r in after.values() if r.id.endswith("-forged")]
    assert len(forged) == 1
    envelope = json.loads(forged[0].params)
    assert envelope["__dispatcherMetadata"] == {"tenantId": "hostile"}
    assert not any(r.id.endswith("-big") for r in after.values())
    assert len(after) == len(before) + 1

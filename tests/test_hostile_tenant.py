"""Hostile tenant code, in its isolate, trying to reach what is not its own: each attempt is
refused with a clear error and changes nothing (docs/reliability.md, "hostile tenant code in its isolate").

What is forged inside the isolate stays there: the dispatcher metadata is added in the host, so
an instance a tenant creates is its own whatever it patches or sends."""

import asyncio
import json
import sqlite3
from contextlib import closing

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


async def on_victim(wf, victim, action):
    instance = await wf.get(victim)
    arguments = [{"type": "go", "payload": 1}] if action == "send_event" else []
    return await getattr(instance, action)(*arguments)


async def forge_by_attribute(wf):
    wf._metadata = {"tenantId": "victim"}       # on this side's stub: the host never sees it
    wf._prefix = "victim"
    return (await wf.create({"id": "forged-attr"})).id


async def forge_by_patching(wf):
    import workers
    workers.WorkerEntrypoint = object            # the isolate's own copy of the runtime
    import dynamic_workflows
    dynamic_workflows.tenant_prefix = lambda metadata: "victim"
    dynamic_workflows.wrap_params = lambda params, metadata: {
        "__dispatcherMetadata": {"tenantId": "victim"}, "params": params}
    return (await wf.create({"id": "forged-patch"})).id


async def huge_event(wf):
    own = await wf.create({"id": "own"})
    return await own.send_event({"type": "go", "payload": "x" * (10 * 1024 * 1024)})


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        body = await request.json()
        victim, victim_real = body["victim"], body["victim_real"]
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
            await attempt("huge params", lambda: wf.create(
                {"id": "big", "params": {"blob": "x" * (10 * 1024 * 1024)}})),
            await attempt("get victim by real id", lambda: wf.get(victim_real)),
            await attempt("pause victim", lambda: on_victim(wf, victim, "pause")),
            await attempt("terminate victim", lambda: on_victim(wf, victim, "terminate")),
            await attempt("send victim an event", lambda: on_victim(wf, victim, "send_event")),
            await attempt("forge by attribute", lambda: forge_by_attribute(wf)),
            await attempt("forge by patching", lambda: forge_by_patching(wf)),
            await attempt("huge event", lambda: huge_event(wf)),
            await attempt("misspelt method", lambda: wf.craete({"id": "typo"})),
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
                body=json.dumps({"victim": "v-1", "victim_real": victim})))
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
    assert "payload.too_large" in outcome["huge params"][1]
    assert "payload.too_large" in outcome["huge event"][1]
    # the stub knows its object's methods: a typo fails in the isolate, which lives on
    assert outcome["misspelt method"] == ("AttributeError", "the remote object has no method "
                                          "'craete' that can be called over RPC")
    # another tenant's instance cannot be reached, not even by its real id
    assert outcome["get victim by real id"][0] == "InstanceNotFoundError"
    for name in ("pause victim", "terminate victim", "send victim an event"):
        assert outcome[name] == ("InstanceNotFoundError",
                                 "[instance.not_found] Instance 'v-1' does not exist"), name
    # metadata is added by the dispatcher, outside the isolate: patching the isolate's copy of
    # the runtime, or the stub, forges nothing
    assert outcome["forge by attribute"][0] == "AttributeError"
    assert outcome["forge by patching"] == ("allowed", "'forged-patch'")
    # the victim is untouched; the "forged" instance belongs to the hostile tenant, not the victim
    assert after[victim].status == "waiting"
    with closing(sqlite3.connect(root / ".dynwf" / "state.sqlite")) as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE instance_id = ?",
                            (victim,)).fetchone() == (0,)
    hostile_prefix = next(r.id for r in after.values() if r.id.endswith("-own")).split("-")[0]
    for suffix in ("-forged", "-forged-patch"):
        forged = [r for r in after.values() if r.id.endswith(suffix)]
        assert len(forged) == 1
        assert forged[0].id.startswith(hostile_prefix + "-")
        envelope = json.loads(forged[0].params)
        assert envelope["__dispatcherMetadata"] == {"tenantId": "hostile"}
    assert not any(r.id.endswith("-big") for r in after.values())
    assert len(after) == len(before) + 3           # forged, forged-patch and its own

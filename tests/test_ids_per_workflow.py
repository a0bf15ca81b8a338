"""Instance ids are unique per workflow (docs/semantics.md §1.2): two workflows may each have an
instance "order-1"; a binding's create and get are its workflow's; a state file written before
(one id, one instance) migrates in place; the command line says when an id names two workflows'
instances and takes --workflow."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from emulator.engine import Engine, VirtualClock, WorkflowDefinition
from emulator.engine.store import Store
from emulator.errors import InstanceAlreadyExistsError, InstanceNotFoundError
from emulator.ops import InstanceOps
from engine_harness import T0, FnWorkflow, arun

DYNWF = Path(sys.executable).with_name("dynwf")


def _engine(path, seen):
    def workflow(name):
        async def run(event, step):
            seen.append((name, event["instanceId"], event["workflowName"]))

            @step.do("work")
            async def work():
                return f"{name}:{event['payload']['n']}"
            return await work()
        return WorkflowDefinition(name, lambda row: FnWorkflow(run))
    return Engine(path, [workflow("billing"), workflow("shipping")],
                  clock=VirtualClock(T0, flowing=False), poll_ms=20)


def test_two_workflows_each_have_an_instance_of_one_id(tmp_path):
    """§1.2: create and get are per workflow; each run sees its own id as `instanceId`."""
    async def main():
        seen = []
        engine = _engine(tmp_path / "db.sqlite", seen)
        billing, shipping = engine.binding("billing"), engine.binding("shipping")
        a = await billing.create({"id": "order-1", "params": {"n": 1}})
        b = await shipping.create({"id": "order-1", "params": {"n": 2}})
        assert a.id == b.id == "order-1"
        with pytest.raises(InstanceAlreadyExistsError):
            await billing.create({"id": "order-1"})
        assert [i.id for i in await shipping.create_batch(
            [{"id": "order-1"}, {"id": "order-2", "params": {"n": 3}}])] == ["order-2"]
        await engine.drain()
        assert (await (await billing.get("order-1")).status())["output"] == "billing:1"
        assert (await (await shipping.get("order-1")).status())["output"] == "shipping:2"
        with pytest.raises(InstanceNotFoundError):
            await billing.get("order-2")                  # shipping's, not billing's
        assert sorted(seen) == [("billing", "order-1", "billing"),
                                ("shipping", "order-1", "shipping"),
                                ("shipping", "order-2", "shipping")]
        # the engine keys the second one apart; every step and timer follows its key
        keys = {(r.workflow, r.known_as): r.id for r in engine.store.list_instances()}
        assert keys == {("billing", "order-1"): "order-1",
                        ("shipping", "order-1"): "order-1.shipping",
                        ("shipping", "order-2"): "order-2"}
        await (await shipping.get("order-1")).restart()
        await engine.drain()
        assert (await (await billing.get("order-1")).status())["status"] == "complete"
        engine.close()
    arun(main())


def test_a_state_file_from_before_migrates_and_takes_the_same_id_in_another_workflow(tmp_path):
    """Migration 0008: instances written when ids were unique over all workflows keep their
    id as key and are found by their workflow's binding; the id is then free in other
    workflows."""
    path = tmp_path / "state.sqlite"
    folder = resources.files("emulator.engine") / "migrations"
    older = sorted(e.name for e in folder.iterdir()
                   if e.name.endswith(".sql") and e.name < "0008")
    conn = sqlite3.connect(path)
    for name in older:
        conn.executescript(f"BEGIN; {(folder / name).read_text()}; COMMIT;")
    conn.execute("CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, migration_set TEXT, "
                 "name TEXT, applied_at TEXT)")
    conn.executemany("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                     "VALUES ('dynwf.engine', ?, '2026-11-01')", [(n,) for n in older])
    conn.execute("INSERT INTO instances (id, workflow, status, params, output, created_at, "
                 "updated_at) VALUES ('order-1', 'billing', 'complete', ?, '\"old\"', 1, 1)",
                 (json.dumps({"n": 0}),))
    conn.commit()
    conn.close()

    async def main():
        engine = _engine(path, [])
        old = await engine.binding("billing").get("order-1")
        assert (await old.status())["output"] == "old"
        with pytest.raises(InstanceNotFoundError):
            await engine.binding("shipping").get("order-1")
        new = await engine.binding("shipping").create({"id": "order-1", "params": {"n": 5}})
        await engine.drain()
        assert (await new.status())["output"] == "shipping:5"
        assert (await old.status())["output"] == "old"
        engine.close()
    arun(main())
    store = Store(path)
    try:
        rows = store.conn.execute("SELECT id, workflow, binding_id FROM instances ORDER BY seq")
        assert rows.fetchall() == [("order-1", "billing", "order-1"),
                                   ("order-1.shipping", "shipping", "order-1")]
    finally:
        store.close()


def test_the_command_line_asks_which_workflow_an_id_shared_by_two_means(tmp_path):
    """§1.2: `dynwf instances describe ID` with an id two workflows use says so and asks for
    --workflow; with it, each workflow's instance; an id only one workflow has needs none."""
    (tmp_path / "wrangler.jsonc").write_text(
        '{"name": "x", "main": "src/entry.py", "compatibility_date": "2026-04-01", "workflows": '
        '[{"name": "billing", "binding": "B", "class_name": "W"}, '
        '{"name": "shipping", "binding": "S", "class_name": "W"}]}')
    state = tmp_path / ".dynwf"

    async def main():
        engine = _engine(state / "state.sqlite", [])
        await engine.binding("billing").create({"id": "order-1", "params": {"n": 1}})
        await engine.binding("shipping").create({"id": "order-1", "params": {"n": 2}})
        await engine.binding("shipping").create({"id": "order-9", "params": {"n": 9}})
        await engine.drain()
        engine.close()
    arun(main())
    def cli(*args):
        return subprocess.run([str(DYNWF), "instances", *args, "--json"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "NO_COLOR": "1"})
    ambiguous = cli("describe", "order-1")
    assert ambiguous.returncode == 1
    text = " ".join(ambiguous.stderr.split())
    assert text.startswith("error [instance.ambiguous]")
    assert "Instance id 'order-1' is used by 2 workflows: 'billing' (key order-1), 'shipping' " \
           "(key order-1.shipping)" in text
    assert "--workflow" in text
    for workflow, output in (("billing", "billing:1"), ("shipping", "shipping:2")):
        described = cli("describe", "order-1", "--workflow", workflow)
        assert described.returncode == 0, described.stderr
        info = json.loads(described.stdout)
        assert (info["workflow"], info["output"]) == (workflow, output)
    assert json.loads(cli("describe", "order-1.shipping").stdout)["output"] == "shipping:2"
    assert json.loads(cli("describe", "order-9").stdout)["output"] == "shipping:9"
    wrong = cli("describe", "order-9", "--workflow", "billing")
    assert wrong.returncode != 0 and "does not exist" in wrong.stderr
    # what a command suggests next names the workflow too
    paused = cli("pause", "order-1", "--workflow", "billing")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["next"].endswith(
        "dynwf instances restart order-1 --workflow billing")
    restarted = cli("restart", "order-1", "--workflow", "billing")
    assert restarted.returncode == 0, restarted.stderr
    with InstanceOps(Store(state / "state.sqlite")) as ops:
        assert ops.describe("order-1", workflow="billing")["status"] == "running"
        assert ops.describe("order-1", workflow="shipping")["status"] == "complete"


# ---- through a tenant's wrapped bindings, with its code in an isolate --------------------------

TWO_WORKFLOWS = """\
{
  "name": "two-workflows",
  "main": "src/entry.py",
  "compatibility_date": "2026-04-01",
  "workflows": [
    {"name": "billing", "binding": "WORKFLOWS", "class_name": "DynamicWorkflow"},
    {"name": "shipping", "binding": "SHIPPING", "class_name": "DynamicWorkflow"}
  ],
  "worker_loaders": [{"binding": "LOADER"}],
}
"""

TENANT = '''
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("seen")
        async def seen():
            return [event["instanceId"], event["workflowName"], event["payload"]["n"]]
        return await seen()
'''


@pytest.fixture
def dynwf_project(tmp_path):
    from plugin_projects import _write, write_lab
    root = write_lab(tmp_path / "lab", {"acme": TENANT})
    _write(root / "wrangler.jsonc", TWO_WORKFLOWS)
    return root


async def test_a_tenant_uses_one_id_in_two_workflows(dynwf):
    """§1.2 + §8.2: a tenant's wrapped bindings of two workflows each create and get their own
    instance "o1"; the tenant's code, in its isolate, sees "o1" as `instanceId` in both."""
    billing = dynwf.tenant("acme", workflow="billing")
    shipping = dynwf.tenant("acme", workflow="shipping")
    a = await billing.binding.create({"id": "o1", "params": {"n": 1}})
    b = await shipping.binding.create({"id": "o1", "params": {"n": 2}})
    assert a.id == b.id == "o1"
    for tenant, expected in ((billing, ["o1", "billing", 1]), (shipping, ["o1", "shipping", 2])):
        introspector = dynwf.introspect_instance(tenant, "o1")
        await introspector.wait_for_status("complete")
        assert await introspector.get_output() == expected
        handle = await tenant.binding.get("o1")
        assert (await handle.status())["output"] == expected

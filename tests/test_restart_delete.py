"""Restart from a step and delete (docs/semantics.md §1.6, §1.7 and §4.6), on a real SQLite file:
the engine harness for the semantics, a tenant's code in a real isolate for a self-delete that
crosses the wire, the command line through Typer's runner and the installed script.
"""

from __future__ import annotations

import asyncio
import json
import re
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator import open_project
from emulator.engine import Control, Store, VirtualClock
from emulator.errors import (CannotRestartError, InstanceNotFoundError, InvalidIdError,
                             ValidationError)
from emulator.host import HostOptions, ProjectHost
from emulator.sdk.client import current_step
from engine_harness import Harness, arun
from test_instances import State

# ---- restart from a step -------------------------------------------------------------------


def _counting_workflow(calls: dict[str, int]):
    def counted(name: str):
        async def body():
            calls[name] = calls.get(name, 0) + 1
            return f"{name}-{calls[name]}"
        return body

    async def wf(event, step):
        results = [await step.do(name)(counted(name))() for name in ("reserve", "charge", "ship")]
        await step.sleep("cool-off", "1 minute")
        results.append(await step.do("charge")(counted("charge"))())
        return results
    return wf


def test_restart_from_a_step_keeps_earlier_results_and_runs_that_step_and_later_ones_again(tmp_path):
    """§1.7: the steps reached before the named one keep their results; it and every later one
    run again; the instance reads running as soon as restart() resolves."""
    calls: dict[str, int] = {}

    async def main():
        h = Harness(tmp_path / "db.sqlite", _counting_workflow(calls))
        inst = await h.create()
        await h.engine.drain()
        assert (await inst.status())["output"] == ["reserve-1", "charge-1", "ship-1", "charge-2"]
        await inst.restart({"from": {"name": "charge"}})
        assert await inst.status() == {"status": "running", "error": None, "output": None}
        assert h.step_keys() == [("do", "reserve", 1)]
        await h.engine.drain()
        assert (await inst.status())["output"] == ["reserve-1", "charge-3", "ship-2", "charge-4"]
        assert calls == {"reserve": 1, "charge": 4, "ship": 2}
    arun(main())


def test_restart_from_a_later_occurrence_and_from_a_sleep(tmp_path):
    """§1.7: ``count`` picks the occurrence of the name, ``type`` the kind of step."""
    calls: dict[str, int] = {}

    async def main():
        h = Harness(tmp_path / "db.sqlite", _counting_workflow(calls))
        inst = await h.create()
        await h.engine.drain()
        await inst.restart({"from": {"name": "charge", "count": 2}})
        assert h.step_keys() == [("do", "reserve", 1), ("do", "charge", 1), ("do", "ship", 1),
                                 ("sleep", "cool-off", 1)]
        await h.engine.drain()
        assert (await inst.status())["output"] == ["reserve-1", "charge-1", "ship-1", "charge-3"]
        await inst.restart({"from": {"name": "cool-off", "type": "sleep"}})
        assert h.step_keys() == [("do", "reserve", 1), ("do", "charge", 1), ("do", "ship", 1)]
        await h.engine.drain(jump=False)
        assert (await inst.status())["status"] == "waiting"
        assert [t[0] for t in h.timers()] == ["sleep"]
        await h.engine.drain()
        assert (await inst.status())["output"] == ["reserve-1", "charge-1", "ship-1", "charge-4"]
    arun(main())


def test_restart_from_a_step_that_is_not_in_the_history_changes_nothing(tmp_path):
    """§1.7: a step the instance never reached (name, count or type) is instance.cannot_restart,
    raised before anything is written; bad options are refused the same way."""
    calls: dict[str, int] = {}

    async def main():
        h = Harness(tmp_path / "db.sqlite", _counting_workflow(calls))
        inst = await h.create()
        await h.engine.drain()
        before = (await inst.status(), h.step_keys(), h.engine.store.get_instance("i1").generation)
        for start in ({"name": "refund"}, {"name": "charge", "count": 3},
                      {"name": "charge", "type": "sleep"}, {"name": "ship", "type": "waitForEvent"}):
            with pytest.raises(CannotRestartError) as refused:
                await inst.restart({"from": start})
            assert refused.value.code == "instance.cannot_restart"
            assert f'Step "{start["name"]}" not found in execution history' in refused.value.message
        for bad in ({"from": {"count": 1}}, {"from": {"name": "charge", "count": 0}},
                    {"from": {"name": "charge", "count": True}},
                    {"from": {"name": "charge", "type": "wait"}}, {"form": {"name": "charge"}},
                    {"from": "charge"}, ["charge"]):
            with pytest.raises(ValidationError):
                await inst.restart(bad)
        after = (await inst.status(), h.step_keys(), h.engine.store.get_instance("i1").generation)
        assert after == before
    arun(main())


def test_restart_from_drops_the_discarded_steps_attempts_timers_and_buffered_events(tmp_path):
    """§1.7: the attempts, timers and log lines of the discarded steps go with them; buffered
    events go in both forms (as the platform erases them); a received event of a kept wait stays
    its result."""
    state = {"flaky": 0}

    async def wf(event, step):
        first = await step.wait_for_event("approval", "approval", timeout="1 hour")

        @step.do("flaky", config={"retries": {"limit": 3, "delay": "1 minute"}})
        async def flaky():
            state["flaky"] += 1
            if state["flaky"] < 3:
                raise ValueError(f"down {state['flaky']}")
            return "up"
        await flaky()
        second = await step.wait_for_event("second", "other", timeout="1 hour")
        return [first["payload"], second["payload"]]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await inst.send_event({"type": "approval", "payload": "yes"})
        await h.engine.drain(jump=False)
        assert h.step("do", "flaky").status == "backoff"
        assert sorted(t[0] for t in h.timers()) == ["retry"]
        await inst.send_event({"type": "other", "payload": "buffered"})
        await inst.restart({"from": {"name": "flaky"}})
        store = h.engine.store
        assert h.step_keys() == [("wait", "approval", 1)]
        assert store.list_attempts("i1") == {} and h.timers() == []
        assert store.buffered_events("i1") == {}
        state["flaky"] = 2
        await h.engine.drain(jump=False)
        assert h.step("do", "flaky").attempts == 1      # a fresh step: attempt 1 succeeded
        assert h.step("wait", "second").status == "waiting"
        await inst.send_event({"type": "other", "payload": "fresh"})
        await h.engine.drain()
        assert (await inst.status())["output"] == ["yes", "fresh"]
    arun(main())


def test_plain_restart_reads_running_and_an_engine_claims_it(tmp_path):
    """§1.3/§1.7/§4.6: after restart() resolves the status is running (not queued), from any status;
    a pause asked before an engine claims it takes effect at once (no step is in flight)."""
    async def wf(event, step):
        @step.do("one")
        async def one():
            return 1
        return await one()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await h.engine.drain()
        await inst.restart()
        assert (await inst.status())["status"] == "running"
        assert await inst.pause() is None
        assert (await inst.status())["status"] == "paused"
        await inst.resume()
        await h.engine.drain()
        assert await inst.status() == {"status": "complete", "error": None, "output": 1}
    arun(main())


# ---- delete ---------------------------------------------------------------------------------

def _row_counts(h: Harness, instance_id: str) -> dict[str, int]:
    conn = h.engine.store.conn
    counts = {table: conn.execute(f"SELECT count(*) FROM {table} WHERE instance_id = ?",
                                  (instance_id,)).fetchone()[0]
              for table in ("steps", "attempts", "timers", "events", "logs")}
    counts["instances"] = conn.execute("SELECT count(*) FROM instances WHERE id = ?",
                                       (instance_id,)).fetchone()[0]
    return counts


def test_delete_stops_a_waiting_instance_and_erases_every_row(tmp_path):
    """§1.6: delete() stops the instance without rollback and erases its row, steps, attempts,
    timers, buffered events and logs; the id is free to create again."""
    async def wf(event, step):
        @step.do("flaky", config={"retries": {"limit": 1, "delay": "10 minutes"}})
        async def flaky():
            print("trying")
            raise ValueError("down")
        try:
            await flaky()
        except ValueError:
            pass
        return (await step.wait_for_event("w", "go", timeout="1 hour"))["payload"]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await inst.send_event({"type": "other", "payload": 1})
        await h.engine.drain(jump=False)
        counts = _row_counts(h, "i1")
        assert counts["attempts"] == 1 and counts["timers"] == 1 and counts["events"] == 1
        await inst.delete()
        assert set(_row_counts(h, "i1").values()) == {0}
        with pytest.raises(InstanceNotFoundError):
            await h.binding.get("i1")
        with pytest.raises(InstanceNotFoundError):
            await inst.delete()
        await h.engine.drain()                       # nothing left for the engine to wake
        assert _row_counts(h, "i1")["instances"] == 0
        again = await h.create()
        await h.engine.drain(jump=False)
        assert (await again.status())["status"] == "waiting"
    arun(main())


def test_an_instance_that_deletes_itself_stops_inside_the_call(tmp_path):
    """§1.6: a run that deletes its own instance never returns from the await: nothing after it
    runs, no later step, and the engine writes nothing more about it."""
    after = {"lines": 0, "steps": 0}
    harness: list[Harness] = []

    async def wf(event, step):
        @step.do("before")
        async def before():
            return "done"
        await before()
        binding = harness[0].engine.binding("wf")
        await (await binding.get(event["instanceId"])).delete()
        after["lines"] += 1

        @step.do("later")
        async def later():
            after["steps"] += 1
        await later()
        return "continued"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        harness.append(h)
        await h.create()
        await h.engine.drain()
        assert set(_row_counts(h, "i1").values()) == {0}
        assert after == {"lines": 0, "steps": 0}
        assert "i1" not in h.engine.live
    arun(main())


def test_delete_batch_reports_each_position_and_refuses_bad_input_before_deleting(tmp_path):
    """§1.6: 1-100 ids; an invalid one fails the whole call first; duplicates are deleted once
    and reported per position; a missing id is reported with the platform's code 10400."""
    async def wf(event, step):
        await step.sleep("nap", "1 hour")

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        for i in ("a", "b", "c"):
            await h.create(id=i)
        await h.engine.drain(jump=False)
        for bad, error in (([], ValidationError), ([f"x{i}" for i in range(101)], ValidationError),
                           (["a", "not valid!"], InvalidIdError), (["a", 7], InvalidIdError),
                           ("a", ValidationError), (["a", ""], InvalidIdError)):
            with pytest.raises(error):
                await h.binding.delete_batch(bad)
        assert sorted(h.instance_ids()) == ["a", "b", "c"]
        result = await h.binding.deleteBatch(["a", "gone", "b", "a"])
        assert result == {"deleted": [{"id": "a"}, {"id": "b"}, {"id": "a"}],
                          "errors": [{"id": "gone", "code": 10400,
                                      "message": "workflows.api.error.instance.not_found"}]}
        assert h.instance_ids() == ["c"] and h.timers("a") == []
        other = h.engine.binding("another-workflow")
        hidden = await other.delete_batch({"instances": ["c"]})
        assert hidden["deleted"] == [] and hidden["errors"][0]["code"] == 10400
        assert h.instance_ids() == ["c"]
    arun(main())


def test_a_deleted_instance_gets_no_writes_from_its_run_still_winding_down(tmp_path):
    """§1.6: a lifetime of a deleted instance stops and never writes again: its step result in
    flight, its log lines, its end are all refused."""
    async def main():
        release = asyncio.Event()
        started = asyncio.Event()

        async def wf(event, step):
            @step.do("slow")
            async def slow():
                where = current_step.get()     # what a step's print() becomes in an isolate
                where[2].log(where[1], "info", "started")
                started.set()
                await release.wait()
                where[2].log(where[1], "info", "finished")
                return "late"
            return await slow()
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        task = h.drain_in_background()
        await asyncio.wait_for(started.wait(), 10)
        # deleted from another process (the command line): this engine learns it only from the
        # database, when its writes are refused or its next poll sees the row gone
        other = Store(tmp_path / "db.sqlite")
        try:
            Control(other, h.clock).delete("i1")
        finally:
            other.close()
        release.set()
        await asyncio.wait_for(task, 10)
        await h.engine.drain()
        assert set(_row_counts(h, "i1").values()) == {0}
        assert "i1" not in h.engine.live
    arun(main())


# ---- the isolate: a tenant's code deletes its own instance across the wire -------------------

SELF_DELETING = '''
from workers import WorkflowEntrypoint, WorkerEntrypoint, Response


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("before")
        async def before():
            return "done"
        await before()
        if event["payload"].get("delete"):
            me = await self.env.WORKFLOWS.get(event["instanceId"])
            await me.delete()
            print("still running after delete")

            @step.do("later")
            async def later():
                return "ran"
            await later()
            return "continued"
        if event["payload"].get("restart_from"):
            await step.sleep("nap", "1 hour")
        return "kept"


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        body = await request.json()
        if "batch" in body:
            return Response.json(await self.env.WORKFLOWS.delete_batch(body["batch"]))
        me = await self.env.WORKFLOWS.get(body["id"])
        await me.restart({"from": {"name": body["from"], "type": body["type"]}})
        return Response.json(await me.status())
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("lifecycle") / "p"
    assert CliRunner().invoke(app, ["init", str(root)]).exit_code == 0
    (root / "tenants" / "selfdel").mkdir()
    (root / "tenants" / "selfdel" / "index.py").write_text(SELF_DELETING)
    return root


def test_tenant_code_in_an_isolate_deletes_its_own_instance_and_stops_there(project, tmp_path):
    """§1.6 across the wire: the tenant's run awaits delete() on its own instance through its
    wrapped binding; the run stops inside the call (no later line, no later step), every row is
    gone, and a neighbour instance of the same tenant runs on."""
    async def scenario():
        host = ProjectHost(open_project(project / "wrangler.jsonc").config,
                           HostOptions(state_dir=tmp_path, clock=VirtualClock()))
        await host.start()
        try:
            doomed = await host.create_as_tenant({"tenantId": "selfdel"},
                                                 {"id": "doomed", "params": {"delete": True}})
            kept = await host.create_as_tenant({"tenantId": "selfdel"},
                                               {"id": "kept", "params": {}})
            engine = host.engine

            def finished() -> bool:
                return engine.store.find_instance(doomed) is None and \
                    engine.control.status(kept)["status"] == "complete"
            await asyncio.wait_for(engine.drain(until=finished), 90)
            await asyncio.wait_for(engine.drain(), 30)
            conn = engine.store.conn
            leftovers = {table: conn.execute(f"SELECT count(*) FROM {table} WHERE instance_id = ?",
                                             (doomed,)).fetchone()[0]
                         for table in ("steps", "attempts", "timers", "events", "logs")}
            return (engine.store.find_instance(doomed), leftovers,
                    engine.control.status(kept), doomed in engine.live)
        finally:
            await host.close()

    row, leftovers, kept, live = asyncio.run(scenario())
    assert row is None and set(leftovers.values()) == {0}
    assert kept == {"status": "complete", "error": None, "output": "kept"}
    assert live is False


def test_tenant_code_restarts_from_a_step_and_batch_deletes_only_its_own(project, tmp_path):
    """§1.7 and §8.2 across the wire: a tenant restarts its instance from a step with its
    wrapped binding (reads running at once) and batch-deletes by its own ids; another tenant's
    instance of the same id is not touched."""
    async def scenario():
        from emulator.runtime.workers import Request
        host = ProjectHost(open_project(project / "wrangler.jsonc").config,
                           HostOptions(state_dir=tmp_path, clock=VirtualClock()))
        await host.start()
        try:
            mine = await host.create_as_tenant({"tenantId": "selfdel"},
                                               {"id": "order-1", "params": {"restart_from": True}})
            theirs = await host.create_as_tenant({"tenantId": "other"}, {"id": "order-1"})
            await asyncio.wait_for(host.engine.drain(jump=False), 60)
            assert [s.name for s in host.engine.store.list_steps(mine)] == ["before", "nap"]

            async def call(body: dict[str, Any]) -> Any:
                response = await host.fetch(Request("http://localhost/", method="POST",
                                                    headers={"x-tenant-id": "selfdel"},
                                                    body=json.dumps(body)))
                assert response.status == 200, await response.text()
                return await response.json()
            restarted = await call({"id": "order-1", "from": "nap", "type": "sleep"})
            steps = [s.name for s in host.engine.store.list_steps(mine)]
            deleted = await call({"batch": ["order-1", "nobody", "order-1"]})
            return restarted, steps, deleted, host.engine.store.find_instance(theirs) is not None
        finally:
            await host.close()

    restarted, steps, deleted, theirs_kept = asyncio.run(scenario())
    assert restarted["status"] == "running"
    assert steps == ["before"]
    assert deleted == {"deleted": [{"id": "order-1"}, {"id": "order-1"}],
                       "errors": [{"id": "nobody", "code": 10400,
                                   "message": "workflows.api.error.instance.not_found"}]}
    assert theirs_kept


# ---- the command line -----------------------------------------------------------------------

@pytest.fixture
def state(tmp_path: Path) -> State:
    built = State(tmp_path)
    built.create_all()
    built.run_engine()
    return built


def test_cli_restart_from_a_step(state: State):
    """§1.7 through ``dynwf instances restart ID --from STEP [--count N] [--type T]``."""
    target = ("sleeper", "--tenant", "acme")
    refused = state.cli("restart", *target, "--from", "nowhere")
    assert refused.exit_code == 1 and isinstance(refused.exception, CannotRestartError)
    out = state.ok("restart", *target, "--from", "nap", "--type", "sleep")
    assert "restarted from sleep 'nap' #1 (1 step kept)" in out and "status running" in out
    info = state.json("describe", *target)
    assert [s["name"] for s in info["steps"]] == ["prepare"] and info["status"] == "running"
    result = state.json("restart", *target, "--from", "prepare", "--count", "1")
    assert result["from"] == {"name": "prepare", "count": 1, "type": "do"}
    assert result["steps_kept"] == 0 and result["status"] == "running"
    assert state.cli("restart", *target, "--type", "sleep").exit_code == 2   # --type needs --from
    assert state.cli("restart", *target, "--from", "nap", "--type", "wait").exit_code == 2
    assert state.cli("restart", *target, "--from", "nap", "--count", "0").exit_code == 2
    state.run_engine()
    assert state.status("acme", "sleeper") == "waiting"


def test_cli_delete_needs_yes_without_a_terminal_and_reports_each_id(state: State):
    """§1.6 through ``dynwf instances delete ID [ID...]``: without a terminal --yes is required;
    each id is reported deleted or with its error; the exit status is 1 if any failed."""
    unconfirmed = state.cli("delete", "plain-1")
    assert unconfirmed.exit_code == 2 and "--yes" in unconfirmed.output
    assert state.status(None, "plain-1") == "complete"
    both = state.cli("delete", "plain-1", "nobody", state.id("acme", "done-1"), "--yes")
    assert both.exit_code == 1
    assert both.output.splitlines() == [
        "✓ deleted plain-1", "✗ nobody: [instance.not_found] Instance 'nobody' does not exist",
        f"✓ deleted {state.id('acme', 'done-1')}"]
    scoped = state.cli("delete", "sleeper", "plain-1", "--tenant", "acme", "--yes")
    assert scoped.exit_code == 1
    assert scoped.output.splitlines()[1].startswith("✗ plain-1: [instance.not_found]")
    rows = {(r["tenant"], r["tenant_instance_id"] or r["id"]) for r in state.json("list")}
    assert not rows & {(None, "plain-1"), ("acme", "done-1"), ("acme", "sleeper")}
    assert ("globex", "order-1") in rows
    result = state.json("delete", "broken", "--yes")
    assert result == {"deleted": [{"id": state.id("globex", "broken"), "given": "broken"}],
                      "errors": []}
    too_many = state.error("delete", *[f"x{i}" for i in range(101)], "--yes")
    assert too_many.code == "input.invalid" and "only supports 100" in too_many.message
    bad = state.error("delete", "order-1", "no good!", "--tenant", "acme", "--yes")
    assert bad.code == "instance.invalid_id" and "nothing was deleted" in bad.message
    assert state.status("acme", "order-1") == "waiting"


def test_cli_delete_asks_on_a_terminal_and_help_has_examples(state: State):
    """A person at a terminal is asked first; answering no deletes nothing. Every new option's
    --help ends with an example."""
    script = Path(sys.executable).with_name("dynwf")
    env = {**os.environ, "NO_COLOR": "1"}
    import pty
    pid, fd = pty.fork()
    if pid == 0:   # the child: a terminal on both ends, as a person would have
        os.execve(str(script), [str(script), "instances", "delete", "plain-1", "--config",
                                str(state.config)], env)
    deadline = time.monotonic() + 60

    def read() -> bytes:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            os.kill(pid, 9)
            raise AssertionError(f"no answer from the command in time: {seen!r}")
        try:
            return os.read(fd, 1024)
        except OSError:   # the child closed its terminal
            return b""
    seen = b""
    while b"[y/N]" not in seen:
        seen += read()
    os.write(fd, b"n\n")
    while chunk := read():
        seen += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    assert b"This cannot be undone" in seen and b"nothing deleted" in seen
    assert state.status(None, "plain-1") == "complete"
    for command in ("delete", "restart"):
        shown = subprocess.run([str(script), "instances", command, "--help"], capture_output=True,
                               text=True, env=env, timeout=60)
        assert shown.returncode == 0 and "Example:" in shown.stdout
    assert "--from charge --count 1 --type do" in " ".join(
        subprocess.run([str(script), "instances", "restart", "--help"], capture_output=True,
                       text=True, env={**env, "COLUMNS": "200"}, timeout=60).stdout.split())


# ---- the admin API (a real dynwf dev) --------------------------------------------------------

def test_admin_api_restarts_from_a_step_and_deletes(tmp_path, servers):
    """§1.6 and §1.7 over the admin API of a running dynwf dev: restart with {"from"} (refused
    for a step not reached, and without the token), delete one, delete a batch reported per id."""
    from dev_harness import copy_hello, start
    from test_admin_api import API, call, token_of
    project = copy_hello(tmp_path)
    dev = start(servers, project)
    token = token_of(project)
    for instance_id in ("signup-1", "signup-2", "signup-3"):
        status, created = call(dev, "POST", f"{API}/instances",
                               {"tenant": "globex", "id": instance_id,
                                "params": {"email": "a@b.co"}}, token=token)
        assert status == 201, created
    dev.wait_for_record(kind="step.waiting", step__name="confirm email", timeout=30)
    path = f"{API}/instances/signup-1/restart?tenant=globex"
    assert call(dev, "POST", path, {"from": {"name": "confirm email"}})[0] == 401
    status, body = call(dev, "POST", path, {"from": {"name": "nowhere"}}, token=token)
    assert status == 404 and body["error"]["code"] == "instance.cannot_restart"
    status, body = call(dev, "POST", path, {"from": {"name": "grace period", "count": 0,
                                                     "type": "sleep"}}, token=token)
    assert status == 400 and body["error"]["code"] == "input.invalid"
    status, body = call(dev, "POST", path, {"from": {"name": "grace period", "type": "sleep"}},
                        token=token)
    assert status == 200, body
    assert body["status"] == "running" and body["steps_kept"] == 1
    assert body["from"] == {"name": "grace period", "count": 1, "type": "sleep"}

    status, body = call(dev, "POST", f"{API}/instances/signup-2/delete?tenant=globex", token=token)
    assert status == 200 and body["deleted"] is True and body["tenant_instance_id"] == "signup-2"
    status, body = call(dev, "GET", f"{API}/instances/signup-2?tenant=globex")
    assert status == 404
    status, body = call(dev, "POST", f"{API}/instances/delete?tenant=globex",
                        {"ids": ["signup-3", "signup-2", "signup-3"]}, token=token)
    assert status == 200
    assert [row["given"] for row in body["deleted"]] == ["signup-3", "signup-3"]
    assert [(row["given"], row["code"]) for row in body["errors"]] == [
        ("signup-2", "instance.not_found")]
    status, body = call(dev, "POST", f"{API}/instances/delete", {"ids": []}, token=token)
    assert status == 400
    status, body = call(dev, "POST", f"{API}/instances/delete", {"ids": ["ok", "bad id!"]},
                        token=token)
    assert status == 400 and body["error"]["code"] == "instance.invalid_id"
    listed = call(dev, "GET", f"{API}/instances?tenant=globex")[1]
    assert [row["tenant_instance_id"] for row in listed] == ["signup-1"]


# ---- the dashboard, in a real browser --------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="Debian's Chromium is not installed at /usr/bin/chromium")
def test_the_dashboard_deletes_an_instance_after_asking(tmp_path, servers):
    """§1.6 on the dashboard: the instance view's Delete button asks first (cancelling keeps the
    instance), and once confirmed the instance is gone and the page is back at the list."""
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    from dev_harness import copy_hello, start
    from test_admin_api import API, call, token_of
    from test_dashboard import CHROMIUM_ARGS
    project = copy_hello(tmp_path)
    dev = start(servers, project)
    token = token_of(project)
    for instance_id in ("doomed", "kept"):
        assert call(dev, "POST", f"{API}/instances", {"tenant": "globex", "id": instance_id},
                    token=token)[0] == 201
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(dev.url + "/__dynwf/#/instances/doomed")
            expect(page.locator("#instance-status")).to_have_text(
                re.compile("waiting|running"), timeout=30_000)
            delete = page.locator('[data-action="delete"]')
            expect(delete).to_be_enabled()
            expect(delete).to_have_class("danger")

            delete.click()
            expect(page.locator("#confirm")).to_contain_text("This cannot be undone")
            page.click("#confirm-no")
            expect(page.locator("#confirm")).to_have_count(0)
            assert call(dev, "GET", f"{API}/instances/doomed")[0] == 200

            delete.click()
            page.click("#confirm-yes")
            page.wait_for_url(re.compile(r"#/instances$"))
            expect(page.locator("#toast")).to_contain_text("deleted doomed")
            listed = page.locator("#instances-body tr[data-id]")
            expect(listed).to_have_count(1)
            expect(listed.first).to_contain_text("kept")
        finally:
            browser.close()
    status, body = call(dev, "GET", f"{API}/instances/doomed")
    assert status == 404 and body["error"]["code"] == "instance.not_found"

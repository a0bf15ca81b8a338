"""The platform's own tests of restarting from a step and of deleting instances, translated to
Python against dynwf's engine on a real SQLite file (docs/semantics.md §1.6, §1.7, §4.6).

Each test names the test it follows. The platform's local engine runs in real time and its tests
poll with ``vi.waitUntil``; here the engine is drained to a standstill instead, with a clock that
stands still. Where the platform's test uses an id dynwf refuses (a cron-generated id such as
``*/30 * * * *-1786001400000``, which only scheduled instances have), a valid id of no instance
takes its place, which is what the platform's test checks through it: a missing id is reported,
not refused.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from emulator.errors import (CannotRestartError, InstanceNotFoundError, InvalidIdError,
                             ValidationError)
from emulator.ops import InstanceOps
from engine_harness import Harness, arun

NOT_FOUND = {"code": 10400, "message": "workflows.api.error.instance.not_found"}


def _gone(h: Harness, instance_id: str) -> bool:
    """No row about the instance is left in any table."""
    conn = h.engine.store.conn
    left = conn.execute("SELECT count(*) FROM instances WHERE id = ?", (instance_id,)).fetchone()[0]
    for table in ("steps", "attempts", "timers", "events", "logs"):
        left += conn.execute(f"SELECT count(*) FROM {table} WHERE instance_id = ?",
                             (instance_id,)).fetchone()[0]
    return left == 0


async def _done(event, step):
    return "done"


# ---- packages/workflows-shared/tests/binding.test.ts ----------------------------------------

def test_a_handle_offers_restart_and_delete(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should return a
    WorkflowHandle for an existing instance': the handle from get() has id, status, pause,
    resume, terminate, restart and delete."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", _done)
        await h.create(id="instance-1")
        handle = await h.binding.get("instance-1")
        assert handle.id == "instance-1"
        for method in ("status", "pause", "resume", "terminate", "restart", "delete"):
            assert callable(getattr(handle, method))
        await h.engine.drain()
        assert (await handle.status())["status"] == "complete"
    arun(main())


def test_delete_an_instance_and_wipe_its_stored_state(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'deleteInstance should
    delete an instance and wipe its stored state': delete() of a complete instance resolves to
    None and get() then fails with instance.not_found."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", _done)
        await h.create(id="instance-2")
        instance = await h.binding.get("instance-2")
        await h.engine.drain()
        assert (await instance.status())["status"] == "complete"
        assert await instance.delete() is None
        with pytest.raises(InstanceNotFoundError, match="instance-2"):
            await h.binding.get("instance-2")
        assert _gone(h, "instance-2")
    arun(main())


def test_delete_refuses_an_invalid_instance_id(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should reject an
    invalid instance ID': an empty id is instance.invalid_id. (The platform's test calls the
    binding's internal single-id delete; dynwf's bindings take ids to delete through
    delete_batch, and the command line and admin API through the same check.)"""
    async def main():
        h = Harness(tmp_path / "db.sqlite", _done)
        await h.create(id="kept")
        with pytest.raises(InvalidIdError) as refused:
            await h.binding.delete_batch([""])
        assert refused.value.code == "instance.invalid_id"
        assert "Instance ID is invalid" in refused.value.message
        assert h.instance_ids() == ["kept"]
    arun(main())


def test_a_running_instance_deletes_itself_and_stops(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should let a running
    instance delete itself and stop execution': the run gets its own handle and deletes it;
    nothing after the await runs and get() fails with instance.not_found."""
    seen = {"delete_started": False, "continued_after_delete": False}
    harness: list[Harness] = []

    async def wf(event, step):
        seen["delete_started"] = True
        instance = await harness[0].binding.get(event["instanceId"])
        await instance.delete()
        seen["continued_after_delete"] = True

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        harness.append(h)
        await h.create(id="instance-3")
        await h.engine.drain()
        assert seen == {"delete_started": True, "continued_after_delete": False}
        with pytest.raises(InstanceNotFoundError):
            await h.binding.get("instance-3")
        assert _gone(h, "instance-3")
    arun(main())


def test_delete_batch_deletes_instances_and_wipes_their_stored_state(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'deleteBatch() should
    delete instances and wipe their stored state': both complete instances are reported deleted,
    no errors, and get() of each then fails."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", _done)
        ids = ["instance-4", "instance-5"]
        await h.binding.create_batch([{"id": i} for i in ids])
        await h.engine.drain()
        for i in ids:
            assert (await h.status(i))["status"] == "complete"
        assert await h.binding.deleteBatch({"instances": ids}) == {
            "deleted": [{"id": i} for i in ids], "errors": []}
        for i in ids:
            with pytest.raises(InstanceNotFoundError):
                await h.binding.get(i)
            assert _gone(h, i)
    arun(main())


def test_delete_batch_reports_each_duplicate_missing_id(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should report each
    duplicate missing cron-generated ID': a missing id given twice is reported twice, with the
    platform's code 10400. (dynwf has no cron-generated ids; a valid id of no instance stands in.)"""
    async def main():
        h = Harness(tmp_path / "db.sqlite", _done)
        missing = "cron-1786001400000"
        assert await h.binding.delete_batch({"instances": [missing, missing]}) == {
            "deleted": [], "errors": [{"id": missing, **NOT_FOUND}, {"id": missing, **NOT_FOUND}]}
    arun(main())


def test_delete_batch_rejects_invalid_batches(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should reject invalid
    batches': an empty batch, 101 ids, and an invalid id are each refused before anything is
    deleted."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", _done)
        await h.create(id="instance-0")
        with pytest.raises(ValidationError, match="should have at least 1 instance"):
            await h.binding.delete_batch({"instances": []})
        with pytest.raises(ValidationError, match="only supports 100 instances at a time"):
            await h.binding.delete_batch({"instances": [f"instance-{i}" for i in range(101)]})
        with pytest.raises(InvalidIdError, match="Instance ID is invalid"):
            await h.binding.delete_batch({"instances": [""]})
        assert h.instance_ids() == ["instance-0"]
    arun(main())


def test_restart_reads_running_at_once_then_completes(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'restart() should
    restart a workflow instance': a complete instance restarted reads running right after
    restart() resolves, then completes again."""
    async def wf(event, step):
        await step.sleep("sleep", 250)
        return "complete"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create(id="instance-6")
        await h.engine.drain()
        instance = await h.binding.get("instance-6")
        assert (await instance.status())["status"] == "complete"
        await instance.restart()
        assert (await instance.status())["status"] == "running"
        await h.engine.drain()
        assert (await (await h.binding.get("instance-6")).status())["status"] == "complete"
    arun(main())


# ---- packages/workflows-shared/tests/engine.test.ts -----------------------------------------

def test_restart_from_a_specific_step_preserves_earlier_results(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should restart from a
    specific step and preserve earlier results': restarting a complete instance from step-b keeps
    step-a's result (its body does not run again) and the run completes."""
    calls = {"step-a": 0, "step-b": 0}

    async def wf(event, step):
        async def a():
            calls["step-a"] += 1
            return "result-a"

        async def b():
            calls["step-b"] += 1
            return "result-b"
        return {"a": await step.do("step-a")(a)(), "b": await step.do("step-b")(b)()}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf, compatibility_date="2026-04-01")
        instance = await h.create(id="RESTART-FROM-STEP")
        await h.engine.drain()
        assert (await instance.status())["status"] == "complete"
        await instance.restart({"from": {"name": "step-b"}})
        await h.engine.drain()
        assert await instance.status() == {"status": "complete", "error": None,
                                           "output": {"a": "result-a", "b": "result-b"}}
        assert calls == {"step-a": 1, "step-b": 2}
    arun(main())


def test_restart_from_defaults_to_a_do_step(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should default restart
    from step type to step.do': with a sleep and a do step both named "checkpoint", from
    {"name": "checkpoint"} means the do step: "setup" and "between" keep their random results,
    "checkpoint" and "after" get new ones."""
    def fresh():
        async def body():
            return uuid.uuid4().hex
        return body

    async def wf(event, step):
        setup = await step.do("setup")(fresh())()
        await step.sleep("checkpoint", 1)
        between = await step.do("between")(fresh())()
        checkpoint = await step.do("checkpoint")(fresh())()
        after = await step.do("after")(fresh())()
        return [setup, between, checkpoint, after]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        instance = await h.create(id="RESTART-FROM-STEP-DEFAULT-DO")
        await h.engine.drain()
        before = (await instance.status())["output"]
        await instance.restart({"from": {"name": "checkpoint"}})
        await h.engine.drain()
        after = (await instance.status())["output"]
        assert after[:2] == before[:2]
        assert after[2] != before[2] and after[3] != before[3]
        assert h.step("sleep", "checkpoint", id="RESTART-FROM-STEP-DEFAULT-DO").status == "done"
    arun(main())


def test_restart_from_a_step_that_does_not_exist_throws(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should throw when
    restarting from a non-existing step': the error says the step is not found in the execution
    history (code instance.cannot_restart, the platform's)."""
    async def wf(event, step):
        async def a():
            return "result-a"
        await step.do("step-a")(a)()
        return "done"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        instance = await h.create(id="RESTART-FROM-BAD-STEP")
        await h.engine.drain()
        with pytest.raises(CannotRestartError, match="not found in execution history") as refused:
            await instance.restart({"from": {"name": "nonexistent-step"}})
        assert refused.value.code == "instance.cannot_restart"
        assert (await instance.status())["status"] == "complete"
    arun(main())


# ---- packages/miniflare/test/plugins/workflows/index.spec.ts --------------------------------

async def _lifecycle(event, step):
    """The platform's LIFECYCLE_WORKFLOW_SCRIPT, in Python."""
    if event["payload"].get("selfDelete"):
        await step.wait_for_event("self-delete", "self-delete")
        instance = await _BINDING[0].get(event["instanceId"])
        await instance.delete()
        raise RuntimeError("continued after self-delete")

    def text(value):
        async def body():
            return value
        return body
    await step.do("first step")(text("step-1-done"))()
    await step.do("long step")(text("long-step-done"))()
    await step.do("third step")(text("step-3-done"))()
    return "workflow-complete"

_BINDING: list = []


def _lifecycle_harness(tmp_path) -> Harness:
    h = Harness(tmp_path / "db.sqlite", _lifecycle)
    _BINDING[:] = [h.binding]
    return h


def test_delete_a_workflow(tmp_path):
    """Follows workers-sdk packages/miniflare/test/plugins/workflows/index.spec.ts, 'delete a
    workflow': after delete() nothing of the instance is stored and status fails with
    instance.not_found; deleting an id of no instance fails with instance.not_found too."""
    async def main():
        h = _lifecycle_harness(tmp_path)
        await h.create(id="delete-one")
        assert h.instance_ids() == ["delete-one"]
        await (await h.binding.get("delete-one")).delete()
        assert h.instance_ids() == [] and _gone(h, "delete-one")
        with pytest.raises(InstanceNotFoundError):
            await h.status("delete-one")
        ops = InstanceOps(h.engine.store, control=h.engine.control)
        with pytest.raises(InstanceNotFoundError):
            ops.delete("cron-1786001400000")
    arun(main())


def test_recreate_a_workflow_immediately_after_deletion(tmp_path):
    """Follows workers-sdk packages/miniflare/test/plugins/workflows/index.spec.ts, 'recreates a
    workflow immediately after deletion': the same id is created again at once and completes."""
    async def main():
        h = _lifecycle_harness(tmp_path)
        await h.create(id="delete-recreate")
        await h.engine.drain()
        assert (await h.status("delete-recreate"))["status"] == "complete"
        await (await h.binding.get("delete-recreate")).delete()
        await h.create(id="delete-recreate")
        await h.engine.drain()
        assert (await h.status("delete-recreate"))["status"] == "complete"
        assert h.instance_ids() == ["delete-recreate"]
    arun(main())


def test_delete_a_workflow_from_its_own_execution(tmp_path):
    """Follows workers-sdk packages/miniflare/test/plugins/workflows/index.spec.ts, 'delete a
    workflow from its own execution': the instance waits for an event, then deletes itself; the
    error raised after the delete never happens (it would error the instance), nothing is left
    stored and status fails with instance.not_found."""
    async def main():
        h = _lifecycle_harness(tmp_path)
        await h.create({"selfDelete": True}, id="self-delete")
        await h.engine.drain(jump=False)
        assert h.instance_ids() == ["self-delete"]
        await (await h.binding.get("self-delete")).send_event({"type": "self-delete",
                                                               "payload": {"sent": True}})
        await h.engine.drain()
        assert h.instance_ids() == [] and _gone(h, "self-delete")
        assert not [p for p in h.progress if p.data.get("status") == "errored"]
        with pytest.raises(InstanceNotFoundError):
            await h.status("self-delete")
    arun(main())


def test_delete_multiple_workflows(tmp_path):
    """Follows workers-sdk packages/miniflare/test/plugins/workflows/index.spec.ts, 'delete
    multiple workflows': delete_batch of [delete-1, missing, delete-2, delete-1] reports each
    position (delete-1 twice) and the missing one with 10400; a second batch of the missing id
    through the operation the admin API calls answers normally; both instances are gone. (A
    valid id of no instance stands in for the cron-generated one.)"""
    async def main():
        h = _lifecycle_harness(tmp_path)
        missing = "cron-1786001400000"
        for i in ("delete-1", "delete-2"):
            await h.create(id=i)
        assert sorted(h.instance_ids()) == ["delete-1", "delete-2"]
        assert await h.binding.deleteBatch(["delete-1", missing, "delete-2", "delete-1"]) == {
            "deleted": [{"id": "delete-1"}, {"id": "delete-2"}, {"id": "delete-1"}],
            "errors": [{"id": missing, **NOT_FOUND}]}
        ops = InstanceOps(h.engine.store, control=h.engine.control)
        answer = ops.delete_many([missing])
        assert answer["deleted"] == [] and answer["errors"][0]["code"] == "instance.not_found"
        assert h.instance_ids() == []
        for i in ("delete-1", "delete-2"):
            with pytest.raises(InstanceNotFoundError):
                await h.status(i)
    arun(main())


def test_restart_a_running_workflow(tmp_path):
    """Follows workers-sdk packages/miniflare/test/plugins/workflows/index.spec.ts, 'restart a
    running workflow': once the first step is done, while the long step is in flight, the
    instance is restarted; it runs from scratch to completion with its output."""
    async def main():
        in_long_step, runs = asyncio.Event(), {"long": 0}

        async def wf(event, step):
            async def first():
                return "step-1-done"

            async def long():
                runs["long"] += 1
                if runs["long"] == 1:       # the first run is held here until the restart
                    in_long_step.set()
                    await asyncio.Event().wait()
                return "long-step-done"

            async def third():
                return "step-3-done"
            for name, body in (("first step", first), ("long step", long), ("third step", third)):
                await step.do(name)(body)()
            return "workflow-complete"

        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create(id="restart-test")
        task = h.drain_in_background()
        await asyncio.wait_for(in_long_step.wait(), 10)
        assert h.result("do", "first step", id="restart-test") == "step-1-done"
        instance = await h.binding.get("restart-test")
        await instance.restart()
        assert (await instance.status())["status"] == "running"
        await asyncio.wait_for(task, 10)
        await h.engine.drain()
        assert await instance.status() == {"status": "complete", "error": None,
                                           "output": "workflow-complete"}
        assert runs["long"] == 2
    arun(main())


# ---- fixtures/workflow/tests/index.test.ts --------------------------------------------------

def test_restart_a_running_workflow_waiting_for_an_event(tmp_path):
    """Follows workers-sdk fixtures/workflow/tests/index.test.ts, 'restart a running workflow':
    after the first step, restart; the instance reads running, and an event completes the
    restarted run."""
    async def wf(event, step):
        async def first():
            return {"output": "First step result"}
        await step.do("first step")(first)()
        got = await step.wait_for_event("event", "event", timeout="1 hour")
        return got["payload"]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        instance = await h.create(id="demo2")
        await h.engine.drain(jump=False)
        assert h.result("do", "first step", id="demo2") == {"output": "First step result"}
        await instance.restart()
        assert (await instance.status())["status"] == "running"
        await h.engine.drain(jump=False)
        await instance.send_event({"type": "event", "payload": {"event": True}})
        await h.engine.drain(jump=False)
        assert (await instance.status())["status"] == "complete"
    arun(main())

"""Cloudflare's tests of the Workflow binding and instance handle, as dynwf's conformance suite.

Each test follows one case of workers-sdk ``packages/workflows-shared/tests/binding.test.ts``
(named in its docstring) and asserts the same facts of dynwf's engine (docs/semantics.md §1).
Steps are held in flight with a Gate; time is a virtual clock that stands still. Where dynwf
deliberately differs from the local engine those tests run against, the docstring names the
divergence (docs/semantics.md §10).
"""

from __future__ import annotations

import pytest

from emulator.clock import to_datetime
from engine_harness import T0, Harness, arun
from emulator.errors import InvalidIdError, ValidationError
from platform_harness import Gate, finish


async def returns_payload(event, step):
    return event["payload"]


async def waits_for(event_type: str, timeout: str = "2 seconds"):
    """Waits for one event and returns the whole event, its ``datetime`` timestamp too (§2.11)."""
    async def wf(event, step):
        return await step.wait_for_event("wait-for-event", event_type, timeout=timeout)
    return wf


def test_create_with_provided_id_and_params(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should create an
    instance with provided id and params': create() returns a handle with that id and the
    params come back as event.payload."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", returns_payload)
        created = await h.binding.create({"id": "instance-1", "params": {"key": "test-value"}})
        assert created.id == "instance-1"
        await h.engine.drain()
        status = await (await h.binding.get("instance-1")).status()
        assert status["output"] == {"key": "test-value"}
    arun(main())


def test_workflow_name_is_in_the_event(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should pass the
    workflow name in the event'."""
    async def wf(event, step):
        return event["workflowName"]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.binding.create({"id": "named"})
        await h.engine.drain()
        assert (await h.status("named"))["output"] == "wf"
    arun(main())


def test_create_without_id_generates_one(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should auto-generate
    id when not provided': create() with no options gets a non-empty id and runs to complete."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", returns_payload)
        created = await h.binding.create()
        assert isinstance(created.id, str) and created.id
        await h.engine.drain()
        assert (await (await h.binding.get(created.id)).status())["status"] == "complete"
    arun(main())


def test_create_with_an_invalid_id_is_refused(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should throw
    WorkflowError for invalid instance id': the platform's text, nothing created."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", returns_payload)
        with pytest.raises(InvalidIdError, match="Workflow instance has invalid id"):
            await h.binding.create({"id": "#invalid!"})
        assert h.instance_ids() == []
    arun(main())


def test_get_returns_a_handle_with_the_instance_methods(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should return a
    WorkflowHandle for an existing instance' (``delete`` is left out: instance deletion is built
    separately)."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", returns_payload)
        await h.binding.create({"id": "handle"})
        handle = await h.binding.get("handle")
        assert handle.id == "handle"
        for method in ("status", "pause", "resume", "terminate", "restart", "send_event"):
            assert callable(getattr(handle, method)), method
        await h.engine.drain()
        assert (await handle.status())["status"] == "complete"
    arun(main())


def test_create_batch_creates_every_instance(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should create
    multiple instances in a batch': results in order, each reachable by get() and complete."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", returns_payload)
        ids = ["batch-1", "batch-2", "batch-3"]
        results = await h.binding.create_batch([{"id": i} for i in ids])
        assert [r.id for r in results] == ids
        await h.engine.drain()
        for instance_id in ids:
            handle = await h.binding.get(instance_id)
            assert handle.id == instance_id
            assert (await handle.status())["status"] == "complete"
    arun(main())


def test_create_batch_of_nothing_is_refused(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should throw error
    for empty batch': a batch needs at least one instance."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", returns_payload)
        with pytest.raises(ValidationError, match="create_batch should have at least 1 instance"):
            await h.binding.create_batch([])
        assert h.instance_ids() == []
    arun(main())


def test_status_while_waiting_for_an_event_is_waiting(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should return
    running status for a workflow waiting for an event'. Deliberate divergence (docs/semantics.md
    §10): the local engine reports ``running``; dynwf reports production's ``waiting``. Output is
    None and there is no error, as there."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", await waits_for("some-event"))
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "waiting", "error": None, "output": None}
        await (await h.binding.get("i1")).terminate()
        assert (await h.status())["status"] == "terminated"
    arun(main())


def test_status_of_a_successful_workflow(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should return
    complete status and output for a successful workflow'."""
    async def wf(event, step):
        return {"result": "success", "value": 42}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None,
                                    "output": {"result": "success", "value": 42}}
    arun(main())


def test_status_of_a_failed_workflow(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should return
    errored status and error for a failed workflow'."""
    async def wf(event, step):
        raise RuntimeError("Workflow failed intentionally")

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        status = await h.status()
        assert status["status"] == "errored" and status["output"] is None
        assert status["error"]["message"] == "Workflow failed intentionally"
    arun(main())


def test_status_has_no_local_dev_step_outputs(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should return step
    outputs in __LOCAL_DEV_STEP_OUTPUTS'. Deliberate divergence (docs/semantics.md §9 item 8,
    §10): the status record has production's three keys only; the step outputs the local engine
    adds are read from the step records instead (here the store, in tests the introspector)."""
    async def wf(event, step):
        @step.do("step-1")
        async def one():
            return "result-from-step-1"

        @step.do("step-2")
        async def two():
            return {"data": "result-from-step-2"}

        @step.do("step-3")
        async def three():
            return 123
        return {"step1Result": await one(), "step2Result": await two(),
                "step3Result": await three()}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        status = await h.status()
        assert set(status) == {"status", "error", "output"}
        assert status["status"] == "complete"
        assert [h.result("do", f"step-{n}") for n in (1, 2, 3)] == [
            "result-from-step-1", {"data": "result-from-step-2"}, 123]
    arun(main())


def test_status_of_a_terminated_instance(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should return
    terminated status for a terminated instance': a fresh handle reads ``terminated``."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", await waits_for("some-event", "1 second"))
        await h.create()
        await h.engine.drain()
        await (await h.binding.get("i1")).terminate()
        assert (await (await h.binding.get("i1")).status())["status"] == "terminated"
    arun(main())


def test_send_event_delivers_its_payload_to_a_waiting_workflow(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should deliver event
    payload to a waiting workflow': run() returns the event wait_for_event gave it, whole: its
    type, payload and timestamp (a datetime, stored and returned as one, §2.11)."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", await waits_for("my-event-type"))
        await h.create()
        await h.engine.drain()
        handle = await h.binding.get("i1")
        await handle.send_event({"type": "my-event-type", "payload": {"message": "hello", "count": 42}})
        await h.engine.drain()
        status = await handle.status()
        assert status["status"] == "complete"
        assert status["output"]["type"] == "my-event-type"
        assert status["output"]["payload"] == {"message": "hello", "count": 42}
        assert status["output"]["timestamp"] == to_datetime(T0)    # sent at T0, the clock stood
    arun(main())


def test_multiple_sequential_events(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should handle
    multiple sequential events': the second is sent once the second wait has started."""
    async def wf(event, step):
        first = await step.wait_for_event("wait-1", "event-type-1", timeout="10 seconds")
        second = await step.wait_for_event("wait-2", "event-type-2", timeout="10 seconds")
        return {"first": first["payload"], "second": second["payload"]}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        handle = await h.binding.get("i1")
        await h.engine.drain()
        assert len(h.events("step.waiting")) == 1
        await handle.send_event({"type": "event-type-1", "payload": {"value": "first"}})
        await h.engine.drain()
        assert len(h.events("step.waiting")) == 2
        await handle.send_event({"type": "event-type-2", "payload": {"value": "second"}})
        await h.engine.drain()
        assert await handle.status() == {"status": "complete", "error": None, "output": {
            "first": {"value": "first"}, "second": {"value": "second"}}}
    arun(main())


def test_terminate_while_waiting_never_starts_the_next_step(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should terminate a
    running workflow instance': ``terminated``, and the step after the wait never started."""
    async def wf(event, step):
        await step.wait_for_event("wait-for-event", "some-event", timeout="1 second")

        @step.do("should not be called")
        async def never():
            return "should not be called"
        await never()
        return "should never complete"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        await (await h.binding.get("i1")).terminate()
        await h.engine.drain()
        assert (await h.status())["status"] == "terminated"
        assert h.statuses()[-1] == "terminated"
        assert h.events("step.started") == []
        assert h.step("do", "should not be called") is None
    arun(main())


def test_restart_runs_a_complete_instance_again(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should restart a
    workflow instance': a complete instance restarted reads running right after restart()
    (§1.7, §4.6) and runs to complete again."""
    runs = {"n": 0}

    async def wf(event, step):
        runs["n"] += 1
        await step.sleep("sleep", 250)
        return "complete"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        handle = await h.binding.get("i1")
        assert (await handle.status())["status"] == "complete"
        await handle.restart()
        assert (await handle.status())["status"] == "running"
        await h.engine.drain()
        assert await (await h.binding.get("i1")).status() == {
            "status": "complete", "error": None, "output": "complete"}
        assert runs["n"] >= 2 and h.statuses().count("complete") == 2
    arun(main())


def long_step_then(gate: Gate, calls: dict[str, int], result: str):
    async def wf(event, step):
        @step.do("long-step")
        async def long_step():
            await gate.hold()
            return "result-1"

        @step.do("step-2")
        async def step_2():
            calls["step-2"] = calls.get("step-2", 0) + 1
            return "result-2"
        await long_step()
        await step_2()
        return result
    return wf


def test_pause_a_running_workflow(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should pause a
    running workflow': paused after the step in flight, and the next step never ran."""
    async def main():
        gate, calls = Gate(), {}
        h = Harness(tmp_path / "db.sqlite", long_step_then(gate, calls, "done"))
        await h.create()
        task = h.drain_in_background()
        await gate.wait_started()
        await (await h.binding.get("i1")).pause()
        gate.release.set()
        await finish(task)
        assert (await h.status())["status"] == "paused"
        assert calls == {} and h.step("do", "step-2") is None
    arun(main())


def test_resume_a_paused_workflow_and_complete_it(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should resume a
    paused workflow and complete it'."""
    async def main():
        gate, calls = Gate(), {}
        h = Harness(tmp_path / "db.sqlite", long_step_then(gate, calls, "all-done"))
        await h.create()
        task = h.drain_in_background()
        await gate.wait_started()
        handle = await h.binding.get("i1")
        await handle.pause()
        gate.release.set()
        await finish(task)
        assert (await handle.status())["status"] == "paused"
        await handle.resume()
        await h.engine.drain()
        assert await handle.status() == {"status": "complete", "error": None, "output": "all-done"}
        assert calls == {"step-2": 1}
    arun(main())


def test_resume_before_the_step_finishes_cancels_the_pending_pause(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/binding.test.ts, 'should cancel a
    pending pause when resume is called before step finishes': ``waitingForPause`` after pause,
    ``running`` after resume, then complete."""
    async def main():
        gate, calls = Gate(), {}
        h = Harness(tmp_path / "db.sqlite", long_step_then(gate, calls, "completed"))
        await h.create()
        task = h.drain_in_background()
        await gate.wait_started()
        handle = await h.binding.get("i1")
        await handle.pause()
        assert (await handle.status())["status"] == "waitingForPause"
        await handle.resume()
        assert (await handle.status())["status"] == "running"
        gate.release.set()
        await finish(task)
        assert await handle.status() == {"status": "complete", "error": None, "output": "completed"}
    arun(main())

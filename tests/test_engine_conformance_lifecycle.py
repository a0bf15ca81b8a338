"""Conformance of instances, replay and limits to the platform's semantics, item by item.

Section numbers (§) are those of docs/semantics.md. Covers §1.2-§1.4 (binding and instance
methods, the status shape and every reachable status: queued, running, waiting, waitingForPause,
paused, errored, terminated, complete), §4 (replay, restarts of the engine, parallel steps,
pause/resume/terminate/restart against running steps) and §5 (ids, event types, step names, 1 MiB
payloads, create_batch, the step limit). Each test names the section it proves. Steps are held in
flight with an asyncio.Event, never with real sleeps; time is a VirtualClock that stands still.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timezone
from typing import Callable

import pytest

from engine_harness import FATAL, HOUR, MINUTE, SECOND, T0, Harness, arun
from emulator.engine import WorkflowDefinition
from emulator.rules.limits import DEFAULT_STEP_LIMIT
from emulator.errors import (InstanceAlreadyExistsError, InstanceFinishedError,
                             InstanceNotFoundError, InvalidEventTypeError, InvalidIdError,
                             PayloadTooLargeError, ValidationError)

#: every test here runs on both stores, through the harness (tests/conftest.py store_factory)
pytestmark = pytest.mark.usefixtures("store_factory")

MIB = 1024 * 1024
ID_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9-_]*$")


class Gate:
    """Holds a step body in flight until the test releases it."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = False

    async def hold(self) -> None:
        self.started.set()
        await self.release.wait()
        self.finished = True

    async def wait_started(self) -> None:
        await asyncio.wait_for(self.started.wait(), 10)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the event loop run until ``condition`` holds (no wall-clock sleeping)."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def finish(task: "asyncio.Task[None]") -> None:
    await asyncio.wait_for(task, 10)


async def errored_with(h: Harness, name: str, id: str = "i1") -> dict[str, str]:
    status = await h.status(id)
    assert status["status"] == "errored", status
    assert status["output"] is None
    assert status["error"]["name"] == name, status
    return status["error"]


async def simple(event, step):
    @step.do("only")
    async def only():
        return event["payload"]
    return await only()


async def sleeper(event, step):
    await step.sleep("nap", "1 hour")
    return "woke"


async def waiter(event, step):
    got = await step.wait_for_event("w", "go", timeout="1 hour")
    return got["payload"]


# ---- §1.2 binding -------------------------------------------------------------------------

def test_s1_2_create_returns_instance_with_id_and_queued_status(tmp_path):
    """§1.2/§1.3/§1.4: create() returns an instance whose ``id`` is a plain attribute; before it
    runs its status is exactly {"status": "queued", "error": None, "output": None}."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", simple)
        inst = await h.create({"n": 1}, id="order-1")
        assert inst.id == "order-1"
        assert await inst.status() == {"status": "queued", "error": None, "output": None}
    arun(main())


def test_s1_2_create_without_id_generates_a_valid_id(tmp_path):
    """§1.2: an omitted id is generated; generated ids are unique and valid ids."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", simple)
        first = await h.binding.create({"params": {"n": 1}})
        second = await h.binding.create()
        assert first.id != second.id
        for inst in (first, second):
            assert ID_RE.match(inst.id) and len(inst.id) <= 100
            assert (await inst.status())["status"] == "queued"
    arun(main())


def test_s1_2_get_returns_the_instance_and_unknown_id_raises(tmp_path):
    """§1.2: get(id) returns a handle on an existing instance and raises instance.not_found
    for an id that does not exist."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", simple)
        await h.create({"n": 1})
        await h.engine.drain()
        inst = await h.binding.get("i1")
        assert inst.id == "i1"
        assert await inst.status() == {"status": "complete", "error": None, "output": {"n": 1}}
        with pytest.raises(InstanceNotFoundError) as info:
            await h.binding.get("missing")
        assert info.value.code == "instance.not_found"
    arun(main())


def test_s1_2_duplicate_create_raises_already_exists(tmp_path):
    """§1.2 + docs/semantics.md §9: create() with an id in use raises instance.already_exists and leaves the
    existing instance untouched."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", simple)
        await h.create({"n": 1})
        with pytest.raises(InstanceAlreadyExistsError) as info:
            await h.create({"n": 2})
        assert info.value.code == "instance.already_exists"
        await h.engine.drain()
        assert (await h.status())["output"] == {"n": 1}
        assert h.instance_ids() == ["i1"]
    arun(main())


def test_s1_2_create_batch_skips_duplicates_and_leaves_them_out(tmp_path):
    """§1.2 + docs/semantics.md §9: create_batch skips ids already in use (also repeated within the batch)
    and leaves them out of the returned list."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", simple)
        await h.create({"n": 0}, id="a")
        created = await h.binding.create_batch([
            {"id": "a", "params": {"n": 1}}, {"id": "b", "params": {"n": 2}},
            {"id": "c", "params": {"n": 3}}, {"id": "b", "params": {"n": 4}}])
        assert [inst.id for inst in created] == ["b", "c"]
        await h.engine.drain()
        assert [(await h.status(i))["output"] for i in ("a", "b", "c")] == [{"n": 0}, {"n": 2},
                                                                           {"n": 3}]
    arun(main())


def test_s2_1_event_fields(tmp_path):
    """§2.1 + docs/architecture.md §5: run() receives payload (the params), timestamp (creation time, naive
    UTC datetime), instanceId and workflowName."""
    async def wf(event, step):
        return {"payload": event["payload"], "instanceId": event["instanceId"],
                "workflowName": event["workflowName"],
                "timestamp": event["timestamp"].isoformat(),
                "naive": event["timestamp"].tzinfo is None}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create({"name": "py"})
        h.clock.advance(5 * SECOND)
        await h.engine.drain()
        created = datetime.fromtimestamp(T0 / 1000, tz=timezone.utc).replace(tzinfo=None)
        assert (await h.status())["output"] == {
            "payload": {"name": "py"}, "instanceId": "i1", "workflowName": "wf",
            "timestamp": created.isoformat(), "naive": True}
    arun(main())


# ---- §1.4 status values -------------------------------------------------------------------

def test_s1_4_status_running_while_a_step_is_in_flight(tmp_path):
    """§1.4: ``running`` while run() is executing a step."""
    async def main():
        gate = Gate()

        async def wf(event, step):
            @step.do("held")
            async def held():
                await gate.hold()
                return "h"
            return await held()
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        task = h.drain_in_background()
        await gate.wait_started()
        assert await inst.status() == {"status": "running", "error": None, "output": None}
        gate.release.set()
        await finish(task)
        assert await inst.status() == {"status": "complete", "error": None, "output": "h"}
    arun(main())


def test_s1_4_status_waiting_while_sleeping(tmp_path):
    """§1.4 + docs/semantics.md §9: ``waiting`` while sleeping."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", sleeper)
        await h.create()
        await h.engine.drain(jump=False)
        assert await h.status() == {"status": "waiting", "error": None, "output": None}
    arun(main())


def test_s1_4_status_waiting_while_waiting_for_an_event(tmp_path):
    """§1.4 + docs/semantics.md §9: ``waiting`` while waiting for an event."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", waiter)
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "waiting", "error": None, "output": None}
    arun(main())


@pytest.mark.parametrize("delay, status", [("1 minute", "running"), ("1 hour", "waiting")])
def test_s1_4_status_while_backing_off(tmp_path, delay, status):
    """§1.3 + §4.9: ``running`` while a short retry delay is held in the invocation, ``waiting``
    while a long one has hibernated."""
    calls = {"flaky": 0}
    ms = {"1 minute": MINUTE, "1 hour": HOUR}[delay]

    async def wf(event, step):
        @step.do("flaky", config={"retries": {"limit": 1, "delay": delay}})
        async def flaky():
            calls["flaky"] += 1
            if calls["flaky"] == 1:
                raise ValueError("down")
            return "up"
        return await flaky()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain(jump=False)
        assert await h.status() == {"status": status, "error": None, "output": None}
        assert h.timers() == [("retry", ("do", "flaky", 1), T0 + ms)]
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": "up"}
    arun(main())


def test_s1_4_status_complete_with_and_without_output(tmp_path):
    """§1.4: ``complete`` carries run()'s return value as ``output`` (None when it returns None)."""
    async def nothing(event, step):
        return None

    async def main():
        h = Harness(tmp_path / "db.sqlite", simple)
        await h.create({"x": [1, "two"]})
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": {"x": [1, "two"]}}
        h2 = Harness(tmp_path / "db2.sqlite", nothing)
        await h2.create()
        await h2.engine.drain()
        assert await h2.status() == {"status": "complete", "error": None, "output": None}
    arun(main())


def test_s1_4_status_errored_error_shape(tmp_path):
    """§1.4: an exception escaping run() gives ``errored`` with error {"name", "message"}."""
    async def wf(event, step):
        raise KeyError("missing-field")

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "errored", "output": None,
                                    "error": {"name": "KeyError", "message": "missing-field"}}
    arun(main())


def test_s1_4_non_serialisable_output_errors_instance(tmp_path):
    """§1.4: run() returning a value that cannot be stored errors the instance (fatal)."""
    async def wf(event, step):
        return {"handle": object()}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        await errored_with(h, FATAL)
    arun(main())


def test_s1_4_status_terminated(tmp_path):
    """§1.4: ``terminated`` after terminate(); no error and no output."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", sleeper)
        inst = await h.create()
        await h.engine.drain(jump=False)
        await inst.terminate()
        assert await inst.status() == {"status": "terminated", "error": None, "output": None}
    arun(main())


def test_s1_4_status_progress_sequence(tmp_path):
    """§1.4: a simple instance goes queued -> running -> complete; a sleeping one passes through
    waiting; every published status is one of the platform's values."""
    allowed = {"queued", "running", "paused", "errored", "terminated", "complete", "waiting",
               "waitingForPause", "unknown"}

    async def main():
        h = Harness(tmp_path / "db.sqlite", simple)
        await h.create()
        await h.engine.drain()
        assert h.statuses() == ["queued", "running", "complete"]
        h2 = Harness(tmp_path / "db2.sqlite", sleeper)
        await h2.create()
        await h2.engine.drain()
        assert h2.statuses()[:3] == ["queued", "running", "waiting"]
        assert h2.statuses()[-1] == "complete"
        assert set(h2.statuses()) <= allowed
    arun(main())


# ---- §1.3 instance methods ----------------------------------------------------------------

def test_s1_3_pause_queued_instance_pauses_at_once(tmp_path):
    """§1.3/§4.6: pausing an instance that has not started pauses it at once; it does not run."""
    calls = {"run": 0}

    async def wf(event, step):
        calls["run"] += 1
        return "ran"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await inst.pause()
        assert await inst.status() == {"status": "paused", "error": None, "output": None}
        await h.engine.drain()
        assert calls["run"] == 0
        await inst.resume()
        assert (await inst.status())["status"] == "queued"
        await h.engine.drain()
        assert await inst.status() == {"status": "complete", "error": None, "output": "ran"}
    arun(main())


def test_s1_3_pause_stops_a_sleeping_instance_clock(tmp_path):
    """§1.3/§4.6 + §9.18: pausing a sleeping instance pauses it at once; its sleep keeps its
    remaining time after resume (timers shift by the paused duration)."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", sleeper)
        inst = await h.create()
        await h.engine.drain(jump=False)
        h.clock.advance(10 * MINUTE)
        await inst.pause()
        assert (await inst.status())["status"] == "paused"
        await h.drain_moving_clock()                      # nothing to jump to while paused
        assert (await inst.status())["status"] == "paused"
        h.clock.advance(30 * MINUTE)
        await h.engine.drain(jump=False)
        assert (await inst.status())["status"] == "paused"
        await inst.resume()
        assert h.timers() == [("sleep", ("sleep", "nap", 1), T0 + HOUR + 30 * MINUTE)]
        await h.drain_moving_clock()
        assert await inst.status() == {"status": "complete", "error": None, "output": "woke"}
        assert h.step("sleep", "nap").ended_at == T0 + 90 * MINUTE
    arun(main())


def test_s1_3_event_sent_to_paused_instance_is_delivered_after_resume(tmp_path):
    """§1.3: a paused instance accepts events; it goes on with them once resumed."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", waiter)
        inst = await h.create()
        await h.engine.drain()
        await inst.pause()
        await inst.send_event({"type": "go", "payload": "yes"})
        await h.engine.drain()
        assert (await inst.status())["status"] == "paused"
        await inst.resume()
        await h.engine.drain()
        assert await inst.status() == {"status": "complete", "error": None, "output": "yes"}
    arun(main())


def test_s1_3_resume_of_a_non_paused_instance_is_a_no_op(tmp_path):
    """§1.3 + docs/semantics.md §9: resume() of an instance that is not paused changes nothing."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", sleeper)
        inst = await h.create()
        await inst.resume()
        assert (await inst.status())["status"] == "queued"
        await h.engine.drain(jump=False)
        await inst.resume()
        assert (await inst.status())["status"] == "waiting"
        await h.engine.drain()
        await inst.resume()
        assert await inst.status() == {"status": "complete", "error": None, "output": "woke"}
    arun(main())


def test_s1_3_pause_of_a_finished_instance_is_a_no_op(tmp_path):
    """§1.3/§4.6: pause() of a complete instance changes nothing."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", simple)
        inst = await h.create({"n": 1})
        await h.engine.drain()
        await inst.pause()
        assert await inst.status() == {"status": "complete", "error": None, "output": {"n": 1}}
    arun(main())


@pytest.mark.parametrize("final", ["complete", "errored", "terminated"])
def test_s1_3_terminate_a_finished_instance_raises(tmp_path, final):
    """§1.3: terminate() of a complete, errored or terminated instance raises
    instance.cannot_terminate and changes nothing."""
    async def wf(event, step):
        if event["payload"]["fail"]:
            raise ValueError("nope")
        await step.sleep("nap", "1 hour")
        return "ok"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create({"fail": final == "errored"})
        if final == "terminated":
            await inst.terminate()
        else:
            await h.engine.drain()
        before = await inst.status()
        assert before["status"] == final
        with pytest.raises(InstanceFinishedError) as info:
            await inst.terminate()
        assert info.value.code == "instance.cannot_terminate"
        assert await inst.status() == before
    arun(main())


def test_s1_3_terminate_a_waiting_instance(tmp_path):
    """§1.3: terminate() of a sleeping instance ends it; its timers are gone; it never resumes."""
    calls = {"after": 0}

    async def wf(event, step):
        await step.sleep("nap", "1 hour")

        @step.do("after")
        async def after():
            calls["after"] += 1
        await after()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await h.engine.drain(jump=False)
        await inst.terminate()
        assert h.timers() == []
        await inst.resume()
        await h.engine.drain()
        assert (await inst.status())["status"] == "terminated"
        assert calls["after"] == 0
    arun(main())


def test_s1_3_terminate_a_paused_instance(tmp_path):
    """§1.3: terminate() of a paused instance ends it."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", sleeper)
        inst = await h.create()
        await h.engine.drain(jump=False)
        await inst.pause()
        await inst.terminate()
        await inst.resume()
        await h.engine.drain()
        assert (await inst.status())["status"] == "terminated"
    arun(main())


def test_s1_3_terminate_a_queued_instance_it_never_runs(tmp_path):
    """§1.3: terminate() of an instance that has not started: it never runs."""
    calls = {"run": 0}

    async def wf(event, step):
        calls["run"] += 1

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await inst.terminate()
        await h.engine.drain()
        assert (await inst.status())["status"] == "terminated"
        assert calls["run"] == 0
    arun(main())


@pytest.mark.parametrize("final", ["complete", "errored", "terminated"])
def test_s1_3_send_event_to_a_finished_instance_raises(tmp_path, final):
    """§1.3 + docs/semantics.md §9: send_event to a complete, errored or terminated instance raises."""
    async def wf(event, step):
        if event["payload"]["fail"]:
            raise ValueError("nope")
        return "done"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create({"fail": final == "errored"})
        if final == "terminated":
            await inst.terminate()
        await h.engine.drain()
        assert (await inst.status())["status"] == final
        with pytest.raises(InstanceFinishedError):
            await inst.send_event({"type": "go", "payload": 1})
    arun(main())


def test_s1_3_restart_reruns_a_complete_instance_with_same_params(tmp_path):
    """§1.3/§4.6 + docs/semantics.md §9: restart() erases step state and runs again with the same params."""
    calls = {"double": 0}

    async def wf(event, step):
        @step.do("double")
        async def double():
            calls["double"] += 1
            return event["payload"]["n"] * 2
        return await double()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create({"n": 21})
        await h.engine.drain()
        assert (await inst.status())["output"] == 42
        await inst.restart()
        # the platform's tests read "running" right after restart() resolves
        assert await inst.status() == {"status": "running", "error": None, "output": None}
        assert h.step_keys() == []
        await h.engine.drain()
        assert await inst.status() == {"status": "complete", "error": None, "output": 42}
        assert calls["double"] == 2
        assert h.step("do", "double").attempts == 1
    arun(main())


def test_s1_3_restart_an_errored_instance(tmp_path):
    """§1.3/§4.6: restart() works from errored too (any state)."""
    state = {"broken": True}

    async def wf(event, step):
        @step.do("work", config={"retries": {"limit": 0, "delay": 0}})
        async def work():
            if state["broken"]:
                raise ValueError("broken")
            return "fixed"
        return await work()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await h.engine.drain()
        assert (await inst.status())["status"] == "errored"
        state["broken"] = False
        await inst.restart()
        await h.engine.drain()
        assert await inst.status() == {"status": "complete", "error": None, "output": "fixed"}
    arun(main())


def test_s1_3_restart_wipes_buffered_events(tmp_path):
    """§4.6: restart() erases intermediate state, buffered events included."""
    async def wf(event, step):
        await step.sleep("first", "1 minute")
        got = await step.wait_for_event("w", "go")
        return got["payload"]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await h.engine.drain(jump=False)
        await inst.send_event({"type": "go", "payload": "buffered"})
        await inst.restart()
        await h.engine.drain()
        assert (await inst.status())["status"] == "waiting"
        assert h.step("wait", "w").status == "waiting"
        await inst.send_event({"type": "go", "payload": "fresh"})
        await h.engine.drain()
        assert (await inst.status())["output"] == "fresh"
    arun(main())


# ---- §4 replay ----------------------------------------------------------------------------

def test_s4_1_committed_step_not_rerun_after_engine_restart(tmp_path):
    """§4.1/§4.4: after the engine restarts (a new Engine on the same file) run() replays from the
    top: committed steps return their stored results without running; code outside steps runs
    again."""
    calls = {"run": 0, "a": 0, "b": 0}

    async def wf(event, step):
        calls["run"] += 1

        @step.do("a")
        async def a():
            calls["a"] += 1
            return event["payload"]["n"] + 1
        await a()
        await step.sleep("nap", "1 day")

        @step.do("b")
        async def b(a):
            calls["b"] += 1
            return a * 10
        return await b()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create({"n": 1})
        await h.engine.drain(jump=False)
        assert (await h.status())["status"] == "waiting"
        h.restart_engine()
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": 20}
        assert calls == {"run": 2, "a": 1, "b": 1}
        assert ("do", "a", 1) in [p.step for p in h.events("step.replayed")]
    arun(main())


def test_s4_1_code_outside_steps_runs_once_per_lifetime(tmp_path):
    """§4.1: code outside steps runs again on every replay (here: one per sleep wake-up)."""
    calls = {"run": 0}

    async def wf(event, step):
        calls["run"] += 1
        for i in range(3):
            await step.sleep(f"nap-{i}", "1 minute")
        return calls["run"]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == 4
    arun(main())


def test_s4_4_engine_stopped_mid_step_counts_the_attempt_as_failed(tmp_path):
    """§4.4: an engine that stops during an attempt loses no committed step; the interrupted
    attempt counts as failed and is retried by the next engine per the step's config."""
    async def main():
        gate = Gate()
        calls = {"a": 0, "b": 0}

        async def wf(event, step):
            @step.do("a")
            async def a():
                calls["a"] += 1
                return 1

            @step.do("b")
            async def b():
                calls["b"] += 1
                if calls["b"] == 1:
                    await gate.hold()
                return 2
            return [await a(), await b()]
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        task = h.drain_in_background()
        await gate.wait_started()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await h.engine.shutdown()
        h.restart_engine()
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": [1, 2]}
        assert calls == {"a": 1, "b": 2}
        assert h.step("do", "b").attempts == 2
        (failed,) = h.events("step.attempt_failed")
        assert failed.step == ("do", "b", 1)
        assert failed.data["error"]["name"] == "WorkflowInternalError"
        assert failed.data["next_attempt_at"] - failed.at == 10_000
    arun(main())


def test_s4_5_gather_of_same_name_steps_counted_in_call_order(tmp_path):
    """§4.5 + §9.10: steps started together with asyncio.gather get their counts in call order,
    not completion order, and replay (in a new engine) maps results back the same way."""
    order: list[str] = []

    async def wf(event, step):
        gate = asyncio.Event()

        @step.do("x")
        async def first():
            await gate.wait()
            order.append("first")
            return "A"

        @step.do("x")
        async def second():
            order.append("second")
            gate.set()
            return "B"
        results = await asyncio.gather(first(), second())
        await step.sleep("nap", "1 minute")
        return results

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain(jump=False)
        assert order == ["second", "first"]
        assert h.result("do", "x", 1) == "A"
        assert h.result("do", "x", 2) == "B"
        h.restart_engine()
        await h.engine.drain()
        assert (await h.status())["output"] == ["A", "B"]
        assert order == ["second", "first"]
    arun(main())


def test_s4_5_gather_of_distinct_steps(tmp_path):
    """§4.5: steps run in parallel with asyncio.gather are independent cached steps."""
    calls = {"n": 0}

    async def wf(event, step):
        async def one(i):
            @step.do(f"part-{i}")
            async def part():
                calls["n"] += 1
                return i * i
            return await part()
        squares = await asyncio.gather(*(one(i) for i in range(5)))
        await step.sleep("nap", "1 minute")
        return squares

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == [0, 1, 4, 9, 16]
        assert calls["n"] == 5
    arun(main())


def test_s4_6_pause_waits_for_the_in_flight_step(tmp_path):
    """§4.6 + docs/semantics.md §9: pause() during a step gives ``waitingForPause``; the step finishes and
    is committed, no new step starts, then the instance is ``paused``; resume() goes on without
    re-running the committed step."""
    async def main():
        gate = Gate()
        calls = {"held": 0, "after": 0}

        async def wf(event, step):
            @step.do("held")
            async def held():
                calls["held"] += 1
                await gate.hold()
                return "h"

            @step.do("after")
            async def after():
                calls["after"] += 1
                return "a"
            return [await held(), await after()]
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        task = h.drain_in_background()
        await gate.wait_started()
        await inst.pause()
        assert await inst.status() == {"status": "waitingForPause", "error": None, "output": None}
        gate.release.set()
        await finish(task)
        assert await inst.status() == {"status": "paused", "error": None, "output": None}
        assert h.result("do", "held") == "h"
        assert h.step("do", "after") is None and calls["after"] == 0
        await inst.resume()
        await h.engine.drain()
        assert await inst.status() == {"status": "complete", "error": None, "output": ["h", "a"]}
        assert calls == {"held": 1, "after": 1}
    arun(main())


def test_s4_6_pause_waits_for_all_concurrent_in_flight_steps(tmp_path):
    """§4.5/§4.6: with several steps in flight, pause lands only when the last one finished."""
    async def main():
        g1, g2 = Gate(), Gate()

        async def wf(event, step):
            @step.do("one")
            async def one():
                await g1.hold()
                return 1

            @step.do("two")
            async def two():
                await g2.hold()
                return 2

            @step.do("three")
            async def three():
                return 3
            pair = await asyncio.gather(one(), two())
            return [*pair, await three()]
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        task = h.drain_in_background()
        await g1.wait_started()
        await g2.wait_started()
        await inst.pause()
        g1.release.set()
        await until(lambda: (h.step("do", "one") or None) is not None
                    and h.step("do", "one").status == "done", "step one committed")
        assert (await inst.status())["status"] == "waitingForPause"
        g2.release.set()
        await finish(task)
        assert (await inst.status())["status"] == "paused"
        assert (h.result("do", "one"), h.result("do", "two")) == (1, 2)
        assert h.step("do", "three") is None
        await inst.resume()
        await h.engine.drain()
        assert (await inst.status())["output"] == [1, 2, 3]
    arun(main())


def test_s4_6_resume_during_waiting_for_pause_cancels_the_pause(tmp_path):
    """§4.6: resume() while ``waitingForPause`` cancels the pending pause (back to running)."""
    async def main():
        gate = Gate()

        async def wf(event, step):
            @step.do("held")
            async def held():
                await gate.hold()
                return "h"

            @step.do("after")
            async def after():
                return "a"
            return [await held(), await after()]
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        task = h.drain_in_background()
        await gate.wait_started()
        await inst.pause()
        await inst.resume()
        assert (await inst.status())["status"] == "running"
        gate.release.set()
        await finish(task)
        assert await inst.status() == {"status": "complete", "error": None, "output": ["h", "a"]}
    arun(main())


def test_s4_6_terminate_stops_an_in_flight_step_at_once(tmp_path):
    """§4.6 + docs/semantics.md §9: terminate() during a step ends the instance at once; the step's body is
    cancelled and its result never committed; nothing runs afterwards."""
    async def main():
        gate = Gate()
        calls = {"held": 0, "after": 0}

        async def wf(event, step):
            @step.do("held")
            async def held():
                calls["held"] += 1
                await gate.hold()
                return "h"

            @step.do("after")
            async def after():
                calls["after"] += 1
            await held()
            await after()
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        task = h.drain_in_background()
        await gate.wait_started()
        await inst.terminate()
        assert await inst.status() == {"status": "terminated", "error": None, "output": None}
        await finish(task)
        assert gate.finished is False
        gate.release.set()
        await h.engine.drain()
        assert (await inst.status())["status"] == "terminated"
        row = h.step("do", "held")
        assert row is None or (row.status != "done" and row.result is None)
        assert calls == {"held": 1, "after": 0}
    arun(main())


def test_s4_6_restart_cancels_the_in_flight_step_and_runs_again(tmp_path):
    """§4.6: restart() during a step cancels it, erases state and runs from the top again."""
    async def main():
        gate = Gate()
        calls = {"held": 0}

        async def wf(event, step):
            @step.do("held")
            async def held():
                calls["held"] += 1
                if calls["held"] == 1:
                    await gate.hold()
                return calls["held"]
            return await held()
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        task = h.drain_in_background()
        await gate.wait_started()
        await inst.restart()
        await finish(task)
        await h.engine.drain()
        assert await inst.status() == {"status": "complete", "error": None, "output": 2}
        assert gate.finished is False
        row = h.step("do", "held")
        assert (row.attempts, json.loads(row.result)) == (1, 2)
    arun(main())


def test_s4_6_pause_during_retry_backoff_pauses_at_once(tmp_path):
    """§4.6 + §9.18 + §4.9: a retry back-off is interrupted by pause at once (held in the
    invocation, it is ``waitingForPause`` until the engine stops the invocation, with no step in
    flight); after resume the retry happens with the remaining delay."""
    calls = {"flaky": 0}

    async def wf(event, step):
        @step.do("flaky", config={"retries": {"limit": 1, "delay": "1 minute",
                                              "backoff": "constant"}})
        async def flaky():
            calls["flaky"] += 1
            if calls["flaky"] == 1:
                raise ValueError("down")
            return "up"
        return await flaky()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await h.engine.drain(jump=False)
        await inst.pause()
        await h.engine.drain(jump=False)
        assert (await inst.status())["status"] == "paused"
        h.clock.advance(HOUR)
        await h.engine.drain(jump=False)
        assert calls["flaky"] == 1
        await inst.resume()
        await h.engine.drain(jump=False)
        assert calls["flaky"] == 1          # 1 minute of back-off is still left
        await h.drain_moving_clock()
        assert await inst.status() == {"status": "complete", "error": None, "output": "up"}
        assert h.clock.now_ms() == T0 + HOUR + MINUTE
    arun(main())


# ---- §5 limits ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["", "-leading-dash", "has space", "a.b", "a/b", "x" * 101,
                                 "naïve", 42])
def test_s5_invalid_instance_ids_refused(tmp_path, bad):
    """§5 + docs/semantics.md §9: ids must match ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$ with 1-100 characters;
    anything else is refused with instance.invalid_id and nothing is written."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", simple)
        with pytest.raises(InvalidIdError) as info:
            await h.binding.create({"id": bad, "params": {}})
        assert info.value.code == "instance.invalid_id"
        with pytest.raises(InvalidIdError):
            await h.binding.create_batch([{"id": "fine"}, {"id": bad}])
        assert h.instance_ids() == []
    arun(main())


@pytest.mark.parametrize("good", ["a", "_x", "0", "A-b_9", "x" * 100])
def test_s5_valid_instance_ids_accepted(tmp_path, good):
    """§5: valid ids, up to 100 characters, are accepted."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", simple)
        inst = await h.binding.create({"id": good, "params": {"n": 1}})
        assert inst.id == good
        await h.engine.drain()
        assert (await inst.status())["output"] == {"n": 1}
    arun(main())


@pytest.mark.parametrize("bad", ["a.b", "", "-x", "has space", "x" * 101, None, 7])
def test_s5_invalid_event_types_refused_by_send_event(tmp_path, bad):
    """§2.8/§5: event types must match the id pattern with at most 100 characters (no dots);
    a bad one is refused with event.invalid_type and nothing is delivered or buffered."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", waiter)
        inst = await h.create()
        await h.engine.drain()
        with pytest.raises(InvalidEventTypeError) as info:
            await inst.send_event({"type": bad, "payload": "x"})
        assert info.value.code == "event.invalid_type"
        assert h.step("wait", "w").status == "waiting"
        await inst.send_event({"type": "go", "payload": "real"})
        await h.engine.drain()
        assert (await inst.status())["output"] == "real"
    arun(main())


def test_s5_event_type_of_100_characters_accepted(tmp_path):
    """§5: an event type of exactly 100 characters is valid."""
    long_type = "t" * 100

    async def wf(event, step):
        return (await step.wait_for_event("w", long_type))["payload"]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await h.engine.drain()
        await inst.send_event({"type": long_type, "payload": 1})
        await h.engine.drain()
        assert (await inst.status())["output"] == 1
    arun(main())


def test_s5_wait_for_event_with_invalid_type_errors_instance(tmp_path):
    """§2.8/§5: wait_for_event with an invalid type (a dot) is fatal."""
    async def wf(event, step):
        return await step.wait_for_event("w", "deploy.approved")

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        await errored_with(h, FATAL)
        assert h.step("wait", "w") is None
    arun(main())


def test_s5_step_name_of_256_characters_accepted(tmp_path):
    """§2.2/§5: a step name of exactly 256 characters is valid."""
    name = "s" * 256

    async def wf(event, step):
        @step.do(name)
        async def long():
            return "ok"
        return await long()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == "ok"
        assert h.step("do", name).status == "done"
    arun(main())


@pytest.mark.parametrize("kind", ["do", "sleep", "wait"])
@pytest.mark.parametrize("name", ["s" * 257, "", "line\nbreak"])
def test_s5_invalid_step_names_error_instance(tmp_path, kind, name):
    """§2.2/§5 + docs/semantics.md §9: step names are 1-256 characters without control characters; a bad
    one (for step.do, step.sleep or wait_for_event) is fatal and nothing is written."""
    calls = {"body": 0}

    async def wf(event, step):
        if kind == "do":
            @step.do(name)
            async def body():
                calls["body"] += 1
            await body()
        elif kind == "sleep":
            await step.sleep(name, "1 minute")
        else:
            await step.wait_for_event(name, "go")
        return "unreachable"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        error = await errored_with(h, FATAL)
        if len(name) > 256:
            assert "256" in error["message"]
        assert calls["body"] == 0
        assert h.step_keys() == [] and h.timers() == []
    arun(main())


def test_s5_params_over_1_mib_refused_nothing_written(tmp_path):
    """§5 + docs/semantics.md §9: create() params over 1 MiB are refused naming the limit; nothing written."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", simple)
        with pytest.raises(PayloadTooLargeError) as info:
            await h.create({"blob": "x" * MIB})
        assert info.value.code == "payload.too_large"
        assert "1 MiB" in info.value.message
        with pytest.raises(PayloadTooLargeError):
            await h.binding.create_batch([{"id": "ok", "params": {}},
                                          {"id": "big", "params": {"blob": "x" * MIB}}])
        assert h.instance_ids() == []
        with pytest.raises(InstanceNotFoundError):
            await h.binding.get("i1")
    arun(main())


def test_s5_params_just_under_1_mib_accepted(tmp_path):
    """§5: params that fit in 1 MiB are accepted."""
    async def wf(event, step):
        return len(event["payload"]["blob"])

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create({"blob": "x" * (MIB - 100)})
        await h.engine.drain()
        assert (await h.status())["output"] == MIB - 100
    arun(main())


def test_s5_step_result_over_1_mib_refused(tmp_path):
    """§5 + docs/semantics.md §9: a step result over 1 MiB is refused naming the limit; no result is
    stored."""
    async def wf(event, step):
        @step.do("big", config={"retries": {"limit": 0, "delay": 0}})
        async def big():
            return "x" * (MIB + 1)
        return await big()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        status = await h.status()
        assert status["status"] == "errored", status
        assert "Maximum allowed size is 1MiB." in status["error"]["message"]
        row = h.step("do", "big")
        assert row.status == "failed" and row.result is None
    arun(main())


def test_s5_run_output_over_1_mib_errors_instance(tmp_path):
    """§5: run()'s output is a stored value too; over 1 MiB it errors the instance."""
    async def wf(event, step):
        return "x" * (MIB + 1)

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        error = await errored_with(h, FATAL)
        assert "1 MiB" in error["message"]
    arun(main())


def test_s5_event_payload_over_1_mib_refused_nothing_written(tmp_path):
    """§5 + docs/semantics.md §9: a send_event payload over 1 MiB is refused naming the limit; it is neither
    delivered nor buffered."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", waiter)
        inst = await h.create()
        await h.engine.drain()
        with pytest.raises(PayloadTooLargeError) as info:
            await inst.send_event({"type": "go", "payload": "x" * MIB})
        assert info.value.code == "payload.too_large"
        assert "1 MiB" in info.value.message
        assert h.step("wait", "w").status == "waiting"
        await inst.send_event({"type": "go", "payload": "small"})
        await h.engine.drain()
        assert (await inst.status())["output"] == "small"
    arun(main())


def test_s5_create_batch_of_more_than_100_refused(tmp_path):
    """§1.2/§5: create_batch takes at most 100 instances; 101 are refused and none created."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", simple)
        with pytest.raises(ValidationError):
            await h.binding.create_batch([{"id": f"b{i}"} for i in range(101)])
        assert h.instance_ids() == []
        created = await h.binding.create_batch([{"id": f"b{i}"} for i in range(100)])
        assert [i.id for i in created] == [f"b{i}" for i in range(100)]
        assert len(h.instance_ids()) == 100
    arun(main())


def test_s5_default_step_limit_is_10000():
    """§5 + docs/semantics.md §9: the default step limit is 10,000."""
    assert DEFAULT_STEP_LIMIT == 10_000
    assert WorkflowDefinition("wf", lambda row: None).step_limit == 10_000


def test_s5_step_limit_errors_instance(tmp_path):
    """§5: step.do beyond WorkflowDefinition(step_limit=N) errors the instance with the limit
    message; the step over the limit never runs."""
    calls: list[int] = []

    async def wf(event, step):
        for i in range(4):
            @step.do(f"s{i}")
            async def s():
                calls.append(i)
            await s()
        return "done"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf, step_limit=3)
        await h.create()
        await h.engine.drain()
        error = await errored_with(h, FATAL)
        assert error["message"] == ("The limit of 3 steps has been reached. This limit can be "
                                    "changed in your worker configuration.")
        assert calls == [0, 1, 2]
        assert h.step("do", "s3") is None
    arun(main())


def test_s5_step_limit_counts_every_step_of_the_instance_across_replays(tmp_path):
    """§5: the step limit is per instance: steps committed in earlier lifetimes count too."""
    calls: list[str] = []

    async def wf(event, step):
        for name in ("a", "b", "c"):
            @step.do(name)
            async def s():
                calls.append(name)
            await s()
            await step.sleep(f"after-{name}", "1 minute")
        return "done"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf, step_limit=2)
        await h.create()
        await h.engine.drain()
        error = await errored_with(h, FATAL)
        assert "The limit of 2 steps has been reached" in error["message"]
        assert calls == ["a", "b"]
    arun(main())


def test_s5_sleeps_do_not_count_toward_the_step_limit(tmp_path):
    """§2.7/§5: sleeps are not steps for the step limit."""
    async def wf(event, step):
        @step.do("only")
        async def only():
            return 1
        await only()
        for i in range(3):
            await step.sleep(f"nap-{i}", "1 minute")
        return "done"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf, step_limit=1)
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": "done"}
    arun(main())

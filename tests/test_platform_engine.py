"""Cloudflare's tests of the Workflows engine, as dynwf's conformance suite.

Each test follows one case of workers-sdk ``packages/workflows-shared/tests/engine.test.ts``
(named in its docstring) and asserts the same facts of dynwf's engine (docs/semantics.md §2, §4,
§5). A new Engine object on the same file stands for the platform's aborted durable object.
Steps are held in flight with a Gate; time is a virtual clock moved by the test.
"""

from __future__ import annotations

import asyncio

from engine_harness import FATAL, SECOND, Harness, arun
from emulator.engine import WorkflowTimeoutError
from emulator.rules.limits import DEFAULT_STEP_LIMIT
from emulator.runtime.workers.workflows import NonRetryableError
from platform_harness import Gate, finish, until


def test_non_retryable_error_is_not_retried(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should not retry
    after NonRetryableError is thrown': one attempt, and the instance errors."""
    async def wf(event, step):
        @step.do("should only have one retry")
        async def once():
            raise NonRetryableError("Should only retry once")
        await once()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["status"] == "errored"
        assert len(h.events("step.started")) == 1
        assert h.step("do", "should only have one retry").attempts == 1
        assert h.events("step.attempt_failed") == []
    arun(main())


def test_non_retryable_error_keeps_its_name_and_message(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should preserve
    NonRetryableError message when compat flag is enabled': the instance's error and the step's
    failure are both {name: NonRetryableError, message: as raised} (dynwf always keeps them,
    docs/semantics.md §1.4)."""
    async def wf(event, step):
        @step.do("failing-step")
        async def failing():
            raise NonRetryableError("my custom error message")
        await failing()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        expected = {"name": "NonRetryableError", "message": "my custom error message"}
        assert (await h.status())["error"] == expected
        error = h.error("do", "failing-step")
        assert {"name": error["name"], "message": error["message"]} == expected
    arun(main())


def test_a_failed_step_caught_in_run_completes_the_instance(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should not error out
    if step fails but is try-catched': complete, with exactly one failed attempt."""
    async def wf(event, step):
        @step.do("always errors out", config={"retries": {"limit": 0, "delay": 1000}})
        async def always():
            raise RuntimeError("Step errors out")
        try:
            await always()
        except Exception:
            pass
        return "finished"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": "finished"}
        assert len(h.events("step.failed")) == 1
        assert h.step("do", "always errors out").attempts == 1
    arun(main())


async def waits_for_event_type_1(event, step):
    got = await step.wait_for_event("i'm a event!", "event-type-1", timeout="10 seconds")
    return got["payload"]


def test_wait_for_event_receives_an_event_while_active(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'waitForEvent should
    receive events while active'."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", waits_for_event_type_1)
        await h.create()
        await h.engine.drain()
        assert len(h.events("step.waiting")) == 1
        await (await h.binding.get("i1")).send_event({"type": "event-type-1", "payload": {}})
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": {}}
    arun(main())


def test_wait_for_event_receives_an_event_after_the_engine_went_away(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'waitForEvent should
    receive events even if not active': the engine that started the wait is gone (a new Engine
    on the same file), and an event sent through the new one completes the instance."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", waits_for_event_type_1)
        await h.create()
        await h.engine.drain()
        assert len(h.events("step.waiting")) == 1
        h.restart_engine()
        await (await h.binding.get("i1")).send_event({"type": "event-type-1", "payload": {}})
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": {}}
    arun(main())


def test_wait_for_event_skips_a_waiter_that_timed_out(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'waitForEvent should
    not deliver events to timed-out events with the same type': of three waiters of one type in
    turn, the first and third receive, the second times out. Deliberate divergence
    (docs/semantics.md §10): the waiters use the documented 1 second minimum, not 500 ms."""
    async def wf(event, step):
        results = []
        for i in (1, 2, 3):
            try:
                await step.wait_for_event(f"my-event-waiter-{i}", "my-event", timeout="1 second")
                results.append({"iteration": i, "received": True})
            except WorkflowTimeoutError:
                results.append({"iteration": i, "received": False})
        return {"results": results}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        handle = await h.create()
        await h.engine.drain()
        await handle.send_event({"type": "my-event", "payload": {"iteration": 1}})
        await h.engine.drain()
        assert len(h.events("step.waiting")) == 2
        h.clock.advance(SECOND)                 # the second waiter's timeout
        await h.engine.drain(jump=False)
        assert len(h.events("step.waiting")) == 3
        await handle.send_event({"type": "my-event", "payload": {"iteration": 3}})
        await h.engine.drain()
        assert (await h.status())["output"] == {"results": [
            {"iteration": 1, "received": True}, {"iteration": 2, "received": False},
            {"iteration": 3, "received": True}]}
        assert h.result("wait", "my-event-waiter-3")["payload"] == {"iteration": 3}
    arun(main())


def test_state_is_restored_from_storage_by_a_new_engine(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should restore state
    from storage when accountId is undefined': after the engine that ran an instance goes away,
    a new engine on the same storage reads its status and carries it on."""
    async def wf(event, step):
        await step.sleep("nap", "1 hour")
        return "test"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain(jump=False)
        assert "running" in h.statuses()
        h.restart_engine()
        assert (await h.status())["status"] == "waiting"
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": "test"}
    arun(main())


def result_of(value: str):
    async def body():
        return value
    return body


def steps_in_a_row(count: int):
    async def wf(event, step):
        for i in range(count):
            await step.do(f"step-{i}")(result_of(f"result-{i}"))()
        return "done"
    return wf


def test_step_limit_exceeded_errors_the_instance(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should enforce step
    limit when exceeded': a limit of 3 and a fourth step."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", steps_in_a_row(4), step_limit=3)
        await h.create()
        await h.engine.drain()
        status = await h.status()
        assert status["status"] == "errored" and status["error"]["name"] == FATAL
        assert "The limit of 3 steps has been reached" in status["error"]["message"]
        assert h.step("do", "step-3") is None
    arun(main())


def test_steps_exactly_at_the_limit_complete(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should succeed when
    steps are exactly at the limit'."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", steps_in_a_row(3), step_limit=3)
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": "done"}
    arun(main())


def test_default_step_limit(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should use
    DEFAULT_STEP_LIMIT when no limit is configured': 10,000 (docs/semantics.md §5)."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", steps_in_a_row(1))
        assert DEFAULT_STEP_LIMIT == 10_000
        assert h.engine.workflows["wf"].step_limit == DEFAULT_STEP_LIMIT
    arun(main())


def successes(h: Harness) -> list[str]:
    return [p.step[1] for p in h.events("step.committed") if p.step[0] == "do"]


def test_pause_lands_after_the_in_flight_step_finishes(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should pause after
    in-flight step.do finishes': paused with one step succeeded; step-2 never ran."""
    async def main():
        gate = Gate()

        async def wf(event, step):
            @step.do("long-step")
            async def long_step():
                await gate.hold()
                return "first"

            @step.do("step-2")
            async def step_2():
                return "second"
            await long_step()
            await step_2()
            return "done"
        h = Harness(tmp_path / "db.sqlite", wf)
        handle = await h.create()
        task = h.drain_in_background()
        await gate.wait_started()
        await handle.pause()
        gate.release.set()
        await finish(task)
        assert (await handle.status())["status"] == "paused"
        assert successes(h) == ["long-step"]
    arun(main())


def test_pause_lands_after_every_concurrent_step_finishes(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should pause after
    multiple concurrent in-flight step.dos finish': both steps succeed, the next never runs."""
    async def main():
        gate_a, gate_b = Gate(), Gate()

        async def wf(event, step):
            @step.do("slow-step-a")
            async def a():
                await gate_a.hold()
                return "a-done"

            @step.do("slow-step-b")
            async def b():
                await gate_b.hold()
                return "b-done"

            @step.do("step-after-pause")
            async def after():
                return "should-not-run"
            result_a, result_b = await asyncio.gather(a(), b())
            await after()
            return {"resultA": result_a, "resultB": result_b}
        h = Harness(tmp_path / "db.sqlite", wf)
        handle = await h.create()
        task = h.drain_in_background()
        await gate_a.wait_started()
        await gate_b.wait_started()
        await handle.pause()
        gate_a.release.set()
        gate_b.release.set()
        await finish(task)
        assert (await handle.status())["status"] == "paused"
        assert sorted(successes(h)) == ["slow-step-a", "slow-step-b"]
        assert h.step("do", "step-after-pause") is None
    arun(main())


def test_resume_cancelling_a_pending_pause_unblocks_concurrent_steps(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should unblock
    concurrent steps blocked when resume cancels pending pause': a fast step finishes while the
    pause is pending (its answer held back), resume cancels the pause (``running``), and all
    three steps succeed."""
    async def main():
        gate = Gate()

        async def wf(event, step):
            @step.do("slow-step")
            async def slow():
                await gate.hold()
                return "slow-done"

            @step.do("fast-step")
            async def fast():
                return "fast-done"

            @step.do("step-after-resume")
            async def after():
                return "after-resume"
            slow_result, fast_result = await asyncio.gather(slow(), fast())
            await after()
            return {"slowResult": slow_result, "fastResult": fast_result}
        h = Harness(tmp_path / "db.sqlite", wf)
        handle = await h.create()
        task = h.drain_in_background()
        await gate.wait_started()
        await handle.pause()
        assert (await handle.status())["status"] == "waitingForPause"
        await until(lambda: "fast-step" in successes(h), "fast-step committed")
        await handle.resume()
        assert (await handle.status())["status"] == "running"
        gate.release.set()
        await finish(task)
        await h.engine.drain()
        assert await handle.status() == {"status": "complete", "error": None, "output": {
            "slowResult": "slow-done", "fastResult": "fast-done"}}
        assert sorted(successes(h)) == ["fast-step", "slow-step", "step-after-resume"]
    arun(main())


def test_pause_during_a_sleep_then_resume_completes(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should pause during a
    step.sleep, then resume and complete': paused at once with one step succeeded; after resume
    the sleep ends and the last step runs."""
    async def wf(event, step):
        @step.do("first-step")
        async def first():
            return "first-done"

        @step.do("after-sleep")
        async def after():
            return "after-sleep-done"
        await first()
        await step.sleep("short-sleep", "1 second")
        await after()
        return "done"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        handle = await h.create()
        await h.engine.drain(jump=False)
        await handle.pause()
        assert (await handle.status())["status"] == "paused"
        await h.engine.drain()
        assert (await handle.status())["status"] == "paused"
        assert successes(h) == ["first-step"]
        await handle.resume()
        await h.drain_moving_clock()
        assert await handle.status() == {"status": "complete", "error": None, "output": "done"}
        assert successes(h) == ["first-step", "after-sleep"]
    arun(main())


def test_pause_during_an_event_wait_then_resume_completes(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should pause during a
    waitForEvent, then resume and complete': the event is sent after resume."""
    async def wf(event, step):
        @step.do("first-step")
        async def first():
            return "first-done"

        @step.do("after-event")
        async def after():
            return "after-event-done"
        await first()
        await step.wait_for_event("wait-for-signal", "continue")
        await after()
        return "done"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        handle = await h.create()
        await h.engine.drain()
        await handle.pause()
        assert (await handle.status())["status"] == "paused"
        await handle.resume()
        await handle.send_event({"type": "continue", "payload": {"done": True}})
        await h.engine.drain()
        assert await handle.status() == {"status": "complete", "error": None, "output": "done"}
        assert successes(h) == ["first-step", "after-event"]
    arun(main())


def test_waiting_for_pause_becomes_paused_when_a_new_engine_takes_over(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'should transition
    WaitingForPause to Paused on init() entry': the engine goes away while a pause waits for a
    step in flight; the next engine finds ``waitingForPause`` and settles it as ``paused`` without
    running the workflow on."""
    calls = {"after": 0}

    async def main():
        gate = Gate()

        async def wf(event, step):
            @step.do("held")
            async def held():
                await gate.hold()
                return "h"

            @step.do("after")
            async def after():
                calls["after"] += 1
                return "a"
            await held()
            await after()
            return "done"
        h = Harness(tmp_path / "db.sqlite", wf)
        handle = await h.create()
        task = h.drain_in_background()
        await gate.wait_started()
        await handle.pause()
        assert (await handle.status())["status"] == "waitingForPause"
        await h.engine.shutdown()           # the engine goes away, the step still in flight
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        h.restart_engine()
        await h.engine.drain()
        assert (await h.status())["status"] == "paused"
        assert calls["after"] == 0
    arun(main())

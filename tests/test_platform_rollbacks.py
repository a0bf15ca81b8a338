"""The platform's local engine's rollback tests, translated (docs/semantics.md §2.12, "Rollbacks").

Each test follows one case of the platform's engine tests and says which. Where those read the
engine's event log (a rollback step's success or failure, by target ``NAME-COUNT``), these read
what dynwf records of the same facts: the rows of kind ``rollback`` (in the order they were first
written, with their status and attempts) and ``status()["rollback"]``. "The registry is empty" (the
engine lost its in-memory handlers) is, in dynwf, always so for a new run: the cases that clear it
restart the engine (a new ``Engine`` on the same file) instead.
"""

from __future__ import annotations

import asyncio
import json

from tests.engine_harness import Harness, arun

NO_RETRIES = {"retries": {"limit": 0, "delay": 0, "backoff": "constant"}}


async def noop_rollback() -> None:
    return None


def rollback_steps(h: Harness, id: str = "i1") -> list[tuple[str, str, int]]:
    """(target, status, attempts) of each rollback step, in the order each began."""
    return [(f"{s.name}-{s.count}", s.status, s.attempts)
            for s in h.engine.store.list_steps(id) if s.kind == "rollback"]


async def run_to_end(fn, **definition):
    h = Harness(definition.pop("path"), fn, **definition)
    await h.create()
    await h.engine.drain()
    return h


async def sleeping(h: Harness) -> None:
    """Run until the instance waits (its sleep of an hour)."""
    await h.create()
    await h.engine.drain(jump=False)
    assert (await h.status())["status"] == "waiting"


async def terminate_with_rollback(h: Harness) -> None:
    await (await h.binding.get("i1")).terminate({"rollback": True})
    await h.engine.drain(jump=False)


def test_runs_rollback_fns_in_lifo_order_on_workflow_failure(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'runs rollback fns in
    LIFO order on workflow failure'"""
    async def run(event, step):
        for n in (1, 2, 3):
            await step.do(f"step-{n}", rollback=noop_rollback)(returning(f"out-{n}"))()
        raise Exception("boom")

    async def main():
        h = await run_to_end(run, path=tmp_path / "db.sqlite")
        return rollback_steps(h), await h.status()
    steps, status = arun(main())
    assert steps == [("step-3-1", "done", 1), ("step-2-1", "done", 1), ("step-1-1", "done", 1)]
    assert status["rollback"] == {"outcome": "complete", "error": None}


def returning(value: str):
    """A step body (it takes no parameters) that returns ``value``."""
    async def body() -> str:
        return value
    return body


def test_runs_parallel_rollbacks_in_reverse_step_start_order(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'runs parallel
    rollbacks in reverse step start order'

    The platform's test waits, outside any step, for the first body to start; a dynwf replay
    (how the rollback phase runs) does not run bodies again, so that wait would never end
    (docs/semantics.md §4.3). Gathering the two gives the same order: ``first`` starts first and
    ends last, after ``second`` let it go on."""
    async def run(event, step):
        first_may_finish = asyncio.Event()

        @step.do("first", rollback=noop_rollback)
        async def first():
            await first_may_finish.wait()
            await asyncio.sleep(0.05)
            return "out-1"

        @step.do("second", rollback=noop_rollback)
        async def second():
            first_may_finish.set()
            return "out-2"

        await asyncio.gather(first(), second())
        raise Exception("boom")

    async def main():
        h = await run_to_end(run, path=tmp_path / "db.sqlite")
        ended = sorted((s for s in h.engine.store.list_steps("i1") if s.kind == "do"),
                       key=lambda s: (s.ended_at, s.name != "second"))
        return rollback_steps(h), [s.name for s in h.engine.store.list_steps("i1")
                                   if s.kind == "do"], ended[-1].name
    steps, started, last_to_end = arun(main())
    assert started == ["first", "second"] and last_to_end == "first"
    assert [target for target, _status, _attempts in steps] == ["second-1", "first-1"]
    assert all(status == "done" for _target, status, _attempts in steps)


def test_uses_rollback_config_when_executing_rollback(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'uses rollbackConfig
    when executing rollback'"""
    rollback_config = {"retries": {"limit": 0, "delay": 0, "backoff": "constant"},
                       "timeout": "30 seconds"}

    async def run(event, step):
        @step.do("configured-step", rollback=noop_rollback, rollback_config=rollback_config)
        async def configured():
            return "out"
        await configured()
        raise Exception("boom")

    async def main():
        h = await run_to_end(run, path=tmp_path / "db.sqlite")
        return h.step("rollback", "configured-step"), await h.status()
    row, status = arun(main())
    assert json.loads(row.config) == {"retries": {"limit": 0, "delay": 0, "backoff": "constant"},
                                      "timeout": 30_000}
    assert row.status == "done" and status["rollback"]["outcome"] == "complete"


def test_passes_rollback_context_to_rollback_fn(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'passes rollback
    context to rollback fn'"""
    async def check(ctx, error, output):
        if error["name"] != "Exception" or error["message"] != "boom" or output != "out" \
                or ctx["step"]["name"] != "ctx-step" or ctx["step"]["count"] != 1 \
                or f'{ctx["step"]["name"]}-{ctx["step"]["count"]}' != "ctx-step-1":
            raise Exception("unexpected rollback context")

    async def run(event, step):
        @step.do("ctx-step", rollback=check)
        async def ctx_step():
            return "out"
        await ctx_step()
        raise Exception("boom")

    async def main():
        h = await run_to_end(run, path=tmp_path / "db.sqlite")
        return rollback_steps(h), await h.status()
    steps, status = arun(main())
    assert steps == [("ctx-step-1", "done", 1)]
    assert status["rollback"] == {"outcome": "complete", "error": None}


def test_runs_rollback_for_failed_step(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'runs rollback for
    failed step'"""
    async def check(ctx, error, output):
        if error["message"] != "step-boom" or output is not None \
                or ctx["step"]["name"] != "failed-step" or ctx["step"]["count"] != 1:
            raise Exception("unexpected failed-step rollback context")

    async def run(event, step):
        @step.do("failed-step", config=NO_RETRIES, rollback=check)
        async def failed_step():
            raise Exception("step-boom")
        await failed_step()

    async def main():
        h = await run_to_end(run, path=tmp_path / "db.sqlite")
        return rollback_steps(h), h.step("do", "failed-step").status, await h.status()
    steps, step_status, status = arun(main())
    assert steps == [("failed-step-1", "done", 1)]
    assert step_status == "failed"
    assert status["rollback"] == {"outcome": "complete", "error": None}


def test_only_runs_rollbacks_for_steps_with_a_registered_fn(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'only runs rollbacks
    for steps with a registered fn'"""
    async def run(event, step):
        await step.do("plain-step")(lambda: _value("v1"))()
        await step.do("step-with-rollback", rollback=noop_rollback)(lambda: _value("v2"))()
        await step.do("plain-step-after")(lambda: _value("v3"))()
        raise Exception("boom")

    async def main():
        h = await run_to_end(run, path=tmp_path / "db.sqlite")
        return rollback_steps(h), await h.status()
    steps, status = arun(main())
    assert steps == [("step-with-rollback-1", "done", 1)]     # one step in the phase in all
    assert status["rollback"] == {"outcome": "complete", "error": None}


async def _value(value: str) -> str:
    return value


def test_stops_at_the_first_failing_rollback_and_logs_rollback_failed(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'stops at the first
    failing rollback and logs ROLLBACK_FAILED'"""
    async def boom():
        raise Exception("rollback-boom")

    async def run(event, step):
        await step.do("step-1", rollback=noop_rollback)(lambda: _value("v1"))()
        await step.do("step-2", rollback=boom, rollback_config=NO_RETRIES)(lambda: _value("v2"))()
        await step.do("step-3", rollback=noop_rollback)(lambda: _value("v3"))()
        raise Exception("boom")

    async def main():
        h = await run_to_end(run, path=tmp_path / "db.sqlite")
        return rollback_steps(h), await h.status()
    steps, status = arun(main())
    assert steps == [("step-3-1", "done", 1), ("step-2-1", "failed", 1)]   # step-1 never runs
    assert status["rollback"] == {"outcome": "failed",
                                  "error": {"name": "Exception", "message": "rollback-boom"}}


def setup_then_sleep(name: str = "setup-resource"):
    async def run(event, step):
        await step.do(name, rollback=noop_rollback)(lambda: _value("resource-id"))()
        await step.sleep("wait-forever", "1 hour")
    return run


def test_runs_rollback_when_terminate_requests_it(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'runs rollback when
    terminate requests it'"""
    async def main():
        h = Harness(tmp_path / "db.sqlite", setup_then_sleep())
        await sleeping(h)
        await terminate_with_rollback(h)
        return rollback_steps(h), await h.status()
    steps, status = arun(main())
    assert steps == [("setup-resource-1", "done", 1)]
    assert status == {"status": "terminated", "error": None, "output": None,
                      "rollback": {"outcome": "complete", "error": None}}


def test_replays_cached_steps_before_terminate_rollback_when_registry_is_empty(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'replays cached steps
    before terminate rollback when registry is empty'"""
    async def main():
        h = Harness(tmp_path / "db.sqlite", setup_then_sleep())
        await sleeping(h)
        h.restart_engine()                 # nothing of the first run is left in memory
        await terminate_with_rollback(h)
        return rollback_steps(h), await h.status()
    steps, status = arun(main())
    assert steps == [("setup-resource-1", "done", 1)]
    assert status["status"] == "terminated"
    assert status["rollback"] == {"outcome": "complete", "error": None}


def test_replays_started_unfinished_steps_before_terminate_rollback_when_registry_is_empty(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'replays started
    unfinished steps before terminate rollback when registry is empty'"""
    outputs: list = []

    async def record(output):
        outputs.append(output)

    async def run(event, step):
        @step.do("started-setup", rollback=record)
        async def started_setup():
            await asyncio.sleep(30)
            return "late-resource-id"
        await started_setup()

    async def main():
        h = Harness(tmp_path / "db.sqlite", run)
        await h.create()
        await h.engine.drain(until=lambda: (h.step("do", "started-setup") or _NONE).status
                             == "running")
        await h.engine.shutdown()          # the engine stops with the attempt cut off
        h.restart_engine()
        await terminate_with_rollback(h)
        return rollback_steps(h), await h.status()
    steps, status = arun(main())
    assert steps == [("started-setup-1", "done", 1)]
    assert outputs == [None]               # the step never ended: no output
    assert status["status"] == "terminated"
    assert status["rollback"] == {"outcome": "complete", "error": None}


class _NONE:
    status = None


def test_fails_terminate_rollback_when_replay_cannot_rebuild_an_eligible_handler(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'fails terminate
    rollback when replay cannot rebuild an eligible handler'"""
    async def takes_another_path(event, step):
        return None          # the replay no longer reaches the step that registered a handler

    async def main():
        h = Harness(tmp_path / "db.sqlite", setup_then_sleep("branchy-setup"))
        await sleeping(h)
        h.fn = takes_another_path
        h.restart_engine()
        await terminate_with_rollback(h)
        return rollback_steps(h), await h.status()
    steps, status = arun(main())
    assert steps == [("branchy-setup-1", "failed", 0)]
    assert status["status"] == "terminated"
    assert status["rollback"]["outcome"] == "failed"
    assert status["rollback"]["error"]["name"] == "RollbackMissing"


def test_replays_cached_failed_steps_before_terminate_rollback_when_registry_is_empty(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'replays cached
    failed steps before terminate rollback when registry is empty'"""
    async def run(event, step):
        try:
            @step.do("failed-setup", config=NO_RETRIES, rollback=noop_rollback)
            async def failed_setup():
                raise Exception("step-boom")
            await failed_setup()
        except Exception:  # noqa: BLE001 - kept running so that terminate can roll it back
            pass
        await step.sleep("wait-forever", "1 hour")

    async def main():
        h = Harness(tmp_path / "db.sqlite", run)
        await sleeping(h)
        h.restart_engine()
        await terminate_with_rollback(h)
        return rollback_steps(h), await h.status()
    steps, status = arun(main())
    assert steps == [("failed-setup-1", "done", 1)]
    assert status["rollback"] == {"outcome": "complete", "error": None}


def test_omits_dynamic_delay_from_rollback_ctx_config_on_cached_error_replay(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'omits dynamic delay
    from rollback ctx.config on cached-error replay': a step whose retry delay is a function
    (docs/semantics.md §2.4) failed and was cached; the terminate's rollback replays it with a
    new engine, and the handler's ``ctx["config"]["retries"]`` has no ``delay``, no marker."""
    seen: list = []

    def delay(ctx, error):
        return 1000

    async def undo(ctx):
        seen.append(ctx["config"]["retries"])
        if "delay" in ctx["config"]["retries"]:
            raise RuntimeError("dynamic delay marker leaked into rollback ctx.config")

    async def run(event, step):
        try:
            @step.do("failed-setup", rollback=undo,
                     config={"retries": {"limit": 0, "delay": delay, "backoff": "constant"}})
            async def failed_setup():
                raise Exception("step-boom")
            await failed_setup()
        except Exception:  # noqa: BLE001 - kept running so that terminate can roll it back
            pass
        await step.sleep("wait-forever", "1 hour")

    async def main():
        h = Harness(tmp_path / "db.sqlite", run)
        await sleeping(h)
        h.restart_engine()
        await terminate_with_rollback(h)
        return rollback_steps(h), await h.status()
    steps, status = arun(main())
    assert steps == [("failed-setup-1", "done", 1)]
    assert status["rollback"] == {"outcome": "complete", "error": None}
    assert seen and all("delay" not in retries for retries in seen)


def test_runs_terminate_rollback_while_paused_with_an_empty_registry(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'runs terminate
    rollback while paused with an empty registry'"""
    async def main():
        h = Harness(tmp_path / "db.sqlite", setup_then_sleep())
        await sleeping(h)
        await (await h.binding.get("i1")).pause()
        paused = (await h.status())["status"]
        h.restart_engine()
        await terminate_with_rollback(h)
        return paused, rollback_steps(h), await h.status()
    paused, steps, status = arun(main())
    assert paused == "paused"
    assert steps == [("setup-resource-1", "done", 1)]
    assert status["status"] == "terminated"
    assert status["rollback"] == {"outcome": "complete", "error": None}


def test_does_not_run_rollback_when_workflow_succeeds(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'does not run
    rollback when workflow succeeds'"""
    async def run(event, step):
        await step.do("a", rollback=noop_rollback)(lambda: _value("ok"))()
        return "done"

    async def main():
        h = await run_to_end(run, path=tmp_path / "db.sqlite")
        return rollback_steps(h), await h.status()
    steps, status = arun(main())
    assert steps == []
    assert status == {"status": "complete", "error": None, "output": "done"}

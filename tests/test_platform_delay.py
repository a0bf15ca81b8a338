"""Dynamic retry delays: a step's ``retries.delay`` given as a function (docs/semantics.md §2.3,
§2.4), as the platform's own tests check them, and across the step wire.

The cases of workers-sdk ``packages/workflows-shared/tests/lib/delay.test.ts`` call the local
engine's helper that runs a delay function; here the same facts are asserted through a step whose
delay is that function, on the engine harness (a virtual clock that stands still, progress events
kept). The engine.test.ts cases follow at the end, and the last tests run one workflow in the host
and in a tenant's isolate, where the function runs next to the step body and the host receives
only the milliseconds it asked for.
"""

from __future__ import annotations

import asyncio

import pytest

from emulator.sdk import client
from emulator.rules.retries import StepConfig
from engine_harness import MINUTE, SECOND, Harness, arun
from parity_projects import WHERE, binding_of, target_of, write_parity


def _failing_step(delay, *, limit=5, backoff="constant", succeed_on=None, seen=None):
    """A workflow with one step whose delay is ``delay``; it fails until attempt ``succeed_on``."""
    async def wf(event, step):
        @step.do("step", config={"retries": {"limit": limit, "delay": delay, "backoff": backoff}})
        async def body(ctx):
            if seen is not None:
                seen.append(ctx)
            if succeed_on is not None and ctx["attempt"] >= succeed_on:
                return "ok"
            raise ValueError(f"boom {ctx['attempt']}")
        return await body()
    return wf


async def _run(tmp_path, wf) -> Harness:
    h = Harness(tmp_path / "db.sqlite", wf)
    await h.create()
    await h.engine.drain()
    return h


# ---- packages/workflows-shared/tests/lib/delay.test.ts ----------------------------------------

def test_a_synchronous_delay_function_gives_the_delay(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/lib/delay.test.ts, 'returns the value a
    synchronous delay function produces': a plain function's number is the retry's delay (ms)."""
    async def main():
        h = await _run(tmp_path, _failing_step(lambda: 1234, succeed_on=2))
        assert (await h.status())["status"] == "complete"
        assert h.retry_delays() == [1234]
    arun(main())


def test_an_asynchronous_delay_function_is_awaited(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/lib/delay.test.ts, 'awaits an
    asynchronous delay function'."""
    async def delay():
        await asyncio.sleep(0)
        return 1234

    async def main():
        h = await _run(tmp_path, _failing_step(delay, succeed_on=2))
        assert (await h.status())["status"] == "complete"
        assert h.retry_delays() == [1234]
    arun(main())


def test_a_delay_function_that_never_returns_fails_the_step(tmp_path, monkeypatch):
    """Follows workers-sdk packages/workflows-shared/tests/lib/delay.test.ts, 'throws when the delay
    function never resolves (timeout)': past its time the step fails for good, naming the limit
    (the 5 seconds are shortened here so that the test does not wait them out)."""
    monkeypatch.setattr(client, "DELAY_FUNCTION_TIMEOUT_S", 0.05)

    async def never():
        await asyncio.Event().wait()

    async def main():
        h = await _run(tmp_path, _failing_step(never))
        status = await h.status()
        assert status["status"] == "errored"
        assert status["error"] == {"name": "NonRetryableDelayError", "message":
                                   'The delay function for step "step-1" did not return within '
                                   "0.05 seconds"}
        assert h.step("do", "step").attempts == 1
    arun(main())


def test_the_delay_function_limit_is_five_seconds():
    """Follows workers-sdk packages/workflows-shared/tests/lib/delay.test.ts, 'throws when the delay
    function never resolves (timeout)': the limit is the platform's 5 seconds."""
    assert client.DELAY_FUNCTION_TIMEOUT_S == 5


@pytest.mark.parametrize("is_async", [False, True])
def test_a_delay_function_that_raises_fails_the_step(tmp_path, is_async):
    """Follows workers-sdk packages/workflows-shared/tests/lib/delay.test.ts, 'throws when the delay
    function throws synchronously' and 'throws when the delay function rejects'."""
    def sync_boom():
        raise RuntimeError("sync boom")

    async def async_boom():
        raise RuntimeError("async boom")

    async def main():
        h = await _run(tmp_path, _failing_step(async_boom if is_async else sync_boom))
        status = await h.status()
        word = "async" if is_async else "sync"
        assert status["error"] == {"name": "NonRetryableDelayError", "message":
                                   f'The delay function for step "step-1" threw an error: {word} boom'}
        assert h.step("do", "step").attempts == 1
        assert h.events("step.attempt_failed") == []
    arun(main())


# ---- what the delay function receives and may return ------------------------------------------

def test_the_delay_function_gets_ctx_and_error_by_name(tmp_path):
    """§2.4: ``ctx`` (the attempt that failed, the config without its delay) and ``error`` (what
    the body raised) are passed by name, each only if the function takes it."""
    calls = []

    def delay(error, ctx):
        calls.append((ctx["step"], ctx["attempt"], ctx["config"], type(error), str(error)))
        return f"{ctx['attempt']} seconds"

    async def main():
        h = await _run(tmp_path, _failing_step(delay, succeed_on=3))
        assert (await h.status())["status"] == "complete"
        config = {"retries": {"limit": 5, "backoff": "constant"}, "timeout": 600_000}
        assert calls == [({"name": "step", "count": 1}, 1, config, ValueError, "boom 1"),
                         ({"name": "step", "count": 1}, 2, config, ValueError, "boom 2")]
        assert h.retry_delays() == [1 * SECOND, 2 * SECOND]
    arun(main())


def test_backoff_applies_to_what_the_delay_function_returns(tmp_path):
    """§2.4: the returned delay is the back-off's base, as a fixed delay is (exponential: doubled
    after each failed attempt)."""
    async def main():
        h = await _run(tmp_path, _failing_step(lambda: "1 minute", limit=3,
                                               backoff="exponential"))
        assert (await h.status())["status"] == "errored"
        assert h.retry_delays() == [MINUTE, 2 * MINUTE, 4 * MINUTE]
    arun(main())


@pytest.mark.parametrize("value", ["i like trains", -5, None, {"ms": 5}, "366 days"])
def test_an_invalid_returned_delay_fails_the_step(tmp_path, value):
    """§2.4: a return that is no duration of 0 to 365 days fails the step for good."""
    async def main():
        h = await _run(tmp_path, _failing_step(lambda: value))
        error = (await h.status())["error"]
        assert error["name"] == "NonRetryableDelayError"
        assert error["message"].startswith('The delay function for step "step-1" returned ')
        assert h.step("do", "step").attempts == 1
    arun(main())


def test_no_delay_function_call_when_no_retry_follows(tmp_path):
    """§2.4: the function is asked only when a retry follows: not after the last attempt."""
    calls = []

    async def main():
        h = await _run(tmp_path, _failing_step(lambda ctx: calls.append(ctx["attempt"]) or 10,
                                               limit=2))
        assert (await h.status())["error"] == {"name": "ValueError", "message": "boom 3"}
        assert calls == [1, 2]
    arun(main())


def test_the_stored_config_records_a_function(tmp_path):
    """§2.3: a function is not JSON: the step's stored config says ``"delay": "function"``."""
    async def main():
        h = await _run(tmp_path, _failing_step(lambda: 10, succeed_on=2))
        row = h.step("do", "step")
        assert StepConfig.from_dict(__import__("json").loads(row.config)).dynamic_delay
        assert '"delay": "function"' in row.config
    arun(main())


def test_a_long_delay_hibernates_and_the_replay_uses_the_live_function(tmp_path):
    """§2.4, §4.9: a returned delay past the in-invocation line ends the invocation; the replay
    that runs the next attempt asks the function of the code running then (the stored config
    only says "function"), and an engine restarted in between changes nothing."""
    calls = []

    def delay(ctx):
        calls.append(ctx["attempt"])
        return "10 minutes"

    async def main():
        h = Harness(tmp_path / "db.sqlite", _failing_step(delay, limit=3, succeed_on=3))
        await h.create()
        await h.engine.drain(jump=False)
        assert h.step("do", "step").status == "backoff"
        h.restart_engine()
        await h.drain_moving_clock()
        assert (await h.status())["output"] == "ok"
        assert calls == [1, 2] and h.retry_delays() == [10 * MINUTE, 10 * MINUTE]
    arun(main())


def test_a_delay_function_with_other_parameters_is_an_invalid_config(tmp_path):
    """§2.3: a delay function takes ``ctx`` and ``error`` only; another parameter without a
    default makes the config invalid (the run fails naming the step)."""
    async def main():
        h = await _run(tmp_path, _failing_step(lambda attempt: 10))
        error = (await h.status())["error"]
        assert 'Step config for "step" is invalid' in error["message"]
        assert "parameter(s) attempt" in error["message"]
    arun(main())


# ---- packages/workflows-shared/tests/engine.test.ts -------------------------------------------

def test_a_dynamic_delay_function_is_applied_and_the_step_succeeds(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'applies a dynamic delay
    function and succeeds after retries': the first failed attempt waits the 50 ms returned."""
    async def main():
        h = await _run(tmp_path, _failing_step(lambda: 50, limit=3, succeed_on=2))
        assert await h.status() == {"status": "complete", "error": None, "output": "ok"}
        assert h.retry_delays() == [50]
    arun(main())


def test_a_delay_function_that_throws_fails_non_retryably(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'fails non-retryably
    when the delay function throws': one attempt; the instance's error names the delay function
    and its error (dynwf keeps the class name as the error's name)."""
    def throwing():
        raise RuntimeError("delay boom")

    async def main():
        h = await _run(tmp_path, _failing_step(throwing))
        assert len(h.events("step.started")) == 1
        error = (await h.status())["error"]
        assert error["name"] == "NonRetryableDelayError"
        assert "delay function" in error["message"] and "delay boom" in error["message"]
    arun(main())


def test_ctx_config_omits_a_dynamic_delay_and_shows_a_static_one(tmp_path):
    """Follows workers-sdk packages/workflows-shared/tests/engine.test.ts, 'omits delay from
    ctx.config for a dynamic delay but includes it for a static delay'."""
    async def main():
        dynamic, static = [], []
        await _run(tmp_path / "a", _failing_step(lambda: 10, limit=1, succeed_on=1, seen=dynamic))
        await _run(tmp_path / "b", _failing_step(1234, limit=1, succeed_on=1, seen=static))
        assert "delay" not in dynamic[0]["config"]["retries"]
        assert static[0]["config"]["retries"]["delay"] == 1234
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    arun(main())


# ---- in the host and in a tenant's isolate ----------------------------------------------------

SOURCE = '''
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        seen = []

        async def delay(ctx, error):
            seen.append([ctx["attempt"], str(error), "delay" in ctx["config"]["retries"]])
            return event["payload"]["delay"]

        @step.do("flaky", config={"retries": {"limit": 3, "delay": delay, "backoff": "linear"}})
        async def flaky(ctx):
            if ctx["attempt"] <= 2:
                raise ValueError(f"attempt {ctx['attempt']} failed")
            return ctx["attempt"]

        return {"result": await flaky(), "seen": seen}
'''


@pytest.fixture(params=WHERE)
def where(request):
    return request.param


@pytest.fixture
def dynwf_project(tmp_path, where):
    return write_parity(tmp_path / "project", where, SOURCE)


async def test_the_function_runs_beside_the_body_and_the_host_waits_what_it_returned(dynwf, where):
    """§2.4: the delay function runs where the step body runs (its closure fills in the host and
    in the isolate alike); the engine waits what it returned, with the back-off applied (linear:
    1 minute, then 2), and stores ``"delay": "function"``."""
    dynwf.time_skipping = False
    instance = dynwf.introspect_instance(target_of(dynwf, where), "d1")
    await binding_of(dynwf, where).create({"id": "d1", "params": {"delay": "1 minute"}})
    for attempt, wait in ((1, MINUTE), (2, 2 * MINUTE)):
        await dynwf.settle()
        (flaky,) = instance.steps()
        assert (flaky["status"], flaky["attempts"]) == ("backoff", attempt)
        await dynwf.advance(wait - 1)
        await dynwf.settle()
        assert instance.steps()[0]["attempts"] == attempt        # not yet
        await dynwf.advance(1)
    await instance.wait_for_status("complete")
    assert await instance.get_output() == {
        "result": 3, "seen": [[1, "attempt 1 failed", False], [2, "attempt 2 failed", False]]}


async def test_an_invalid_return_fails_the_step_in_the_host_and_the_isolate(dynwf, where):
    """§2.4: a return over 365 days is refused where the function runs, and the step fails with
    the platform's error."""
    instance = dynwf.introspect_instance(target_of(dynwf, where), "d2")
    await binding_of(dynwf, where).create({"id": "d2", "params": {"delay": "400 days"}})
    await instance.wait_for_status("errored")
    error = (await instance.status())["error"]
    assert error["name"] == "NonRetryableDelayError"
    assert error["message"].startswith('The delay function for step "flaky-1" returned a delay')
    assert instance.steps()[0]["attempts"] == 1

"""Cloudflare's tests of the step context (``ctx``), as dynwf's conformance suite.

Each test follows one case of workers-sdk ``packages/workflows-shared/tests/context.test.ts``
(named in its docstring) and asserts the same facts of dynwf's engine (docs/semantics.md §2.3-§2.5,
§7.3). Time is a virtual clock: a wait's length is read from the clock the test moves, never
waited for.
"""

from __future__ import annotations

import pytest

from emulator.rules.redaction import REDACTED
from emulator.runtime.workers.workflows import NonRetryableError
from engine_harness import FATAL, SECOND, T0, Harness, arun
from parity_projects import write_parity


def test_attempt_is_1_on_a_first_successful_attempt(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/context.test.ts, 'should provide
    attempt count 1 on first successful attempt'."""
    seen = []

    async def wf(event, step):
        @step.do("a successful step")
        async def ok(ctx):
            seen.append(ctx["attempt"])
            return "success"
        return await ok()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == "success"
        assert seen == [1]
    arun(main())


def test_attempt_counts_every_attempt(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/context.test.ts, 'should provide
    attempt count to callback': limit 2 gives attempts 1, 2 and 3, then the instance errors."""
    seen = []

    async def wf(event, step):
        @step.do("retrying step", config={"retries": {"limit": 2, "delay": 0}})
        async def failing(ctx):
            seen.append(ctx["attempt"])
            raise RuntimeError("Throwing")
        return await failing()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["status"] == "errored"
        assert seen == [1, 2, 3]
    arun(main())


def test_retry_delays_are_waited_for_by_default(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/context.test.ts, 'should wait for
    retry delays by default': two attempts, the second a full second after the first failed
    (read from the virtual clock, which only reaches the retry when moved to it)."""
    async def wf(event, step):
        @step.do("retrying step with delay",
                 config={"retries": {"limit": 1, "delay": "1 second", "backoff": "constant"}})
        async def failing():
            raise RuntimeError("Always fails")
        return await failing()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain(jump=False)
        # backing off inside the invocation (docs/semantics.md §4.9), not retried yet
        assert (await h.status())["status"] == "running"
        assert h.step("do", "retrying step with delay").attempts == 1
        await h.drain_moving_clock()
        assert (await h.status())["status"] == "errored"
        assert h.retry_delays() == [1 * SECOND]
        assert h.step("do", "retrying step with delay").attempts == 2
        assert h.clock.now_ms() >= T0 + SECOND
    arun(main())


def test_disable_retry_delays_skips_the_delays(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/context.test.ts, 'should skip retry
    delays when disableRetryDelays is set': three attempts of a 10 s constant back-off with the
    clock never moved."""
    async def wf(event, step):
        @step.do("retrying step with delay",
                 config={"retries": {"limit": 2, "delay": "10 seconds", "backoff": "constant"}})
        async def failing():
            raise RuntimeError("Always fails")
        return await failing()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        h.engine.modifiers.for_instance("i1").disable_retry_delays()
        await h.create()
        await h.engine.drain(jump=False)
        assert (await h.status())["status"] == "errored"
        assert h.step("do", "retrying step with delay").attempts == 3
        assert h.clock.now_ms() == T0
    arun(main())


def test_ctx_has_the_step_name_and_count(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/context.test.ts, 'should provide step
    name and count in context'."""
    seen = []

    async def wf(event, step):
        @step.do("my step")
        async def mine(ctx):
            seen.append(ctx["step"])
            return "done"
        return await mine()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert seen == [{"name": "my step", "count": 1}]
    arun(main())


def test_ctx_count_grows_for_steps_of_one_name(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/context.test.ts, 'should increment
    step count for steps with the same name'."""
    seen = []

    async def wf(event, step):
        @step.do("repeated step")
        async def repeated(ctx):
            seen.append(ctx["step"])
            return len(seen)

        @step.do("different step")
        async def different(ctx):
            seen.append(ctx["step"])
            return "third"
        await repeated()
        await repeated()
        await different()
        return "done"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert seen == [{"name": "repeated step", "count": 1},
                        {"name": "repeated step", "count": 2},
                        {"name": "different step", "count": 1}]
    arun(main())


def test_ctx_config_has_the_defaults(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/context.test.ts, 'should provide
    resolved config with defaults in context'. Deliberate divergences (docs/semantics.md §10):
    production's default delay (10 s, where the local engine gives 1 s), and every duration
    resolved to milliseconds (the local engine hands back the timeout as written, "10 minutes")."""
    seen = []

    async def wf(event, step):
        @step.do("default config step")
        async def show(ctx):
            seen.append(ctx["config"])
            return "done"
        return await show()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert seen == [{"retries": {"limit": 5, "delay": 10_000, "backoff": "exponential"},
                         "timeout": 600_000}]
    arun(main())


def test_ctx_config_merges_the_users_overrides(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/context.test.ts, 'should provide
    resolved config with user overrides merged in context': limit and delay from the user, the
    default back-off kept. Deliberate divergence (docs/semantics.md §10): the timeout reads in
    milliseconds (300000), not as written ("5 minutes")."""
    seen = []

    async def wf(event, step):
        @step.do("custom config step",
                 config={"retries": {"limit": 3, "delay": 500}, "timeout": "5 minutes"})
        async def show(ctx):
            seen.append(ctx["config"])
            return "done"
        return await show()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert seen == [{"retries": {"limit": 3, "delay": 500, "backoff": "exponential"},
                         "timeout": 300_000}]
    arun(main())


def test_mutating_ctx_config_does_not_change_the_retries(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/context.test.ts, 'should not allow
    user callback to mutate engine retry config': raising the limit from 1 to 100 inside the
    body leaves two attempts."""
    seen = []

    async def wf(event, step):
        @step.do("mutating step", config={"retries": {"limit": 1, "delay": 0}})
        async def mutating(ctx):
            seen.append(ctx["attempt"])
            ctx["config"]["retries"]["limit"] = 100
            raise RuntimeError("retry me")
        return await mutating()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        status = await h.status()
        assert status["status"] == "errored" and status["error"]["name"] != FATAL
        assert seen == [1, 2]
    arun(main())


# ---- 'Sensitive step output' (docs/semantics.md §2.3) -------------------------------------------

def test_a_sensitive_output_is_redacted_in_views_and_passed_on_for_real(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/context.test.ts, 'should redact a
    sensitive step's output in logs while passing the real value downstream': every view of the
    step (the engine's step log here is the step as describe, the admin API and the test API show
    it) reads ``[redacted]``, and the next step gets the real value."""
    downstream = []

    async def wf(event, step):
        @step.do("sensitive step", config={"sensitive": "output"})
        async def secret():
            return {"token": "super-secret"}

        value = await secret()

        @step.do("downstream step")
        async def use():
            downstream.append(value)
            return "ok"
        await use()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["status"] == "complete"
        view = h.step("do", "sensitive step").to_public()
        assert (view["result"], view["sensitive"]) == (REDACTED, True)
        assert downstream == [{"token": "super-secret"}]
    arun(main())


SENSITIVE_SOURCE = '''
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("sensitive step", config={"sensitive": "output"})
        async def secret():
            return "super-secret"
        await secret()
'''


@pytest.fixture
def dynwf_project(tmp_path):
    return write_parity(tmp_path / "project", "host", SENSITIVE_SOURCE)


async def test_wait_for_step_result_of_a_sensitive_step_is_redacted(dynwf):
    """follows workers-sdk packages/workflows-shared/tests/context.test.ts, 'should redact a
    sensitive step's output from waitForStepResult' (the pytest plugin's
    ``wait_for_step_result``, §7.3)."""
    instance = dynwf.introspect_instance(dynwf.binding(), "s1")
    await dynwf.binding().create({"id": "s1"})
    await instance.wait_for_status("complete")
    assert await instance.wait_for_step_result("sensitive step") == REDACTED


def test_a_sensitive_steps_error_is_not_redacted(tmp_path):
    """follows workers-sdk packages/workflows-shared/tests/context.test.ts, 'should not redact a
    sensitive step's error': only the output is secret; the failed attempt keeps its message."""
    async def wf(event, step):
        @step.do("sensitive failing step",
                 config={"sensitive": "output", "retries": {"limit": 0, "delay": 0}})
        async def failing():
            raise NonRetryableError("boom with secret context")
        try:
            await failing()
        except Exception:
            pass

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["status"] == "complete"
        (failed,) = h.events("step.failed")
        assert "boom with secret context" in failed.data["error"]["message"]
        view = h.step("do", "sensitive failing step").to_public()
        assert "boom with secret context" in view["error"]["message"]
    arun(main())

"""Conformance of the engine's step API to the platform's semantics, item by item.

Section numbers (§) are those of docs/semantics.md. Covers §2.2-§2.10 (step.do, step config and
its validation, back-off formulas, the step context, the duration grammar, sleep / sleep_until,
wait_for_event, NonRetryableError, catching failures) and §3.2-§3.3 (the Python SDK's implicit
dependencies, ``ctx``, ``concurrent=True`` and the legacy ``depends=`` form). Each test names the
section it proves. Time is a VirtualClock that stands still; a drain ends each sleep and retry
back-off early (fast-forward moves no clock), and the tests that check a wait's length move the
test's clock to each timer instead.
"""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import datetime, timedelta, timezone

import pytest

from engine_harness import DAY, FATAL, HOUR, MINUTE, SECOND, T0, Harness, arun
from emulator.engine import WorkflowTimeoutError
from emulator.rules.durations import parse_duration
from emulator.errors import DurationError
from emulator.runtime.workers.workflows import NonRetryableError

#: every test here runs on both stores, through the harness (tests/conftest.py store_factory)
pytestmark = pytest.mark.usefixtures("store_factory")

DEFAULT_CONFIG = {"retries": {"limit": 5, "delay": 10_000, "backoff": "exponential"},
                  "timeout": 600_000}


async def errored_with(h: Harness, name: str) -> dict[str, str]:
    status = await h.status()
    assert status["status"] == "errored", status
    assert status["output"] is None
    assert status["error"]["name"] == name, status
    return status["error"]


# ---- §2.2 step.do -------------------------------------------------------------------------

def test_s2_2_step_result_is_returned_and_persisted(tmp_path):
    """§2.2: step.do returns the callback's value and persists it as the step's result."""
    async def wf(event, step):
        @step.do("fetch")
        async def fetch():
            return {"items": [1, 2], "ok": True}
        return await fetch()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None,
                                    "output": {"items": [1, 2], "ok": True}}
        row = h.step("do", "fetch")
        assert (row.status, row.attempts) == ("done", 1)
        assert json.loads(row.result) == {"items": [1, 2], "ok": True}
    arun(main())


def test_s2_2_none_result_is_valid_and_cached(tmp_path):
    """§2.2: a step returning None (undefined) is cached; replay returns None without re-running."""
    calls = {"nothing": 0}

    async def wf(event, step):
        @step.do("nothing")
        async def nothing():
            calls["nothing"] += 1
            return None
        value = await nothing()
        await step.sleep("nap", "1 minute")
        return {"value": value}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": {"value": None}}
        assert calls["nothing"] == 1
        assert h.step("do", "nothing").status == "done"
        assert [p.step for p in h.events("step.replayed")][:1] == [("do", "nothing", 1)]
    arun(main())


def test_s2_2_non_serialisable_result_errors_instance_without_retry(tmp_path):
    """§2.2: a result that cannot be stored errors the instance at once (no retry)."""
    calls = {"bad": 0}

    async def wf(event, step):
        @step.do("bad")
        async def bad():
            calls["bad"] += 1
            return object()
        return await bad()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        error = await errored_with(h, FATAL)
        assert 'the step "bad" returned a value which is not serialisable' in error["message"]
        assert calls["bad"] == 1
        assert h.events("step.attempt_failed") == []
    arun(main())


def test_s2_2_same_step_called_twice_is_two_durable_steps(tmp_path):
    """§2.2/§3.2 item 6: calling a step twice makes occurrence 1 and 2 of its name."""
    calls = {"tick": 0}

    async def wf(event, step):
        @step.do("tick")
        async def tick():
            calls["tick"] += 1
            return calls["tick"]
        return [await tick(), await tick()]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == [1, 2]
        assert h.result("do", "tick", 1) == 1
        assert h.result("do", "tick", 2) == 2
    arun(main())


# ---- §2.3 config, defaults, validation ----------------------------------------------------

def test_s2_3_default_config_is_production_defaults(tmp_path):
    """§2.3 + docs/semantics.md §9: defaults are limit 5, delay 10 s, exponential, 10 minutes per attempt."""
    async def wf(event, step):
        @step.do("show")
        async def show(ctx):
            return ctx["config"]
        return await show()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == DEFAULT_CONFIG
        assert [p.data["max_attempts"] for p in h.events("step.started")] == [6]
    arun(main())


def test_s2_3_partial_config_merges_over_defaults(tmp_path):
    """§2.3: the user's config merges over the defaults; durations resolve to milliseconds."""
    async def wf(event, step):
        @step.do("show", config={"retries": {"limit": 2, "delay": "1 second"}})
        async def show(ctx):
            return ctx["config"]
        return await show()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == {
            "retries": {"limit": 2, "delay": 1000, "backoff": "exponential"}, "timeout": 600_000}
    arun(main())


@pytest.mark.parametrize("config", [
    {"retries": {"limit": 1}},                                        # delay missing
    {"retries": {"delay": 100}},                                      # limit missing
    {"timeout": 0},                                                   # zero timeout
    {"timeout": "soon"},                                              # unparsable timeout
    {"retries": {"limit": 1, "delay": 1, "backoff": "random"}},       # unknown backoff
    {"retries": {"limit": 1, "delay": "soon"}},                       # unparsable delay
    {"retries": {"limit": -1, "delay": 1}},                           # negative limit
    {"retries": {"limit": 10_001, "delay": 1}},                       # over 10,000 retries
    {"retries": {"limit": 1, "delay": 1, "jitter": True}},            # unknown retries key
    {"retry": {"limit": 1, "delay": 1}},                              # unknown top-level key
    {"sensitive": "input"},                                           # only "output" allowed
])
def test_s2_3_invalid_step_config_errors_instance(tmp_path, config):
    """§2.3: an invalid step config is fatal: errored, naming the step, callback never run."""
    calls = {"cfg": 0}

    async def wf(event, step):
        @step.do("cfg", config=config)
        async def cfg():
            calls["cfg"] += 1
            return 1
        return await cfg()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        error = await errored_with(h, FATAL)
        assert 'Step config for "cfg"' in error["message"]
        assert calls["cfg"] == 0
        assert h.step("do", "cfg") is None
    arun(main())


def test_s2_3_sensitive_output_is_a_valid_config(tmp_path):
    """§2.3: ``sensitive: "output"`` is accepted."""
    async def wf(event, step):
        @step.do("secret", config={"sensitive": "output"})
        async def secret():
            return "s3cr3t"
        return await secret()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["status"] == "complete"
    arun(main())


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_s2_3_limit_counts_retries_not_attempts(tmp_path, limit):
    """§2.3: ``limit`` counts retries, so an always-failing step runs limit + 1 times."""
    calls = {"flaky": 0}

    async def wf(event, step):
        @step.do("flaky", config={"retries": {"limit": limit, "delay": 0, "backoff": "constant"}})
        async def flaky():
            calls["flaky"] += 1
            raise ValueError("down")
        return await flaky()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await errored_with(h, "ValueError"))["message"] == "down"
        assert calls["flaky"] == limit + 1
        row = h.step("do", "flaky")
        assert (row.status, row.attempts) == ("failed", limit + 1)
    arun(main())


def test_s2_3_retry_succeeds_within_limit(tmp_path):
    """§2.3: a step that fails and then succeeds within its retries completes the instance."""
    calls = {"flaky": 0}

    async def wf(event, step):
        @step.do("flaky", config={"retries": {"limit": 3, "delay": "1 second"}})
        async def flaky():
            calls["flaky"] += 1
            if calls["flaky"] < 3:
                raise ValueError("not yet")
            return "up"
        return await flaky()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": "up"}
        assert h.step("do", "flaky").attempts == 3
    arun(main())


def test_s2_3_timeout_is_per_attempt_and_retried(tmp_path):
    """§2.3/§2.10: a timed-out attempt is an ordinary failed attempt and is retried."""
    calls = {"slow": 0}
    never = asyncio.Event()

    async def wf(event, step):
        @step.do("slow", config={"retries": {"limit": 1, "delay": 0, "backoff": "constant"},
                                 "timeout": 30})
        async def slow():
            calls["slow"] += 1
            if calls["slow"] == 1:
                await never.wait()
            return "second try"
        return await slow()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == "second try"
        (failed,) = h.events("step.attempt_failed")
        assert failed.data["error"]["name"] == "WorkflowTimeoutError"
        assert h.step("do", "slow").attempts == 2
    arun(main())


def test_s2_3_config_persisted_on_first_attempt_is_reused(tmp_path):
    """§2.3: the config is persisted on the first attempt and reused by later attempts even if
    the code changes it in between."""
    config = {"retries": {"limit": 1, "delay": "1 minute", "backoff": "constant"}}
    seen: list[dict] = []

    async def wf(event, step):
        @step.do("flaky", config=copy.deepcopy(config))
        async def flaky(ctx):
            seen.append(ctx["config"])
            if ctx["attempt"] == 1:
                raise ValueError("first")
            return ctx["attempt"]
        return await flaky()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain(jump=False)
        assert (await h.status())["status"] == "running"   # the back-off is held (§4.9)
        config["retries"] = {"limit": 0, "delay": 5}   # a deploy changes the code
        await h.engine.shutdown()
        h.restart_engine()
        await h.engine.drain()
        assert (await h.status())["output"] == 2
        assert seen[1] == seen[0] == {"retries": {"limit": 1, "delay": MINUTE, "backoff": "constant"},
                                      "timeout": 600_000}
    arun(main())


# ---- §2.4 back-off ------------------------------------------------------------------------

def test_s2_4_exponential_backoff_persisted_timer_due_times(tmp_path):
    """§2.4: exponential back-off waits base * 2^(n-1) after failed attempt n; each wait is a
    persisted retry timer, held in the invocation (§4.9): the instance is ``running`` meanwhile."""
    async def wf(event, step):
        @step.do("flaky", config={"retries": {"limit": 3, "delay": "1 second",
                                              "backoff": "exponential"}})
        async def flaky():
            raise ValueError("down")
        return await flaky()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain(jump=False)
        waits = []
        for _ in range(3):
            (timer,) = h.timers()
            assert timer[:2] == ("retry", ("do", "flaky", 1))
            assert (await h.status())["status"] == "running"
            assert h.step("do", "flaky").status == "backoff"
            waits.append(timer[2] - h.clock.now_ms())
            h.clock.advance(timer[2] - h.clock.now_ms())
            await h.engine.drain(jump=False)
        assert waits == [1000, 2000, 4000]
        assert (await errored_with(h, "ValueError"))["message"] == "down"
        assert h.step("do", "flaky").attempts == 4
        assert h.timers() == []
    arun(main())


def test_s2_4_linear_backoff_delays(tmp_path):
    """§2.4: linear back-off waits base * n after failed attempt n."""
    async def wf(event, step):
        @step.do("flaky", config={"retries": {"limit": 3, "delay": "1 second", "backoff": "linear"}})
        async def flaky():
            raise ValueError("down")
        return await flaky()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.drain_moving_clock()
        assert h.retry_delays() == [1000, 2000, 3000]
        assert h.clock.now_ms() == T0 + 6000
        await errored_with(h, "ValueError")
    arun(main())


def test_s2_4_constant_backoff_delays(tmp_path):
    """§2.4: constant back-off waits base after every failed attempt."""
    async def wf(event, step):
        @step.do("flaky", config={"retries": {"limit": 3, "delay": 1500, "backoff": "constant"}})
        async def flaky():
            raise ValueError("down")
        return await flaky()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert h.retry_delays() == [1500, 1500, 1500]
        await errored_with(h, "ValueError")
    arun(main())


def test_s2_4_default_retry_schedule(tmp_path):
    """§2.4 + docs/semantics.md §9: with the defaults a failing step waits 10, 20, 40, 80, 160 s between
    its 6 attempts."""
    calls = {"flaky": 0}

    async def wf(event, step):
        @step.do("flaky")
        async def flaky():
            calls["flaky"] += 1
            raise ValueError("down")
        return await flaky()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert h.retry_delays() == [10_000, 20_000, 40_000, 80_000, 160_000]
        assert calls["flaky"] == 6
        assert [p.data["attempt"] for p in h.events("step.started")] == [1, 2, 3, 4, 5, 6]
        assert len(h.events("step.failed")) == 1
        await errored_with(h, "ValueError")
    arun(main())


# ---- §2.5 step context --------------------------------------------------------------------

def test_s2_5_ctx_contents(tmp_path):
    """§2.5: ctx = {"step": {"name", "count"}, "attempt", "config"}; attempt is 1-indexed and
    count is the occurrence of the name."""
    seen: list[dict] = []

    async def wf(event, step):
        @step.do("ctx-step", config={"retries": {"limit": 2, "delay": 0, "backoff": "constant"}})
        async def ctx_step(ctx):
            seen.append(copy.deepcopy(ctx))
            if ctx["attempt"] < 3:
                raise ValueError("again")
            return ctx["attempt"]
        return [await ctx_step(), await ctx_step()]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == [3, 3]
        config = {"retries": {"limit": 2, "delay": 0, "backoff": "constant"}, "timeout": 600_000}
        assert seen[0] == {"step": {"name": "ctx-step", "count": 1}, "attempt": 1, "config": config}
        assert [(c["step"]["count"], c["attempt"]) for c in seen] == \
            [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    arun(main())


def test_s2_5_mutating_ctx_config_does_not_change_engine(tmp_path):
    """§2.5: mutating ctx["config"] inside the callback does not change the retry policy."""
    calls = {"flaky": 0}

    async def wf(event, step):
        @step.do("flaky", config={"retries": {"limit": 1, "delay": 0, "backoff": "constant"}})
        async def flaky(ctx):
            calls["flaky"] += 1
            ctx["config"]["retries"]["limit"] = 100
            raise ValueError("down")
        return await flaky()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        await errored_with(h, "ValueError")
        assert calls["flaky"] == 2
    arun(main())


# ---- §2.6 durations -----------------------------------------------------------------------

@pytest.mark.parametrize("text,ms", [
    ("1 second", 1000), ("30 seconds", 30_000), ("1.5 minutes", 90_000), ("2 hours", 2 * HOUR),
    ("1 day", DAY), ("26 hours", 26 * HOUR), ("1 week", 7 * DAY), ("1 month", 30 * DAY),
    ("2 months", 60 * DAY), ("1 year", round(365.25 * DAY)), (250, 250), (1.5, 2),
    (timedelta(seconds=3), 3000),
])
def test_s2_6_duration_grammar(text, ms):
    """§2.6: "<number> <unit>[s]" for second..year (month 30 d, year 365.25 d); a bare number is
    milliseconds; a timedelta is accepted."""
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["5 fortnights", "3 lightyears", "10", "soon", "-1 second",
                                  "", "1second", None, True, [1]])
def test_s2_6_bad_durations_rejected(text):
    """§2.6 + docs/architecture.md §5: an unknown unit (or anything else not a duration) is an error, never a
    silent guess."""
    with pytest.raises(DurationError) as info:
        parse_duration(text)
    assert info.value.code == "duration.invalid"


def test_s2_6_unknown_unit_names_the_unit():
    """§2.6: the error for an unknown unit names it."""
    with pytest.raises(DurationError) as info:
        parse_duration("5 fortnights", what="sleep")
    assert "unknown unit 'fortnights'" in info.value.message


def test_s2_6_sleep_with_unknown_unit_errors_instance(tmp_path):
    """§2.6: step.sleep with an unknown unit errors the instance and sleeps nothing."""
    async def wf(event, step):
        await step.sleep("nap", "3 lightyears")
        return "woke"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        error = await errored_with(h, FATAL)
        assert "lightyears" in error["message"]
        assert h.step("sleep", "nap") is None
        assert h.timers() == []
        assert h.clock.now_ms() == T0
    arun(main())


def test_s2_6_numeric_sleep_is_milliseconds(tmp_path):
    """§2.6 + docs/architecture.md §5: a number given to step.sleep is milliseconds."""
    async def wf(event, step):
        await step.sleep("nap", 1500)
        return "woke"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain(jump=False)
        assert h.timers() == [("sleep", ("sleep", "nap", 1), T0 + 1500)]
        assert h.step("sleep", "nap").duration_ms == 1500
        await h.drain_moving_clock()
        assert (await h.status())["output"] == "woke"
        assert h.clock.now_ms() == T0 + 1500
    arun(main())


# ---- §2.7 sleep / sleep_until -------------------------------------------------------------

def test_s2_7_sleep_waits_for_its_duration(tmp_path):
    """§2.7: step.sleep makes the instance ``waiting`` on a persisted timer until it is due."""
    async def wf(event, step):
        await step.sleep("nap", "1 day")
        return "woke"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain(jump=False)
        assert await h.status() == {"status": "waiting", "error": None, "output": None}
        assert h.timers() == [("sleep", ("sleep", "nap", 1), T0 + DAY)]
        assert [p.data["until"] for p in h.events("step.sleeping")] == [T0 + DAY]
        h.clock.advance(DAY - 1)
        await h.engine.drain(jump=False)
        assert (await h.status())["status"] == "waiting"
        h.clock.advance(1)
        await h.engine.drain(jump=False)
        assert await h.status() == {"status": "complete", "error": None, "output": "woke"}
        assert h.step("sleep", "nap").ended_at == T0 + DAY
    arun(main())


def test_s2_7_sleep_until_datetime(tmp_path):
    """§2.7: sleep_until(datetime) wakes at that instant (naive datetimes are UTC)."""
    target = datetime.fromtimestamp((T0 + 2 * HOUR) / 1000, tz=timezone.utc).replace(tzinfo=None)

    async def wf(event, step):
        await step.sleep_until("alarm", target)
        return "woke"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain(jump=False)
        assert h.timers() == [("sleep", ("sleep", "alarm", 1), T0 + 2 * HOUR)]
        await h.drain_moving_clock()
        assert (await h.status())["output"] == "woke"
        assert h.clock.now_ms() == T0 + 2 * HOUR
    arun(main())


def test_s2_7_sleep_until_epoch_milliseconds(tmp_path):
    """§2.7: sleep_until(number) takes epoch milliseconds; an aware datetime works too."""
    aware = datetime.fromtimestamp((T0 + 3 * HOUR) / 1000, tz=timezone.utc)

    async def wf(event, step):
        await step.sleep_until("first", T0 + HOUR)
        await step.sleep_until("second", aware)
        return "woke"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.drain_moving_clock()
        assert (await h.status())["output"] == "woke"
        assert h.step("sleep", "first").ended_at == T0 + HOUR
        assert h.step("sleep", "second").ended_at == T0 + 3 * HOUR
    arun(main())


def test_s2_7_sleep_until_in_the_past_returns_at_once(tmp_path):
    """§2.7 + docs/semantics.md §9: sleep_until a past time returns at once (no error, no timer)."""
    async def wf(event, step):
        await step.sleep_until("late", T0 - DAY)
        return "went on"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain(jump=False)
        assert await h.status() == {"status": "complete", "error": None, "output": "went on"}
        assert h.step("sleep", "late").status == "done"
        assert h.clock.now_ms() == T0
    arun(main())


def test_s2_7_changed_sleep_duration_on_replay_warns_and_keeps_original(tmp_path):
    """§2.7/§4.2 + docs/semantics.md §9: sleeps are keyed (name, count); a duration changed on replay is a
    warning log and the original wake-up time is kept."""
    duration = {"nap": "1 hour"}

    async def wf(event, step):
        await step.sleep("nap", duration["nap"])
        return "woke"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await h.engine.drain(jump=False)
        await inst.pause()
        duration["nap"] = "2 hours"
        await inst.resume()
        await h.engine.drain(jump=False)     # replay reaches the sleep with the new duration
        assert (await h.status())["status"] == "waiting"
        warnings = [log for log in h.engine.store.list_logs("i1") if log["level"] == "warning"]
        assert len(warnings) == 1
        assert "3600000ms" in warnings[0]["message"] and "7200000ms" in warnings[0]["message"]
        await h.drain_moving_clock()
        assert (await h.status())["output"] == "woke"
        assert h.step("sleep", "nap").ended_at == T0 + HOUR
    arun(main())


def test_s2_7_sleep_of_365_days_is_allowed(tmp_path):
    """§2.7/§5: the longest sleep, 365 days, is accepted."""
    async def wf(event, step):
        await step.sleep("long", "365 days")
        return "woke"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.drain_moving_clock()
        assert (await h.status())["output"] == "woke"
        assert h.clock.now_ms() == T0 + 365 * DAY
    arun(main())


def test_s2_7_sleep_longer_than_365_days_is_refused(tmp_path):
    """§2.7/§5: step.sleep is limited to 365 days; a longer sleep is refused (errored), not slept."""
    async def wf(event, step):
        await step.sleep("too-long", "366 days")
        return "woke"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain(jump=False)
        status = await h.status()
        assert status["status"] == "errored", status
        assert h.timers() == []
    arun(main())


# ---- §2.8 wait_for_event ------------------------------------------------------------------

def test_s2_8_event_delivered_to_waiter(tmp_path):
    """§2.8: wait_for_event returns {"payload", "timestamp", "type"}; the instance is ``waiting``
    until the event arrives."""
    async def wf(event, step):
        got = await step.wait_for_event("approval", "deploy-approval", timeout="1 hour")
        return {"payload": got["payload"], "type": got["type"],
                "timestamp_is_datetime": isinstance(got["timestamp"], datetime),
                "keys": sorted(got)}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "waiting", "error": None, "output": None}
        assert h.step("wait", "approval").status == "waiting"
        await inst.send_event({"type": "deploy-approval", "payload": {"ok": True}})
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": {
            "payload": {"ok": True}, "type": "deploy-approval", "timestamp_is_datetime": True,
            "keys": ["payload", "timestamp", "type"]}}
    arun(main())


def test_s2_8_event_sent_before_wait_is_buffered(tmp_path):
    """§1.3/§2.8: an event sent before the instance reaches wait_for_event is buffered and
    delivered when it gets there."""
    async def wf(event, step):
        await step.sleep("first", "1 minute")
        got = await step.wait_for_event("approval", "approval")
        return got["payload"]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await inst.send_event({"type": "approval", "payload": "early"})   # still queued
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": "early"}
    arun(main())


def test_s2_8_buffered_events_are_fifo_per_type(tmp_path):
    """§2.8 + docs/semantics.md §9: buffered events are delivered first-in first-out, per type."""
    async def wf(event, step):
        await step.sleep("first", "1 minute")
        a1 = await step.wait_for_event("a1", "a")
        b1 = await step.wait_for_event("b1", "b")
        a2 = await step.wait_for_event("a2", "a")
        return [a1["payload"], b1["payload"], a2["payload"]]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await h.engine.drain(jump=False)
        for type, payload in (("a", 1), ("b", "x"), ("a", 2)):
            await inst.send_event({"type": type, "payload": payload})
        await h.engine.drain()
        assert (await h.status())["output"] == [1, "x", 2]
    arun(main())


def test_s2_8_multiple_waiters_of_one_type_are_served_fifo(tmp_path):
    """§2.8: several waiters of the same type are served in the order they started waiting."""
    async def wf(event, step):
        got = await asyncio.gather(step.wait_for_event("w1", "t"), step.wait_for_event("w2", "t"))
        return [g["payload"] for g in got]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await h.engine.drain()
        await inst.send_event({"type": "t", "payload": "first"})
        await inst.send_event({"type": "t", "payload": "second"})
        await h.engine.drain()
        assert (await h.status())["output"] == ["first", "second"]
        assert h.result("wait", "w1")["payload"] == "first"
    arun(main())


def test_s2_8_default_timeout_is_24_hours(tmp_path):
    """§2.8: the default wait_for_event timeout is 24 hours (a persisted event-timeout timer)."""
    async def wf(event, step):
        return (await step.wait_for_event("w", "t"))["payload"]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert h.timers() == [("event_timeout", ("wait", "w", 1), T0 + DAY)]
        assert [p.data["timeout_at"] for p in h.events("step.waiting")] == [T0 + DAY]
    arun(main())


def test_s2_8_uncaught_timeout_errors_instance(tmp_path):
    """§2.8: an uncaught wait_for_event timeout errors the instance; the error is named `Error`,
    as the platform's tests read it (the step keeps WorkflowTimeoutError)."""
    async def wf(event, step):
        return await step.wait_for_event("w", "t", timeout="1 hour")

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()        # does not jump over event timeouts
        assert (await h.status())["status"] == "waiting"
        assert h.clock.now_ms() == T0
        h.clock.advance(HOUR)
        await h.engine.drain(jump=False)
        error = await errored_with(h, "Error")
        assert error["message"] == "Execution timed out after 3600000ms"
        assert h.step("wait", "w").status == "failed"
    arun(main())


def test_s2_8_timeout_is_catchable(tmp_path):
    """§2.8: a wait_for_event timeout can be caught in run()."""
    async def wf(event, step):
        try:
            await step.wait_for_event("w", "t", timeout="10 minutes")
        except WorkflowTimeoutError as exc:
            return {"timed_out": str(exc)}
        return {"timed_out": None}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.drain_moving_clock(("sleep", "retry", "event_timeout"))
        assert await h.status() == {"status": "complete", "error": None,
                                    "output": {"timed_out": "Execution timed out after 600000ms"}}
        assert h.clock.now_ms() == T0 + 10 * MINUTE
    arun(main())


def test_s2_8_timed_out_waiter_does_not_consume_later_events(tmp_path):
    """§2.8: a waiter that timed out is gone: a later event of its type goes to the next waiter."""
    async def wf(event, step):
        try:
            await step.wait_for_event("w1", "t", timeout="1 hour")
            timed_out = False
        except WorkflowTimeoutError:
            timed_out = True
        await step.sleep("gap", "1 minute")
        got = await step.wait_for_event("w2", "t", timeout="1 hour")
        return {"timed_out": timed_out, "got": got["payload"]}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await h.engine.drain()
        h.clock.advance(HOUR)
        await h.engine.drain(jump=False)     # w1 times out, run() sleeps in "gap"
        assert h.step("wait", "w1").status == "failed"
        await inst.send_event({"type": "t", "payload": "late"})
        assert h.step("wait", "w1").status == "failed"
        await h.engine.drain()
        assert (await h.status())["output"] == {"timed_out": True, "got": "late"}
    arun(main())


def test_s2_8_received_event_is_persisted_and_replayed(tmp_path):
    """§2.8: the received event is persisted; a replay (even in a new engine) returns it again."""
    runs = {"n": 0}

    async def wf(event, step):
        runs["n"] += 1
        got = await step.wait_for_event("w", "t")
        await step.sleep("after", "1 hour")
        return got["payload"]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        inst = await h.create()
        await h.engine.drain()
        await inst.send_event({"type": "t", "payload": {"v": 7}})
        await h.engine.drain(jump=False)
        assert (await h.status())["status"] == "waiting"
        h.restart_engine()
        await h.engine.drain()
        assert (await h.status())["output"] == {"v": 7}
        assert runs["n"] == 3
    arun(main())


@pytest.mark.parametrize("timeout", ["366 days", 500])
def test_s2_8_timeout_outside_1_second_to_365_days_is_refused(tmp_path, timeout):
    """§2.8/§5: a wait_for_event timeout must be from 1 second to 365 days."""
    async def wf(event, step):
        return await step.wait_for_event("w", "t", timeout=timeout)

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain(jump=False)
        status = await h.status()
        assert status["status"] == "errored", status
        assert h.timers() == []
    arun(main())


# ---- §2.9 NonRetryableError ---------------------------------------------------------------

def test_s2_9_non_retryable_error_stops_retries(tmp_path):
    """§2.9/§1.4: NonRetryableError stops retries at once; uncaught it errors the instance with
    {"name": "NonRetryableError", "message": <original>}."""
    calls = {"charge": 0}

    async def wf(event, step):
        @step.do("charge")
        async def charge():
            calls["charge"] += 1
            raise NonRetryableError("card declined")
        return await charge()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "errored", "output": None,
                                    "error": {"name": "NonRetryableError", "message": "card declined"}}
        assert calls["charge"] == 1
        assert h.events("step.attempt_failed") == []
        assert h.clock.now_ms() == T0
    arun(main())


def test_s2_9_non_retryable_error_is_catchable(tmp_path):
    """§2.9: a NonRetryableError can be caught around the step in run()."""
    async def wf(event, step):
        @step.do("charge")
        async def charge():
            raise NonRetryableError("card declined")
        try:
            await charge()
        except NonRetryableError as exc:
            return {"caught": str(exc)}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == {"caught": "card declined"}
    arun(main())


def test_s2_9_subclass_of_non_retryable_error_is_not_retried(tmp_path):
    """§2.9 + §9.11: subclasses of NonRetryableError are non-retryable too."""
    class Declined(NonRetryableError):
        pass
    calls = {"charge": 0}

    async def wf(event, step):
        @step.do("charge")
        async def charge():
            calls["charge"] += 1
            raise Declined("no funds")
        return await charge()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        error = await errored_with(h, "NonRetryableError")
        assert error["message"] == "no funds"
        assert calls["charge"] == 1
    arun(main())


# ---- §2.10 failures after retries ---------------------------------------------------------

def test_s2_10_uncaught_exhausted_failure_errors_instance(tmp_path):
    """§2.10: a step that exhausts its retries errors the instance with the error's name/message."""
    async def wf(event, step):
        @step.do("flaky", config={"retries": {"limit": 1, "delay": "1 second"}})
        async def flaky():
            raise ValueError("boom")
        return await flaky()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "errored", "output": None,
                                    "error": {"name": "ValueError", "message": "boom"}}
        assert h.error("do", "flaky") == {"name": "ValueError", "message": "boom"}
    arun(main())


def test_s2_10_exhausted_failure_caught_deterministically_across_replay(tmp_path):
    """§2.10: run() may catch an exhausted step failure; the failure is persisted, so every replay
    (also in a new engine) takes the same except-path without re-running the step."""
    calls = {"run": 0, "flaky": 0}

    async def wf(event, step):
        calls["run"] += 1

        @step.do("flaky", config={"retries": {"limit": 1, "delay": "1 second",
                                              "backoff": "constant"}})
        async def flaky():
            calls["flaky"] += 1
            raise ValueError(f"bad attempt {calls['flaky']}")
        try:
            await flaky()
            caught = None
        except ValueError as exc:
            caught = str(exc)
        await step.sleep("nap", "1 hour")
        return {"caught": caught}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain(jump=False)
        h.clock.advance(SECOND)
        await h.engine.drain(jump=False)     # attempt 2 fails, caught, now sleeping
        assert (await h.status())["status"] == "waiting"
        h.restart_engine()
        await h.engine.drain()
        assert (await h.status())["output"] == {"caught": "bad attempt 2"}
        assert calls["flaky"] == 2
        assert calls["run"] == 2    # the retry ran in the first invocation (§4.9), then a replay
    arun(main())


def test_s2_10_user_defined_exception_caught_with_exception(tmp_path):
    """§2.10/§3.2 item 7: a user-defined exception from a step is catchable with ``Exception`` and
    keeps its message."""
    class QuotaError(Exception):
        pass

    async def wf(event, step):
        @step.do("quota", config={"retries": {"limit": 0, "delay": 0}})
        async def quota():
            raise QuotaError("over quota")
        try:
            await quota()
        except Exception as exc:  # noqa: BLE001 - what the docs tell users to write
            return {"message": str(exc)}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == {"message": "over quota"}
        assert h.error("do", "quota") == {"name": "QuotaError", "message": "over quota"}
    arun(main())


# ---- §3.2 implicit dependencies -----------------------------------------------------------

def test_s3_2_dependency_injected_by_step_name(tmp_path):
    """§3.2: a parameter named like an earlier step receives its result; the name defaults to the
    function's name; an un-run dependency is run first."""
    async def wf(event, step):
        @step.do()
        async def base_value():
            return 10

        @step.do()
        async def derived(base_value):
            return base_value + 5
        return await derived()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == 15
        assert [s.key for s in h.engine.store.list_steps("i1")] == [
            ("do", "base_value", 1), ("do", "derived", 1)]
    arun(main())


def test_s3_2_completed_dependency_is_memoised_in_the_run(tmp_path):
    """§3.2 item 4: a dependency that already completed in this run is not run again."""
    calls = {"base": 0}

    async def wf(event, step):
        @step.do("base")
        async def base():
            calls["base"] += 1
            return 2

        @step.do("double")
        async def double(base):
            return base * 2

        @step.do("triple")
        async def triple(base):
            return base * 3
        first = await base()
        return [first, await double(), await triple()]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == [2, 4, 6]
        assert calls["base"] == 1
        assert h.step("do", "base", 2) is None
    arun(main())


def test_s3_2_parameter_matches_step_name_not_function_name(tmp_path):
    """§3.2 item 2: parameters match step *names*; an unmatched one raises
    TypeError("Received unexpected parameter <name>") when the step is called, not when decorated."""
    marks: list[str] = []

    async def wf(event, step):
        @step.do("dependency a")
        async def step_a():
            return 1

        @step.do("b")
        async def b(step_a):
            return step_a
        marks.append("decorated")
        try:
            await b()
        except TypeError as exc:
            return {"marks": marks, "error": str(exc)}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == {"marks": ["decorated"],
                                                "error": "Received unexpected parameter step_a"}
        assert h.engine.store.list_steps("i1") == []
    arun(main())


def test_s3_2_unexpected_parameter_uncaught_errors_instance(tmp_path):
    """§3.2: the TypeError for an unknown parameter, uncaught, errors the instance."""
    async def wf(event, step):
        @step.do("s")
        async def s(nope):
            return nope
        return await s()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "errored", "output": None, "error": {
            "name": "TypeError", "message": "Received unexpected parameter nope"}}
    arun(main())


def test_s3_2_ctx_injected_by_name_between_dependencies(tmp_path):
    """§3.2: a parameter named ``ctx`` receives the step context wherever it stands."""
    async def wf(event, step):
        @step.do("left")
        async def left():
            return "L"

        @step.do("right")
        async def right():
            return "R"

        @step.do("combined")
        async def combined(left, ctx, right):
            return [left, ctx["step"], ctx["attempt"], right]
        return await combined()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == ["L", {"name": "combined", "count": 1}, 1, "R"]
    arun(main())


def test_s3_2_concurrent_true_resolves_dependencies_concurrently(tmp_path):
    """§3.2 item 3: with concurrent=True the dependencies run at the same time (left can only
    finish once right has started)."""
    async def wf(event, step):
        right_started = asyncio.Event()

        @step.do("left", config={"retries": {"limit": 0, "delay": 0}, "timeout": "5 seconds"})
        async def left():
            await right_started.wait()
            return "L"

        @step.do("right")
        async def right():
            right_started.set()
            return "R"

        @step.do("combined", concurrent=True)
        async def combined(left, right):
            return left + right
        return await combined()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert await h.status() == {"status": "complete", "error": None, "output": "LR"}
    arun(main())


def test_s3_2_default_resolves_dependencies_in_order(tmp_path):
    """§3.2 item 3: without concurrent=True dependencies are resolved one after another, in
    parameter order."""
    order: list[str] = []

    async def wf(event, step):
        @step.do("left")
        async def left():
            order.append("left start")
            await asyncio.sleep(0)
            order.append("left end")
            return "L"

        @step.do("right")
        async def right():
            order.append("right start")
            await asyncio.sleep(0)
            order.append("right end")
            return "R"

        @step.do("combined")
        async def combined(left, right):
            return left + right
        return await combined()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == "LR"
        assert order == ["left start", "left end", "right start", "right end"]
    arun(main())


def test_s3_2_decorating_does_not_run_the_step(tmp_path):
    """§3.2: the decorator only declares the step; nothing runs until it is called and awaited."""
    calls = {"never": 0}

    async def wf(event, step):
        @step.do("never")
        async def never():
            calls["never"] += 1
            return 1
        return "done"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == "done"
        assert calls["never"] == 0
        assert h.engine.store.list_steps("i1") == []
    arun(main())


def test_s3_2_dependencies_replayed_from_the_store(tmp_path):
    """§3.2 item 4 + §4.1: memoisation is per run; on replay dependencies come from the store
    without running their bodies."""
    calls = {"base": 0, "derived": 0}

    async def wf(event, step):
        @step.do("base")
        async def base():
            calls["base"] += 1
            return 3

        @step.do("derived")
        async def derived(base):
            calls["derived"] += 1
            return base + 1
        first = await derived()
        await step.sleep("nap", "1 minute")
        return [first, await derived()]

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == [4, 4]
        assert calls == {"base": 1, "derived": 2}
        assert h.result("do", "derived", 2) == 4
    arun(main())


# ---- §3.3 legacy depends= -----------------------------------------------------------------

LEGACY = "2026-01-01"


def test_s3_3_legacy_depends_fills_parameters_positionally(tmp_path):
    """§3.3: before 2026-02-25 non-ctx parameters are filled positionally from ``depends``."""
    async def wf(event, step):
        @step.do("step a")
        async def step_a():
            return 1

        @step.do("step b")
        async def step_b():
            return 2

        @step.do("my final step", depends=[step_a, step_b], concurrent=True)
        async def my_final_step(result_a=0, result_b=0):
            return result_a * 10 + result_b
        return await my_final_step()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf, compatibility_date=LEGACY)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == 12
        assert {s.name for s in h.engine.store.list_steps("i1")} == {"step a", "step b",
                                                                      "my final step"}
    arun(main())


def test_s3_3_legacy_ctx_matched_by_name(tmp_path):
    """§3.3: in the legacy form ``ctx`` is matched by name anywhere; the rest come from depends."""
    async def wf(event, step):
        @step.do("a")
        async def a():
            return 1

        @step.do("c", depends=[a])
        async def c(ctx, value):
            return [ctx["step"]["name"], value]
        return await c()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf, compatibility_date=LEGACY)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == ["c", 1]
    arun(main())


def test_s3_3_legacy_missing_depends_type_error(tmp_path):
    """§3.3: non-ctx parameters without ``depends`` raise the SDK's exact TypeError."""
    async def wf(event, step):
        @step.do("final")
        async def final(x, y, ctx):
            return x + y
        try:
            await final()
        except TypeError as exc:
            return str(exc)

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf, compatibility_date=LEGACY)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == \
            "Step has 2 non-ctx parameter(s) but no 'depends' list provided"
    arun(main())


def test_s3_3_legacy_depends_count_mismatch_type_error(tmp_path):
    """§3.3: a ``depends`` list of the wrong length raises the SDK's exact TypeError."""
    async def wf(event, step):
        @step.do("a")
        async def a():
            return 1

        @step.do("final", depends=[a])
        async def final(x, y):
            return x + y
        try:
            await final()
        except TypeError as exc:
            return str(exc)

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf, compatibility_date=LEGACY)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == \
            "Step declares 2 non-ctx parameter(s) but 'depends' has 1 item(s)"
    arun(main())


@pytest.mark.parametrize("date,implicit", [("2026-02-24", False), ("2026-02-25", True),
                                           ("2026-06-01", True)])
def test_s3_3_compatibility_date_selects_the_form(tmp_path, date, implicit):
    """§3/§3.3: the implicit form applies from compatibility date 2026-02-25; before it the legacy
    form (``depends=``) applies."""
    async def wf(event, step):
        @step.do("a")
        async def a():
            return 1
        try:
            @step.do("b", depends=[a])
            async def b(value):
                return value
        except TypeError:
            return "depends refused"
        return await b()

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf, compatibility_date=date)
        await h.create()
        await h.engine.drain()
        assert (await h.status())["output"] == ("depends refused" if implicit else 1)
    arun(main())


def test_an_oversized_step_result_fails_the_attempt_with_the_platforms_words(tmp_path):
    """docs/semantics.md, "Steps": a result over 1 MiB fails the attempt (retried like any other
    failure) with the platform's message and class, no internal code prefix."""
    async def wf(event, step):
        @step.do("big", config={"retries": {"limit": 1, "delay": 0}})
        async def big():
            return "x" * (1024 * 1024 + 1)
        try:
            await big()
        except Exception as exc:
            return {"name": type(exc).__name__, "error_name": getattr(exc, "name", None),
                    "message": str(exc)}

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        status = await h.status()
        assert status["status"] == "complete", status
        assert status["output"]["message"] == ("Step big-1 output is too large. Maximum allowed "
                                               "size is 1MiB.")
        assert status["output"]["error_name"] == "WorkflowInternalError"
        assert h.error("do", "big") == {"name": "WorkflowInternalError", "message":
                                        "Step big-1 output is too large. Maximum allowed size is 1MiB."}
        assert h.step("do", "big").attempts == 2
    arun(main())


def test_an_event_payload_of_exactly_the_limit_is_accepted_and_one_byte_more_refused(tmp_path):
    """docs/semantics.md, "Steps": the 1 MiB limit is the payload's own; the event record around
    it (type, timestamp) is not charged to the sender."""
    from emulator.errors import PayloadTooLargeError

    async def wf(event, step):
        received = await step.wait_for_event("big", "big", timeout="1 hour")
        return len(received["payload"])

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        await h.engine.drain()
        exact = "x" * (1024 * 1024 - 2)       # with its two quotes: exactly 1 MiB of JSON
        try:
            h.engine.control.send_event("i1", "big", exact + "y")
        except PayloadTooLargeError as exc:
            refused = exc.message
        else:
            refused = None
        h.engine.control.send_event("i1", "big", exact)
        await h.engine.drain()
        assert refused is not None and "over the limit" in refused
        assert await h.status() == {"status": "complete", "error": None, "output": len(exact)}
    arun(main())

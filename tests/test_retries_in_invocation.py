"""A step's retries happen inside one invocation of `run()` (docs/semantics.md §4.9): state in the
workflow's closure survives a short back-off, in the host and in a tenant's isolate; a long one
hibernates; fast-forward, `advance()`, pause, terminate and an engine stop each meet a back-off
held in the invocation."""

from __future__ import annotations

import asyncio

import pytest

from emulator.defaults import RETRY_IN_INVOCATION_MS
from emulator.engine import Engine, VirtualClock, WorkflowDefinition
from engine_harness import MINUTE, T0, FnWorkflow, Harness, arun
from parity_projects import WHERE, binding_of, target_of, write_parity

SOURCE = '''
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        tries = []

        @step.do("flaky", config={"retries": {"limit": 3, "delay": event["payload"]["delay"],
                                              "backoff": "constant"}})
        async def flaky(ctx):
            tries.append(ctx["attempt"])
            if ctx["attempt"] <= 3:
                raise ValueError(f"attempt {ctx['attempt']} failed")
            return ctx["attempt"]

        return {"result": await flaky(), "tries": tries}
'''


@pytest.fixture(params=WHERE)
def where(request):
    return request.param


@pytest.fixture
def dynwf_project(tmp_path, where):
    return write_parity(tmp_path / "project", where, SOURCE)


async def test_a_short_back_off_keeps_the_closure_and_is_skipped_without_waiting(dynwf, where):
    """§4.9: three failed attempts, one minute apart, in one invocation: the closure's list holds
    all four attempts; time skipping ends each back-off at once, no clock moves."""
    started = dynwf.now()
    r1 = dynwf.introspect_instance(target_of(dynwf, where), "r1")
    await binding_of(dynwf, where).create({"id": "r1", "params": {"delay": "1 minute"}})
    await r1.wait_for_status("complete")
    assert await r1.get_output() == {"result": 4, "tries": [1, 2, 3, 4]}
    assert (dynwf.now() - started).total_seconds() < 30     # 3 minutes were never waited


async def test_a_long_back_off_hibernates_and_replays(dynwf, where):
    """§4.9: a back-off longer than the line ends the invocation; each attempt after it runs in a
    fresh replay, whose closure starts empty."""
    assert 10 * MINUTE > RETRY_IN_INVOCATION_MS
    r2 = dynwf.introspect_instance(target_of(dynwf, where), "r2")
    await binding_of(dynwf, where).create({"id": "r2", "params": {"delay": "10 minutes"}})
    await r2.wait_for_status("complete")
    assert await r2.get_output() == {"result": 4, "tries": [4]}


@pytest.mark.parametrize("where", ["isolate"], indirect=True)
async def test_advance_ends_a_back_off_held_in_the_invocation(dynwf, where):
    """§4.9: without time skipping the back-off holds the invocation, `running`, until the clock
    reaches its end; `advance()` moves it there."""
    dynwf.time_skipping = False
    r3 = dynwf.introspect_instance(target_of(dynwf, where), "r3")
    await binding_of(dynwf, where).create({"id": "r3", "params": {"delay": "1 minute"}})
    for attempt in (1, 2, 3):
        await dynwf.settle()
        (flaky,) = r3.steps()
        assert (flaky["status"], flaky["attempts"]) == ("backoff", attempt)
        assert (await r3.status())["status"] == "running"
        await dynwf.advance("1 minute")
    await r3.wait_for_status("complete")
    assert await r3.get_output() == {"result": 4, "tries": [1, 2, 3, 4]}


# ---- the engine: pause, terminate, an engine stop during a held back-off ------------------------

def _flaky_workflow(tries):
    """``tries``: every attempt, across invocations; the output's: this invocation's."""
    async def wf(event, step):
        seen = []

        @step.do("flaky", config={"retries": {"limit": 3, "delay": "1 minute",
                                              "backoff": "constant"}})
        async def flaky(ctx):
            tries.append(ctx["attempt"])
            seen.append(ctx["attempt"])
            if ctx["attempt"] <= 1:
                raise ValueError("down")
            return ctx["attempt"]
        return {"result": await flaky(), "tries": seen}
    return wf


def test_pause_during_a_held_back_off_ends_the_invocation(tmp_path):
    """§4.9: a pause during a back-off held in the invocation lands at once (no step is in
    flight); resume replays, and the retry runs when the back-off's time, shifted by the paused
    time, has come."""
    async def main():
        tries = []
        h = Harness(tmp_path / "db.sqlite", _flaky_workflow(tries))
        handle = await h.create()
        await h.engine.drain(jump=False)
        assert (await h.status())["status"] == "running" and h.step("do", "flaky").status == "backoff"
        await handle.pause()
        await h.engine.drain(jump=False)
        assert (await h.status())["status"] == "paused" and not h.engine.live
        h.clock.advance(10 * MINUTE)
        await handle.resume()
        await h.engine.drain(jump=False)
        assert h.step("do", "flaky").status == "backoff"       # paused time does not count
        await h.drain_moving_clock()
        assert (await h.status())["output"] == {"result": 2, "tries": [2]}   # a new invocation
    arun(main())


def test_terminate_during_a_held_back_off(tmp_path):
    """§4.9: terminate stops the held invocation; no attempt runs after it."""
    async def main():
        tries = []
        h = Harness(tmp_path / "db.sqlite", _flaky_workflow(tries))
        handle = await h.create()
        await h.engine.drain(jump=False)
        await handle.terminate()
        await h.engine.drain()
        assert (await h.status())["status"] == "terminated"
        assert tries == [1] and not h.engine.live
    arun(main())


def test_an_engine_stop_during_a_held_back_off_keeps_the_attempt_count(tmp_path):
    """§4.9 + §4.4: the failed attempt and the back-off's end are committed before the invocation
    waits; an engine stopped during the wait leaves them, and the next lifetime makes the retry
    when its time comes (attempt 2, not 1 again)."""
    async def main():
        tries = []
        h = Harness(tmp_path / "db.sqlite", _flaky_workflow(tries))
        await h.create()
        await h.engine.drain(jump=False)
        row = h.step("do", "flaky")
        assert (row.status, row.attempts) == ("backoff", 1)
        assert [t[0] for t in h.timers()] == ["retry"]
        await h.engine.shutdown()
        h.restart_engine()
        await h.engine.drain()
        assert (await h.status())["output"] == {"result": 2, "tries": [2]}
        assert tries == [1, 2] and h.step("do", "flaky").attempts == 2
    arun(main())


def test_fast_forward_never_waits_for_a_held_back_off_in_real_time(tmp_path):
    """§4.8 + §4.9: the engine's drain with fast-forward ends a held back-off at once although
    its lifetime is live; a back-off of an hour held in real time would not finish here."""
    async def main():
        tries = []
        h = Harness(tmp_path / "db.sqlite", _flaky_workflow(tries))
        await h.create()
        await asyncio.wait_for(h.engine.drain(), 20)
        assert (await h.status())["output"] == {"result": 2, "tries": [1, 2]}
    arun(main())


def test_an_engine_killed_during_a_held_back_off_retries_in_the_next_lifetime(tmp_path):
    """§4.9 + §4.4: an engine that dies (its lifetime gone, its lease left to expire) during a
    held back-off: another engine takes the instance over, replays to the step and makes attempt
    2 when the back-off ends; the first attempt is not run again."""
    async def main():
        tries = []
        clock = VirtualClock(T0, flowing=False)
        path = tmp_path / "db.sqlite"

        def engine(owner):
            return Engine(path, [WorkflowDefinition("wf", lambda row: FnWorkflow(
                _flaky_workflow(tries)))], clock=clock, owner=owner, lease_ms=300, poll_ms=20)
        first = engine("first")
        await first.binding("wf").create({"id": "k1", "params": {}})
        await first.drain(jump=False)
        assert first.store.get_step("k1", ("do", "flaky", 1)).attempts == 1
        for task in list(first._lifetime_tasks):   # the process dies: no write, lease left
            task.cancel()
        await asyncio.sleep(0)
        second = engine("second")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while second.store.get_instance("k1").status != "complete" and loop.time() < deadline:
            await second.drain()                   # returns at once while the lease holds
            await asyncio.sleep(0.05)
        status = await (await second.binding("wf").get("k1")).status()
        assert status["output"] == {"result": 2, "tries": [2]}
        assert tries == [1, 2]
        assert second.store.get_step("k1", ("do", "flaky", 1)).attempts == 2
        first.close()
        second.close()
    arun(main())


def test_dev_fast_forward_ends_a_held_back_off(tmp_path):
    """§4.9: under `dynwf dev --fast-forward` (the engine serving, the idle skipper beside it) a
    back-off held in the invocation is ended at once, as a sleep is."""
    from emulator.server import fast_forward_idle

    async def main():
        tries = []
        engine = Engine(tmp_path / "db.sqlite", [WorkflowDefinition(
            "wf", lambda row: FnWorkflow(_flaky_workflow(tries)))], clock=VirtualClock(T0),
            poll_ms=20)
        stop = asyncio.Event()
        served = asyncio.gather(engine.serve(stop), fast_forward_idle(engine, stop))
        handle = await engine.binding("wf").create({"id": "f1", "params": {}})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20          # the back-off is a minute of real time otherwise
        while (await handle.status())["status"] != "complete" and loop.time() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await served
        assert (await handle.status())["output"] == {"result": 2, "tries": [1, 2]}
        engine.close()
    arun(main())

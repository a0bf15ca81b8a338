"""The virtual clock moves at most 365 days per jump (docs/semantics.md, "Time"), and
fast-forward moves no clock at all: one tenant's timer cannot drag everyone's time along (the
report: a sleep due at 1e300)."""

import asyncio

import pytest
from engine_harness import DAY, T0, Harness

from emulator.engine import VirtualClock
from emulator.rules.limits import MAX_SLEEP_MS


def test_a_jump_past_365_days_is_clamped_in_the_clock():
    clock = VirtualClock(T0, flowing=False)
    assert clock.jump_to(T0 + 10 * 365 * DAY) == T0 + MAX_SLEEP_MS
    assert clock.now_ms() == T0 + MAX_SLEEP_MS
    clock.advance(10**300)
    assert clock.now_ms() == T0 + 2 * MAX_SLEEP_MS
    assert clock.jump_to(T0) == T0 + 2 * MAX_SLEEP_MS           # never backward
    with pytest.raises(ValueError):
        clock.jump_to(float("inf"))
    assert clock.within_jump(clock.now_ms() + MAX_SLEEP_MS)
    assert not clock.within_jump(clock.now_ms() + MAX_SLEEP_MS + 1)


def test_a_timer_out_of_reach_moves_no_clock(tmp_path):
    """A timer ten years out (none can be written now; a database from before could hold one)
    moves nobody's time: fast-forward ends the sleeper's own hour early, and the clock stays."""
    async def nap(event, step):
        await step.sleep("nap", "1 hour")
        return "awake"

    async def scenario():
        h = Harness(tmp_path / "db.sqlite", nap)
        with h.engine.store.write():
            h.engine.store.add_timer_txn("elsewhere", "sleep", ("sleep", "far", 1),
                                         T0 + 10 * 365 * DAY)
        await h.create(id="sleeper")
        await asyncio.wait_for(h.engine.drain(), 30)
        status = h.engine.control.status("sleeper")
        now = h.clock.now_ms()
        h.engine.close()
        return status, now
    status, now = asyncio.run(scenario())
    assert status["status"] == "complete" and status["output"] == "awake"
    assert now == T0

"""Moving an engine forward from a test: run it until something holds, skip time, advance time.

The model is Temporal's time-skipping test environment. Nothing runs behind the test's back: the
engine makes progress while a test *waits* (``wait_for_status``, ``wait_for_step_result``,
``advance``, ``settle``). While a wait finds nothing runnable, the sleep or retry back-off due
first ends now (``time_skipping``: that instance's own timer, early; the clock does not move,
so no other instance's time passes and no recorded time runs ahead); an event timeout is never
skipped by a wait, because a
test that forgot to send an event should hear about it, not see the timeout path taken silently.
``advance(duration)`` moves the clock by exactly ``duration``, firing every timer that falls due on
the way (event timeouts included) at its own time.

A wait that can go no further, because the instance waits for an event nobody sends or is paused,
gives other tasks of the test a short grace period (real time) to change something, then reports
why it is stuck instead of hanging until a timeout.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Callable

from emulator import Engine, TimerKind, UsageError

#: Timer kinds a wait may jump over when time skipping is on.
SKIPPED_KINDS = (TimerKind.SLEEP, TimerKind.RETRY)
#: Real seconds a stuck wait gives other tasks to send an event or resume the instance.
STALL_GRACE_S = 0.2

_drivers: "weakref.WeakKeyDictionary[Engine, Driver]" = weakref.WeakKeyDictionary()


def driver_for(engine: Engine) -> "Driver":
    """The one driver of ``engine`` (waits on one engine take turns)."""
    driver = _drivers.get(engine)
    if driver is None:
        driver = _drivers[engine] = Driver(engine)
    return driver


class Driver:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.time_skipping = True
        self.stall_grace_s = STALL_GRACE_S
        self._lock: asyncio.Lock | None = None

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def run_until(self, done: Callable[[], bool], *, grace_s: float | None = None) -> bool:
        """Run the engine until ``done()``; False when it stopped short (nothing left to run)."""
        grace = self.stall_grace_s if grace_s is None else grace_s
        async with self.lock:
            while True:
                if done():
                    return True
                await self.engine.drain(until=done, jump=self.time_skipping,
                                        jump_kinds=SKIPPED_KINDS)
                if done():
                    return True
                if not await self._something_changed(grace):
                    return done()

    async def settle(self) -> None:
        """Run whatever can run now, without moving the clock."""
        async with self.lock:
            await self.engine.drain(jump=False)

    async def advance(self, ms: int) -> None:
        """Move the clock forward by ``ms``, firing each timer due on the way at its own time."""
        clock = self.engine.clock
        if not clock.can_jump:
            raise UsageError("advance() needs the engine to run on a VirtualClock")
        if ms < 0:
            raise UsageError(f"advance() moves time forward only, not by {ms} ms")
        async with self.lock:
            target = clock.now_ms() + ms
            while True:
                await self.engine.drain(jump=False)
                due = self.engine.store.next_timer_due()
                if due is None or due > target:
                    break
                clock.jump_to(due)
            while clock.now_ms() < target:  # one jump moves at most 365 days
                clock.jump_to(target)
            await self.engine.drain(jump=False)

    async def _something_changed(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the engine to report anything (an event sent, a resume)."""
        if seconds <= 0:
            return False
        changed = asyncio.Event()
        unsubscribe = self.engine.progress.subscribe(lambda _event: changed.set())
        try:
            await asyncio.wait_for(changed.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            unsubscribe()

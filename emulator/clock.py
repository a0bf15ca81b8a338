"""The one source of time for the engine.

``now_ms()`` is workflow time (what sleeps, timers and timestamps use); ``real_ms()`` is the
wall clock, used only for leases, which are about processes dying and must not jump. Nothing else
in the engine reads the time.

``VirtualClock`` is a fast-forward clock: it flows like real time while work is in flight (so an
attempt's timeout means what it says), and when the engine has nothing runnable it *jumps* to the
next due timer instead of waiting. ``VirtualClock(flowing=False)`` stands still between jumps and
explicit ``advance()`` calls, which makes tests exact.

One clock serves every tenant, so a jump is bounded here, not only by its callers: no jump moves
it more than :data:`MAX_JUMP_MS` (the longest wait the platform permits, 365 days) past now. A
target beyond that is clamped, and callers that jump to timers ask :meth:`Clock.within_jump`
first: a timer further away (none can be written, but a database from elsewhere may hold one) is
never reached by jumping, so it cannot drag every other tenant's time along.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone

from emulator.rules.limits import MAX_SLEEP_MS

#: How far one jump may move a clock.
MAX_JUMP_MS = MAX_SLEEP_MS


class Clock:
    """Workflow time in epoch milliseconds."""

    #: Whether the engine may jump this clock forward when idle.
    can_jump = False

    def now_ms(self) -> int:
        raise NotImplementedError

    def real_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def jump_to(self, ms: int) -> int:
        raise TypeError(f"{type(self).__name__} cannot jump")

    def within_jump(self, ms: int) -> bool:
        """Whether one jump can reach ``ms``."""
        return ms <= self.now_ms() + MAX_JUMP_MS

    def now_datetime(self) -> datetime:
        """Workflow time as a naive UTC datetime (the shape of ``event["timestamp"]``)."""
        return to_datetime(self.now_ms())


class SystemClock(Clock):
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class VirtualClock(Clock):
    """A clock that the engine fast-forwards across idle waits."""

    can_jump = True

    def __init__(self, start_ms: int | None = None, *, flowing: bool = True) -> None:
        self.flowing = flowing
        # kept in nanoseconds and rounded down once: two separately rounded readings could
        # add up to a millisecond past the wall clock, a time in the future
        self._base_ns = time.time_ns() if start_ms is None else start_ms * 1_000_000
        self._origin_ns = time.monotonic_ns()
        self._offset = 0

    def now_ms(self) -> int:
        elapsed_ns = time.monotonic_ns() - self._origin_ns if self.flowing else 0
        return (self._base_ns + elapsed_ns) // 1_000_000 + self._offset

    def jump_to(self, ms: int) -> int:
        """Move forward to ``ms``: never backward, never more than :data:`MAX_JUMP_MS` (a target
        beyond is clamped). Returns the time now."""
        if isinstance(ms, float):
            if not math.isfinite(ms):
                raise ValueError(f"cannot jump the clock to {ms}")
            ms = int(ms)
        now = self.now_ms()
        target = min(ms, now + MAX_JUMP_MS)
        if target > now:
            self._offset += target - now
            return target
        return now

    def advance(self, ms: int) -> None:
        self.jump_to(self.now_ms() + ms)


def to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(tzinfo=None)

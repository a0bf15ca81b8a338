"""The one source of time for the engine.

``now_ms()`` is workflow time (what sleeps, timers and timestamps use); ``real_ms()`` is the
wall clock, used only for leases, which are about processes dying and must not jump. Nothing else
in the engine reads the time.

``VirtualClock`` is a fast-forward clock: it flows like real time while work is in flight (so an
attempt's timeout means what it says), and when the engine has nothing runnable it *jumps* to the
next due timer instead of waiting. ``VirtualClock(flowing=False)`` stands still between jumps and
explicit ``advance()`` calls, which makes tests exact.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone


class Clock:
    """Workflow time in epoch milliseconds."""

    #: Whether the engine may jump this clock forward when idle.
    can_jump = False

    def now_ms(self) -> int:
        raise NotImplementedError

    def real_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def jump_to(self, ms: int) -> None:
        raise TypeError(f"{type(self).__name__} cannot jump")

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
        self._base = time.time_ns() // 1_000_000 if start_ms is None else start_ms
        self._origin = time.monotonic_ns() // 1_000_000
        self._offset = 0

    def now_ms(self) -> int:
        elapsed = time.monotonic_ns() // 1_000_000 - self._origin if self.flowing else 0
        return self._base + elapsed + self._offset

    def jump_to(self, ms: int) -> None:
        """Move forward to ``ms`` (never backward)."""
        now = self.now_ms()
        if ms > now:
            self._offset += ms - now

    def advance(self, ms: int) -> None:
        self.jump_to(self.now_ms() + ms)


def to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(tzinfo=None)

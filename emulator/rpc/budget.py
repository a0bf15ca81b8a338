"""How much of the host's event loop the frames of one isolate may take.

Every tenant's calls are served by one event loop in the host, and a frame is handled (decoded,
then its method run when it is synchronous) in the loop iteration that read it. ``frames.py``
bounds what one frame can cost; this bounds how often an isolate can make the host pay it.

The charge is the time the loop really spent on the isolate's frames (``perf_counter`` around
each one), not their bytes: a byte of a string costs the parser ~1 ns and a byte of nested lists
~100 ns, so a byte budget either starves honest isolates or lets a dense flood through. Two token
buckets per connection, refilled with loop time:

- every frame: :data:`SHARE` of the loop with a :data:`BURST_S` burst. The step path of one busy
  tenant takes a few percent of the loop (~3,400 steps/s through one isolate here, a begin notice
  and a settle call of a few microseconds each), so an honest tenant never meets it; a flood of
  small frames (log lines past their quota, say) gets a quarter of the loop, one socket read
  (16 KiB) at a time;
- frames of ``frames.SCAN_FROM_BYTES`` (64 KiB) and more, whose parse cannot be split:
  :data:`BIG_SHARE` of the loop after a :data:`BIG_BURST_S` burst. Honest large frames are rare and
  mostly text (a 4 MiB frame of text costs the host ~16 ms, a 500 KiB step result ~2 ms); a tenant
  sending the costliest frame the host accepts (~110 ms) is held to one about every 11 s.

When a bucket runs dry the host stops reading from that isolate's socket (frames already read wait
in its buffer) until the bucket is back at zero; its neighbours' sockets are read as usual.
Measured with ``python -m benchmarks.flood`` (15 s a flood): a neighbour's p99 went from 6.2 ms
with no flood to at most 13.2 ms under any flood; its worst single wait was one costliest frame
(175 ms), met once in 7,794 instances.
"""

from __future__ import annotations

from emulator.rpc.frames import SCAN_FROM_BYTES

SHARE = 0.25
BURST_S = 0.05
BIG_SHARE = 0.01
BIG_BURST_S = 0.25


class _Bucket:
    __slots__ = ("share", "burst", "level", "stamp")

    def __init__(self, share: float, burst: float, now: float) -> None:
        self.share, self.burst, self.level, self.stamp = share, burst, burst, now

    def spend(self, seconds: float, now: float) -> float:
        """Take ``seconds``; how long to stop reading until the bucket is back at zero."""
        self.level = min(self.burst, self.level + (now - self.stamp) * self.share) - seconds
        self.stamp = now
        return 0.0 if self.level >= 0 else -self.level / self.share


class LoopBudget:
    """The loop time one connection's frames may take (see the module's note)."""

    __slots__ = ("_all", "_big", "paused_s", "pauses")

    def __init__(self, now: float) -> None:
        self._all = _Bucket(SHARE, BURST_S, now)
        self._big = _Bucket(BIG_SHARE, BIG_BURST_S, now)
        self.paused_s = 0.0     # for tests and benchmarks: how long reading was held back
        self.pauses = 0

    def charge(self, seconds: float, size: int, now: float) -> float:
        """A frame of ``size`` bytes took ``seconds`` of the loop; returns how long to stop
        reading from this connection (0 when it is within its share)."""
        pause = self._all.spend(seconds, now)
        if size >= SCAN_FROM_BYTES:
            pause = max(pause, self._big.spend(seconds, now))
        if pause:
            self.paused_s += pause
            self.pauses += 1
        return pause

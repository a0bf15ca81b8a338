"""Log lines of workflow instances: their levels, and the quota that bounds how much one writes.

Every line a tenant prints inside a step becomes a row of the ``logs`` table, written in the same
group commits as the steps of every other tenant, so a tenant that prints without end would fill
the disk and slow everyone's commits. The quota (sizes in ``limits.py``): each step may write
``LOG_BYTES_PER_STEP`` and each instance ``LOG_BYTES_PER_INSTANCE`` of UTF-8, each line cut at
``MAX_LOG_LINE_CHARS`` first. Past a quota lines are dropped, and the first line dropped is
replaced by one marker line (level ``warning``) that names the quota; when the instance's run
stops (it finishes, sleeps, or its isolate dies), each marker with drops since is rewritten in
place to say how many bytes and lines were dropped. That is one row and one ``UPDATE`` per
truncated step, instead of a second line or a counter row kept up to date on every drop.

The counters live in the engine's memory, across an instance's runs (a hibernated instance comes
back with what it already used), and are forgotten when the instance ends. An engine that
restarts gives its instances a fresh quota: at most one more quota per restart. Lines an isolate
prints outside any step do not belong to an instance; the isolate pool holds them to
``LOG_BYTES_OUTSIDE_STEPS_PER_MINUTE`` with :class:`LogWindow`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


from emulator.rules.limits import (LOG_BYTES_OUTSIDE_STEPS_PER_MINUTE, LOG_BYTES_PER_INSTANCE,
                                    LOG_BYTES_PER_STEP)
from emulator.rules.steps import StepKey



@dataclass(slots=True)
class Marker:
    """The line that stands for the lines dropped past one quota."""

    quota: str                 # "step" or "instance"
    limit: int
    dropped_bytes: int = 0
    dropped_lines: int = 0
    seq: int | None = None     # its row, once written
    written: int = 0           # dropped_lines when its text was last written

    def text(self, *, counts: bool) -> str:
        text = (f"log truncated: lines past the quota of {self.limit:,} bytes per {self.quota} are "
                "dropped")
        if counts:
            text += f" ({self.dropped_bytes:,} bytes in {self.dropped_lines:,} lines dropped)"
        return text


@dataclass(slots=True)
class _Usage:
    total: int = 0
    steps: dict[StepKey | None, int] = field(default_factory=dict)
    markers: dict[StepKey | None, Marker] = field(default_factory=dict)   # None: the instance's


class LogQuota:
    """Bytes of log each instance and each of its steps has written, and what is over quota."""

    #: instances tracked at most, the oldest forgotten first; and steps tracked per instance, all
    #: forgotten at once past that (the instance's quota still bounds what its steps write).
    #: Together they bound this object's memory (~100 bytes a step) whatever tenants log.
    MAX_TRACKED = 10_000
    MAX_STEPS_TRACKED = 64

    def __init__(self, per_step: int = LOG_BYTES_PER_STEP,
                 per_instance: int = LOG_BYTES_PER_INSTANCE) -> None:
        self.per_step = per_step
        self.per_instance = per_instance
        self._usage: dict[str, _Usage] = {}

    def admit(self, instance_id: str, step: StepKey | None, size: int) -> Marker | bool:
        """For a line of ``size`` bytes: True to write it, False to drop it, or a new
        :class:`Marker` to write instead of it (the first line past a quota)."""
        usage = self._usage.get(instance_id)
        if usage is None:
            if len(self._usage) >= self.MAX_TRACKED:
                del self._usage[next(iter(self._usage))]
            usage = self._usage[instance_id] = _Usage()
        marker = usage.markers.get(None) or usage.markers.get(step)
        if marker is not None:
            marker.dropped_bytes += size
            marker.dropped_lines += 1
            return False
        if usage.total + size > self.per_instance:
            marker = usage.markers[None] = Marker("instance", self.per_instance, size, 1)
            return marker
        used = usage.steps.get(step, 0)
        if not used and len(usage.steps) >= self.MAX_STEPS_TRACKED:
            usage.steps.clear()
        if step is not None and used + size > self.per_step:
            marker = usage.markers[step] = Marker("step", self.per_step, size, 1)
            return marker
        usage.total += size
        usage.steps[step] = used + size
        return True

    def stale_markers(self, instance_id: str) -> list[Marker]:
        """Markers written whose drop count changed since: to be rewritten."""
        usage = self._usage.get(instance_id)
        if usage is None:
            return []
        return [m for m in usage.markers.values()
                if m.seq is not None and m.written != m.dropped_lines]

    def forget(self, instance_id: str) -> None:
        self._usage.pop(instance_id, None)


class LogWindow:
    """Lines outside any step, for one isolate: at most ``limit`` bytes per ``window_ms``; the
    first line dropped in a window is replaced by a marker naming the quota."""

    def __init__(self, now_ms: Callable[[], int], limit: int = LOG_BYTES_OUTSIDE_STEPS_PER_MINUTE,
                 window_ms: int = 60_000) -> None:
        self._now_ms = now_ms
        self.limit = limit
        self.window_ms = window_ms
        self._start = now_ms()
        self._used = 0
        self._marked = False
        self.dropped_bytes = 0

    def admit(self, size: int) -> str | bool:
        """True to write the line, False to drop it, or the marker line to write instead."""
        now = self._now_ms()
        if now - self._start >= self.window_ms:
            self._start, self._used, self._marked = now, 0, False
        if self._used + size <= self.limit and not self._marked:
            self._used += size
            return True
        self.dropped_bytes += size
        if self._marked:
            return False
        self._marked = True
        return (f"log truncated: lines outside any step past the quota of {self.limit:,} bytes per "
                f"{self.window_ms // 1000} seconds are dropped until the next window")

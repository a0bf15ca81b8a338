"""Progress events: what the engine tells the checklist, the dev server and tests, in order.

Each event is small and JSON-ready. Subscribers are plain callables run synchronously in the
engine's thread, in publication order, so per-instance order is the order things happened. A
subscriber that raises is dropped from that event only; it never breaks the engine.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

from emulator.engine.store import StepKey

# kinds
INSTANCE_STATUS = "instance.status"
STEP_STARTED = "step.started"
STEP_ATTEMPT_FAILED = "step.attempt_failed"
STEP_COMMITTED = "step.committed"
STEP_FAILED = "step.failed"
STEP_CANCELLED = "step.cancelled"
STEP_REPLAYED = "step.replayed"
STEP_SLEEPING = "step.sleeping"
STEP_WAITING = "step.waiting"
STEP_WOKEN = "step.woken"
LOG = "log"


@dataclass(frozen=True, slots=True)
class Progress:
    kind: str
    instance_id: str
    at: int
    step: StepKey | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "instance": self.instance_id, "at": self.at}
        if self.step:
            out["step"] = {"kind": self.step[0], "name": self.step[1], "count": self.step[2]}
        out.update(self.data)
        return out


Subscriber = Callable[[Progress], None]


class Broadcaster:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add ``subscriber``; returns the function that removes it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber) if subscriber in self._subscribers else None

    def publish(self, event: Progress) -> None:
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(event)
            except Exception:  # a broken viewer must never break a workflow
                pass

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def queue(self) -> tuple[asyncio.Queue[Progress], Callable[[], None]]:
        """An asyncio queue fed with every event from now on, and its unsubscribe function."""
        q: asyncio.Queue[Progress] = asyncio.Queue()
        return q, self.subscribe(q.put_nowait)

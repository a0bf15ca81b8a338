"""The engine harness shared by the conformance modules: one engine on one database file, a
clock that stands still, every progress event kept."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Awaitable, Callable

from emulator.engine import Engine, VirtualClock, WorkflowDefinition
from emulator.engine.stores import open_store

#: opens the store of the file a harness names; the ``store_factory`` fixture (tests/conftest.py)
#: points it at a PostgreSQL schema per file name, so each conformance test runs on both stores
STORE_FACTORY: Callable[[Path], Any] = open_store

T0 = 1_700_000_000_000
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
FATAL = "WorkflowFatalError"


def arun(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)


class FnWorkflow:
    """A workflow whose ``run`` is a plain async function ``(event, step)``."""

    def __init__(self, fn: Callable[[dict, Any], Awaitable[Any]]) -> None:
        self._fn = fn

    async def run(self, event: dict, step: Any) -> Any:
        return await self._fn(event, step)


class Harness:
    """One engine on one database file, a clock that stands still, every progress event kept."""

    def __init__(self, path: Path, fn: Callable[[dict, Any], Awaitable[Any]], *,
                 store_factory: Callable[[Path], Any] | None = None, **definition: Any):
        self.path = path
        self.store_factory = store_factory or STORE_FACTORY
        self.fn = fn
        self.definition = definition
        self.clock = VirtualClock(T0, flowing=False)
        self.progress: list[Any] = []
        self.engine = self._new_engine()
        self.binding = self.engine.binding("wf")

    def _new_engine(self) -> Engine:
        definition = WorkflowDefinition("wf", lambda row: FnWorkflow(self.fn), **self.definition)
        engine = Engine(self.store_factory(self.path), [definition], clock=self.clock, poll_ms=20)
        engine.progress.subscribe(self.progress.append)
        return engine

    def restart_engine(self) -> None:
        """A NEW Engine object on the same file: what a process restart looks like."""
        self.engine.close()
        self.engine = self._new_engine()
        self.binding = self.engine.binding("wf")

    async def create(self, params: Any = None, id: str = "i1"):
        return await self.binding.create({"id": id, "params": {} if params is None else params})

    async def status(self, id: str = "i1") -> dict[str, Any]:
        return await (await self.binding.get(id)).status()

    def step(self, kind: str, name: str, count: int = 1, id: str = "i1"):
        return self.engine.store.get_step(id, (kind, name, count))

    def result(self, kind: str, name: str, count: int = 1, id: str = "i1") -> Any:
        row = self.step(kind, name, count, id)
        assert row is not None and row.status == "done", row
        return json.loads(row.result) if row.result is not None else None

    def step_keys(self, id: str = "i1") -> list[tuple]:
        return [s.key for s in self.engine.store.list_steps(id)]

    def timers(self, id: str = "i1") -> list[tuple[str, tuple, int]]:
        return [(t.kind, t.step, t.due) for t in self.engine.store.timers_of(id)]

    def events(self, kind: str, id: str = "i1") -> list[Any]:
        return [p for p in self.progress if p.kind == kind and p.instance_id == id]

    def statuses(self, id: str = "i1") -> list[str]:
        return [p.data["status"] for p in self.events("instance.status", id)]

    def instance_ids(self) -> list[str]:
        return [row.id for row in self.engine.store.list_instances(limit=10_000)]

    def drain_in_background(self) -> "asyncio.Task[None]":
        return asyncio.get_running_loop().create_task(self.engine.drain())

    def error(self, kind: str, name: str, count: int = 1, id: str = "i1") -> dict[str, str]:
        row = self.step(kind, name, count, id)
        assert row is not None and row.error is not None, row
        return json.loads(row.error)

    def retry_delays(self, id: str = "i1") -> list[int]:
        return [p.data["next_attempt_at"] - p.at for p in self.events("step.attempt_failed", id)]

    async def drain_moving_clock(self, kinds: tuple[str, ...] = ("sleep", "retry")) -> None:
        """Run to the end moving this test's whole clock to each next due timer of ``kinds``,
        so every wait ends at its own time (the clock a test owns, as the pytest plugin's
        ``advance()``; fast-forward in the product ends one instance's wait early instead and
        moves no clock)."""
        while True:
            await self.engine.drain(jump=False)
            due = self.engine.store.next_timer_due(kinds)
            if due is None:
                return
            self.clock.jump_to(max(due, self.clock.now_ms()))

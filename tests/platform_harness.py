"""Helpers shared by the platform conformance modules (tests/test_platform_*.py): holding a step
body in flight, letting the event loop run until something holds, and a workflow's run as a plain
function of ``(event, step)``."""

from __future__ import annotations

import asyncio
from typing import Callable


class Gate:
    """Holds a step body in flight until the test releases it (never a real sleep)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def hold(self) -> None:
        self.started.set()
        await self.release.wait()

    async def wait_started(self) -> None:
        await asyncio.wait_for(self.started.wait(), 10)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the event loop run until ``condition`` holds (no wall-clock sleeping)."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def finish(task: "asyncio.Task[None]") -> None:
    await asyncio.wait_for(task, 10)

"""The ``workers`` module as Python Workers code sees it, inside the emulator."""

from __future__ import annotations

from typing import Any


class WorkflowEntrypoint:
    """Base class of a workflow: subclass it and define ``async def run(self, event, step)``."""

    def __init__(self, ctx: Any = None, env: Any = None) -> None:
        self.ctx = ctx
        self.env = env

    async def run(self, event: dict[str, Any], step: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define async def run(self, event, step)")


__all__ = ["WorkflowEntrypoint"]

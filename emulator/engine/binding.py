"""``env.WORKFLOWS``: the binding a Worker uses to create and control instances.

Methods are ``async`` like the Python SDK's wrappers (docs/semantics.md §3.6); each is one database operation
through :class:`~emulator.engine.control.Control`, so it works whether or not an engine is
running in this process. ``sendEvent`` is accepted as an alias of ``send_event``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulator.engine.engine import Engine


class WorkflowInstance:
    """A handle on one instance; ``id`` is a plain attribute."""

    def __init__(self, engine: "Engine", instance_id: str) -> None:
        self._engine = engine
        self.id = instance_id

    def __repr__(self) -> str:
        return f"<WorkflowInstance {self.id}>"

    async def status(self) -> dict[str, Any]:
        return self._engine.control.status(self.id)

    async def pause(self) -> None:
        self._engine.control.pause(self.id)

    async def resume(self) -> None:
        self._engine.control.resume(self.id)

    async def terminate(self, options: Any = None, *, rollback: Any = None) -> None:
        """Stop the instance; ``terminate(rollback=True)`` or ``terminate({"rollback": True})``
        runs its rollback handlers first (docs/semantics.md, "Rollbacks")."""
        from emulator.engine.control import terminate_rollback
        self._engine.control.terminate(self.id, rollback=terminate_rollback(options, rollback))

    async def restart(self) -> None:
        self._engine.control.restart(self.id)

    async def send_event(self, event: dict[str, Any]) -> None:
        if not isinstance(event, dict) or "type" not in event:
            from emulator.errors import ValidationError
            raise ValidationError("send_event takes {'type': ..., 'payload': ...}")
        self._engine.control.send_event(self.id, event["type"], event.get("payload"))

    sendEvent = send_event


class WorkflowBinding:
    """The binding of one workflow (``name`` in the wrangler config)."""

    def __init__(self, engine: "Engine", workflow: str) -> None:
        self._engine = engine
        self.workflow = workflow

    async def create(self, options: dict[str, Any] | None = None) -> WorkflowInstance:
        instance_id = self._engine.control.create(self.workflow, options)
        return WorkflowInstance(self._engine, instance_id)

    async def create_batch(self, batch: list[dict[str, Any]]) -> list[WorkflowInstance]:
        ids = self._engine.control.create_batch(self.workflow, batch)
        return [WorkflowInstance(self._engine, i) for i in ids]

    createBatch = create_batch

    async def get(self, instance_id: str) -> WorkflowInstance:
        row = self._engine.control.get(instance_id)
        if row.workflow != self.workflow:
            from emulator.errors import InstanceNotFoundError
            raise InstanceNotFoundError(f"Instance '{instance_id}' does not exist",
                                        instance_id=instance_id)
        return WorkflowInstance(self._engine, instance_id)

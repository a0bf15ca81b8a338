"""``env.WORKFLOWS``: the binding a Worker uses to create and control instances.

Methods are ``async`` like the Python SDK's wrappers (docs/semantics.md §3.6); each is one database operation
through :class:`~emulator.engine.control.Control`, so it works whether or not an engine is
running in this process. ``sendEvent`` is accepted as an alias of ``send_event``, ``deleteBatch``
of ``delete_batch``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulator.engine.engine import Engine


class WorkflowInstance:
    """A handle on one instance; ``id`` is a plain attribute: the id its binding created it with.
    Ids are per workflow, so the handle acts on the engine's key of the instance (the same id
    unless another workflow's instance had it first; docs/semantics.md §1.2)."""

    def __init__(self, engine: "Engine", key: str, instance_id: str | None = None) -> None:
        self._engine = engine
        self.key = key
        self.id = key if instance_id is None else instance_id

    def __repr__(self) -> str:
        return f"<WorkflowInstance {self.id}>"

    async def status(self) -> dict[str, Any]:
        return self._engine.control.status(self.key)

    async def pause(self) -> None:
        self._engine.control.pause(self.key)

    async def resume(self) -> None:
        self._engine.control.resume(self.key)

    async def terminate(self, options: Any = None, *, rollback: Any = None) -> None:
        """Stop the instance; ``terminate(rollback=True)`` or ``terminate({"rollback": True})``
        runs its rollback handlers first (docs/semantics.md, "Rollbacks")."""
        from emulator.engine.control import terminate_rollback
        self._engine.control.terminate(self.key, rollback=terminate_rollback(options, rollback))

    async def restart(self, options: dict[str, Any] | None = None) -> None:
        """Run again from the top, or with ``{"from": {"name", "count"?, "type"?}}`` from that
        step, keeping the results of the steps reached before it (docs/semantics.md §4.6)."""
        self._engine.control.restart(self.key, options)

    async def delete(self) -> None:
        """Stop the instance without rollback and erase it. An instance deleting itself stops
        inside this call: it never returns to the run."""
        await self._engine.delete(self.key)

    async def send_event(self, event: dict[str, Any]) -> None:
        if not isinstance(event, dict) or "type" not in event:
            from emulator.errors import ValidationError
            raise ValidationError("send_event takes {'type': ..., 'payload': ...}")
        self._engine.control.send_event(self.key, event["type"], event.get("payload"))

    sendEvent = send_event


class WorkflowBinding:
    """The binding of one workflow (``name`` in the wrangler config)."""

    def __init__(self, engine: "Engine", workflow: str) -> None:
        self._engine = engine
        self.workflow = workflow

    async def create(self, options: dict[str, Any] | None = None) -> WorkflowInstance:
        key = self._engine.control.create(self.workflow, options)
        return WorkflowInstance(self._engine, key, self._engine.store.get_instance(key).known_as)

    async def create_batch(self, batch: list[dict[str, Any]]) -> list[WorkflowInstance]:
        created = self._engine.control.create_batch(self.workflow, batch)
        return [WorkflowInstance(self._engine, key, i) for key, i in created]

    createBatch = create_batch

    async def delete_batch(self, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Delete 1 to 100 instances of this workflow: ``{"deleted": [{"id"}], "errors": [{"id",
        "code", "message"}]}``, one entry per input position (docs/semantics.md §1.6)."""
        return await self._engine.delete_batch(ids, self.workflow)

    deleteBatch = delete_batch

    async def get(self, instance_id: str) -> WorkflowInstance:
        """The instance this workflow created as ``instance_id`` (another workflow's instance of
        the same id is not this binding's)."""
        row = self._engine.control.get_in_workflow(self.workflow, instance_id)
        return WorkflowInstance(self._engine, row.id, row.known_as)

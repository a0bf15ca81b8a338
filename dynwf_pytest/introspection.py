"""``introspect_instance`` / ``introspect_workflow``: the platform's workflow test API in Python.

They mirror ``introspectWorkflowInstance`` / ``introspectWorkflow`` of ``cloudflare:test``
(docs/semantics.md §7.3) in snake_case, with the same error texts. Each returns an object that is both
awaitable and an async context manager, so both JS idioms have a Python spelling::

    async with introspect_instance(binding, "order-1") as instance:     # await using ...
        await instance.modify(lambda m: m.disable_sleeps())
        ...                                                              # disposed on exit

    instance = await introspect_instance(binding, "order-1")             # await ...
    ...
    await instance.dispose()

The modifiers themselves are engine features (``emulator/engine/modifiers.py``); this module only
resolves what the test names (a binding, a tenant-scoped binding, a tenant) to an engine, a
workflow and an id namespace, and drives the engine while the test waits (``driver.py``).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any, Callable, Generator, Mapping

from emulator import (Engine, InstanceNotFoundError, StepKind, StepStatus, WorkflowBinding,
                      format_traceback, states, traceback_heading)
from emulator.engine.modifiers import PREFIX, InstanceModifiers, ModifierError, selector
from emulator.sdk.failures import rebuild
from emulator.rules.values import decode_json

from dynwf_pytest.driver import driver_for

IntrospectorError = ModifierError
"""Raised for misuse of the test API and for waits that cannot succeed; ``str()`` is the text."""


# ---- what a test may name ---------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """An engine, one of its workflows, and (for a tenant) the id namespace of its metadata."""

    engine: Engine
    workflow: str
    metadata: Mapping[str, Any] | None = None

    @property
    def id_prefix(self) -> str | None:
        if self.metadata is None:
            return None
        from emulator.runtime.dynamic_workflows import tenant_prefix
        return tenant_prefix(dict(self.metadata)) + "-"

    def real_id(self, instance_id: str) -> str:
        """The engine's id for the id the test knows (ids are per workflow: the key differs when
        another workflow's instance had the id first)."""
        if self.metadata is not None:
            from emulator.runtime.dynamic_workflows import scoped_instance_id
            instance_id = scoped_instance_id(dict(self.metadata), instance_id)
        return self.engine.store.key_for(self.workflow, instance_id)

    def shown_id(self, real_id: str) -> str:
        row = self.engine.store.find_instance(real_id)
        known = row.known_as if row is not None else real_id
        prefix = self.id_prefix
        return known[len(prefix):] if prefix and known.startswith(prefix) else known


def resolve_target(obj: Any) -> Target:
    """A :class:`Target` for a binding (the engine's, or a tenant's wrapped one), a ``Tenant``,
    or a tenant id (with the emulator of the running test)."""
    target = getattr(obj, "target", None)
    if isinstance(target, Target):                     # a Tenant
        return target
    if isinstance(obj, str):
        from dynwf_pytest.emulator import current_emulator
        return current_emulator().tenant(obj).target
    if isinstance(obj, WorkflowBinding):
        return Target(obj._engine, obj.workflow)
    wrapped = getattr(obj, "_impl", obj)               # DynamicWorkflowBinding wraps the binding
    metadata = getattr(wrapped, "_metadata", None)
    get_binding = getattr(wrapped, "_get_binding", None)
    if metadata is not None and callable(get_binding):
        inner = get_binding()
        if isinstance(inner, WorkflowBinding):
            return Target(inner._engine, inner.workflow, metadata)
    raise IntrospectorError(f"{PREFIX} Cannot introspect {obj!r}: pass a Workflow binding "
                            "(env.WORKFLOWS, a tenant's wrapped binding), a Tenant, or a tenant id")


# ---- the modifier a ``modify`` callback receives ----------------------------------------------

class _Done:
    """What a modifier returns: already done, and awaitable, so ``await m.disable_sleeps()``
    reads as in the JS API while ``lambda m: m.disable_sleeps()`` works too."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())


_DONE = _Done()


class Modifier:
    """``WorkflowInstanceModifier`` in snake_case; each call takes effect at once.

    A step selector is ``{"name": ..., "index": 1}`` (``index`` counts occurrences of the name from
    1) or the bare name.
    """

    def __init__(self, state: InstanceModifiers) -> None:
        self._state = state

    def disable_sleeps(self, steps: list[Any] | None = None) -> _Done:
        """Every sleep (or the selected ones) ends at once."""
        self._state.disable_sleeps(steps)
        return _DONE

    def disable_retry_delays(self, steps: list[Any] | None = None) -> _Done:
        """Every failed ``step.do`` attempt (or the selected steps') is retried at once."""
        self._state.disable_retry_delays(steps)
        return _DONE

    def mock_step_result(self, step: Any, result: Any) -> _Done:
        """The step returns ``result``; its body is not run (mocking one step twice is an error)."""
        self._state.mock_step_result(step, result)
        return _DONE

    def mock_step_error(self, step: Any, error: BaseException, times: int | None = None) -> _Done:
        """Attempts fail with ``error``: all of them, or ``times`` consecutive ones."""
        self._state.mock_step_error(step, error, times)
        return _DONE

    def force_step_timeout(self, step: Any, times: int | None = None) -> _Done:
        """Attempts time out at once: all of them, or ``times`` consecutive ones."""
        self._state.force_step_timeout(step, times)
        return _DONE

    def mock_event(self, event: Mapping[str, Any]) -> _Done:
        """``{"type", "payload"}`` reaches the instance's ``wait_for_event`` of that type."""
        self._state.mock_event(event)
        return _DONE

    def force_event_timeout(self, step: Any) -> _Done:
        """The selected ``wait_for_event`` times out at once."""
        self._state.force_event_timeout(step)
        return _DONE


async def _apply(fn: Callable[[Modifier], Any], modifier: Modifier) -> None:
    result = fn(modifier)
    if inspect.isawaitable(result):
        await result


class _Awaitable:
    """Awaiting the object gives the object itself; ``async with`` disposes it on exit."""

    def __await__(self) -> Generator[Any, None, Any]:
        async def itself() -> Any:
            return self
        return itself().__await__()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.dispose()

    async def dispose(self) -> None:
        raise NotImplementedError


# ---- one instance -----------------------------------------------------------------------------

class InstanceIntrospector(_Awaitable):
    """``WorkflowInstanceIntrospector``: modify one instance's run, wait for it, read its end.

    ``id`` is the id the test knows (a tenant's own id for a tenant); ``instance_id`` is the
    engine's. The instance need not exist yet: modifiers made before ``create`` apply from its
    first step.
    """

    def __init__(self, target: Target, instance_id: str) -> None:
        self.target = target
        self.id = instance_id
        self.instance_id = target.real_id(instance_id)
        self._engine = target.engine
        self._modifier = Modifier(self._engine.modifiers.for_instance(self.instance_id))
        self.disposed = False

    def __repr__(self) -> str:
        return f"<InstanceIntrospector {self.id}>"

    async def modify(self, fn: Callable[[Modifier], Any]) -> "InstanceIntrospector":
        """Call ``fn(m)`` (sync or async) with this instance's modifier."""
        await _apply(fn, self._modifier)
        return self

    # ---- waits -----------------------------------------------------------------------------

    async def wait_for_step_result(self, step: Any, index: int | None = None) -> Any:
        """Run until the ``step.do`` named ``step`` (its ``index``-th occurrence, default 1) has
        a result and return it; raises the step's error when it failed."""
        __tracebackhide__ = True  # pytest shows the test's line, not this helper's
        if index is not None:
            if not isinstance(step, str):
                raise IntrospectorError(f"{PREFIX} Give the index either in the selector or as "
                                        "index=, not both")
            step = {"name": step, "index": index}
        name, count = selector(step)
        key = (StepKind.DO, name, count)
        store = self._engine.store

        def done() -> bool:
            row = store.get_step(self.instance_id, key)
            ended = row is not None and row.status in (StepStatus.DONE, StepStatus.FAILED)
            return ended or self._finished()

        await driver_for(self._engine).run_until(done)
        row = store.get_step(self.instance_id, key)
        if row is not None and row.status == StepStatus.DONE:
            # a sensitive step's output is redacted here too: a test's failure message lands in
            # CI logs (docs/semantics.md §2.3); later steps and run() still get the real value
            return row.shown_result(read=decode_json)
        if row is not None and row.status == StepStatus.FAILED:
            error = rebuild(json.loads(row.error or "{}"))
            frames = (store.list_attempts(self.instance_id).get(key) or [{}])[-1] \
                .get("error", {}).get("traceback")
            if frames:  # pytest prints notes under the error: where the workflow's code raised it
                shown = f"'{name}'" + (f" (index {count})" if count != 1 else "")
                error.add_note("\n".join([f"raised by step {shown} attempt {row.attempts} "
                                          "(most recent call last):",
                                          *format_traceback(frames)]))
            raise error
        status = self._status()
        shown = f"'{name}'" + (f" (index {count})" if count != 1 else "")
        if states.is_finished(status):
            raise IntrospectorError(
                f"{PREFIX} The Workflow instance {self.id} has reached status '{status}' without "
                f"a result for step {shown}.")
        raise IntrospectorError(self._stuck(f"a result for step {shown}"))

    async def wait_for_status(self, status: str) -> None:
        """Run until the instance has ``status``; fails as soon as it reaches a different finite
        status. ``"queued"`` returns at once, as on the platform."""
        __tracebackhide__ = True  # pytest shows the test's line, not this helper's
        if status not in states.ALL:
            raise IntrospectorError(f"{PREFIX} Unknown status '{status}': one of "
                                    f"{', '.join(states.ALL)}")
        if status == states.QUEUED:
            return

        def done() -> bool:
            now = self._status()
            return now == status or states.is_finished(now)

        await driver_for(self._engine).run_until(done)
        now = self._status()
        if now == status:
            return
        if states.is_finished(now):
            failure = IntrospectorError(
                f"{PREFIX} The Workflow instance {self.id} has reached status '{now}'. This is a "
                f"finite status that prevents it from ever reaching the expected status of "
                f"'{status}'.")
            if now == states.ERRORED:
                failure.add_note(self._error_note())
            raise failure
        raise IntrospectorError(self._stuck(f"status '{status}'"))

    def _error_note(self) -> str:
        """The instance's error and the user's frames it was raised from, for pytest to print
        under a failure (the platform's message alone does not say why)."""
        row = self._row()
        error = json.loads(row.error or "{}")
        lines = [f"the instance's error: {error.get('name')}: {error.get('message')}"]
        frames = json.loads(row.error_traceback) if row.error_traceback else []
        if frames:
            lines += [traceback_heading(frames), *format_traceback(frames)]
        return "\n".join(lines)

    # ---- reads -----------------------------------------------------------------------------

    async def get_output(self) -> Any:
        """The output of a ``complete`` instance (raises in any other status; does not wait)."""
        __tracebackhide__ = True  # pytest shows the test's line, not this helper's
        row = self._row()
        if row.status != states.COMPLETE:
            raise IntrospectorError(f"Cannot retrieve output: Workflow instance is in status "
                                    f'"{row.status}" but must be "complete" to have an output '
                                    "available")
        return decode_json(row.output) if row.output is not None else None

    async def get_error(self) -> dict[str, str]:
        """``{"name", "message"}`` of an ``errored`` instance (raises in any other status)."""
        __tracebackhide__ = True  # pytest shows the test's line, not this helper's
        row = self._row()
        if row.status != states.ERRORED:
            raise IntrospectorError(f"Cannot retrieve error: Workflow instance is in status "
                                    f'"{row.status}" but must be "errored" to have error '
                                    "information available")
        error = json.loads(row.error) if row.error is not None else {}
        return {"name": error.get("name", "Error"), "message": error.get("message", "")}

    async def status(self) -> dict[str, Any]:
        """The platform's ``InstanceStatus`` dict, as ``instance.status()`` returns it."""
        self._row()
        return self._engine.control.status(self.instance_id)

    def steps(self) -> list[dict[str, Any]]:
        """Every step the instance has reached, in order (kind, name, count, status, attempts,
        result, error, ...)."""
        return [s.to_public() for s in self._engine.store.list_steps(self.instance_id)]

    async def dispose(self) -> None:
        """Drop this instance's modifiers and stop it (terminated) if it has not finished."""
        if self.disposed:
            return
        self.disposed = True
        self._engine.modifiers.discard(self.instance_id)
        row = self._engine.store.find_instance(self.instance_id)
        if row is not None and not states.is_finished(row.status):
            self._engine.control.terminate(self.instance_id)

    # ---- helpers ---------------------------------------------------------------------------

    def _row(self):
        row = self._engine.store.find_instance(self.instance_id)
        if row is None:
            raise InstanceNotFoundError(f"Instance '{self.id}' does not exist", instance_id=self.id)
        return row

    def _status(self) -> str:
        row = self._engine.store.find_instance(self.instance_id)
        return row.status if row is not None else states.QUEUED

    def _finished(self) -> bool:
        return states.is_finished(self._status())

    def _stuck(self, goal: str) -> str:
        """Why the instance cannot reach ``goal`` by itself, and what the test can do."""
        store = self._engine.store
        row = store.find_instance(self.instance_id)
        head = f"{PREFIX} The Workflow instance {self.id} cannot reach {goal} by itself: it"
        if row is None:
            return f"{head} does not exist yet (create it, e.g. through the binding)."
        if row.status == states.PAUSED:
            return f"{head} is paused (resume it)."
        waits = [s for s in store.list_steps(self.instance_id)
                 if s.kind == StepKind.WAIT and s.status == StepStatus.WAITING]
        if waits:
            which = ", ".join(f"event '{s.event_type}' (step '{s.name}')" for s in waits)
            return (f"{head} is waiting for {which}. Send the event, mock_event() it, "
                    "force_event_timeout() or advance() the clock past its timeout.")
        timers = store.timers_of(self.instance_id)
        if timers:
            kinds = sorted({t.kind for t in timers})
            return (f"{head} is waiting on {' and '.join(kinds)} timer(s) and time skipping is "
                    "off. advance() the clock, or disable_sleeps() / disable_retry_delays().")
        return f"{head} is '{row.status}' and nothing is left to run."


# ---- a workflow -------------------------------------------------------------------------------

class WorkflowIntrospector(_Awaitable):
    """``WorkflowIntrospector``: modifiers for every instance created after it was made (of a
    tenant only, when made for a tenant). One at a time per workflow (per tenant)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._engine = target.engine
        self._session = self._engine.modifiers.open_session(target.workflow, target.id_prefix)
        self._introspectors: dict[str, InstanceIntrospector] = {}
        self.disposed = False

    def __repr__(self) -> str:
        return f"<WorkflowIntrospector {self.target.workflow}>"

    async def modify_all(self, fn: Callable[[Modifier], Any]) -> None:
        """Call ``fn(m)`` once; what it asks applies to each instance created from now on."""
        await _apply(fn, Modifier(self._session.template))

    async def get(self) -> list[InstanceIntrospector]:
        """An introspector for each instance created since, in creation order."""
        out = []
        for real_id in self._session.created:
            introspector = self._introspectors.get(real_id)
            if introspector is None:
                introspector = InstanceIntrospector(self.target, self.target.shown_id(real_id))
                self._introspectors[real_id] = introspector
            out.append(introspector)
        return out

    async def dispose(self) -> None:
        """Dispose every instance introspector and stop modifying new instances."""
        if self.disposed:
            return
        self.disposed = True
        for introspector in await self.get():
            await introspector.dispose()
        self._engine.modifiers.close_session(self._session)


def introspect_instance(binding_or_tenant: Any, instance_id: str) -> InstanceIntrospector:
    """Introspect (and modify) the instance ``instance_id`` of a binding or a tenant."""
    if not binding_or_tenant or not instance_id:
        raise IntrospectorError(f"{PREFIX} Workflow binding and instance id are required.")
    return InstanceIntrospector(resolve_target(binding_or_tenant), instance_id)


def introspect_workflow(binding_or_tenant: Any) -> WorkflowIntrospector:
    """Introspect every instance of a binding's workflow (or a tenant's) created from now on."""
    if not binding_or_tenant:
        raise IntrospectorError(f"{PREFIX} Workflow binding is required.")
    return WorkflowIntrospector(resolve_target(binding_or_tenant))

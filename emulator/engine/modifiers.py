"""Test modifiers: the named hooks through which a test bends one instance's run (docs/semantics.md §7.3).

The platform's test API lets a test change what the engine does for an instance: sleeps and retry
back-offs that end at once, step attempts whose outcome is decided in advance (a result, an error,
a timeout), events that arrive without being sent, event waits that time out at once. Here they
are engine features, consulted at fixed points, never patches over the engine's code:

- the engine's side of a step (:class:`~emulator.engine.lifetime.Lifetime`) asks whether a sleep
  or a retry back-off is disabled, whether a mocked event answers a new wait, and whether a wait
  must time out now;
- the side that runs step bodies (:class:`~emulator.sdk.client.StepClient`) asks
  :class:`~emulator.sdk.mocks.StepMocks` (``sdk/mocks.py``) for each attempt's outcome. For a
  dynamic workflow that side lives in the
  tenant's isolate, so the step mocks travel there inside the step handle's init dict
  (``emulator/sdk/remote.py``): a mocked step's body never runs in the isolate. The isolate
  gets them when a run starts (every replay sends them afresh), so a change made while a run is
  under way reaches an isolate when the run next replays (after a wait); in the host, at once.

Semantics are the platform's local engine's (workers-sdk ``modifier.ts``/``context.ts``): a step
selector ``{"name", "index"}`` picks the ``index``-th occurrence of the name (1-based, default 1);
a mocked error or timeout without ``times`` applies to every attempt, with ``times`` to that many
consecutive attempts starting from the first attempt no earlier ``times`` call claimed (errors
and timeouts share that count); per attempt an error wins over a timeout, and a timeout over a
mocked result; a mocked step still records its attempts, so it reads like any other step.

State lives in memory, in the engine that runs the instance: modifiers belong to a test, which
owns its engine; they are not persisted, and another engine process on the same file never sees
them. They outlive ``restart()``, as the platform's do (its restart erases the run's state and
keeps the modifier keys): every mocked event is remembered and offered again to the new run.
An engine with no modifiers pays one dict lookup per hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from emulator.rules.limits import check_event_type, encode_json
from emulator.sdk.failures import error_dict
from emulator.sdk.mocks import PREFIX, ModifierError, Selector, StepMocks, check_times, selector
from emulator.rules.steps import StepKey, TimerKind

if TYPE_CHECKING:
    from emulator.engine.engine import Engine


# ---- one instance's modifiers (or a workflow's template for new instances) --------------------

class InstanceModifiers:
    """The platform's ``WorkflowInstanceModifier`` in snake_case, for one instance.

    A template (``instance_id`` None) collects what ``modify_all`` asks for a workflow; each
    instance created while its session is open starts with a copy.
    """

    def __init__(self, registry: "Modifiers | None", instance_id: str | None) -> None:
        self._registry = registry
        self.instance_id = instance_id
        self.steps = StepMocks()
        self.all_sleeps_disabled = False
        self.sleeps_disabled: set[Selector] = set()
        self.all_retry_delays_disabled = False
        self.retry_delays_disabled: set[Selector] = set()
        self.events: list[tuple[str, Any]] = []            # mocked, not yet taken by a wait
        self.mocked_events: list[tuple[str, Any]] = []     # every one mocked: for a restart
        self.event_timeouts: set[Selector] = set()

    # ---- the modifier API ----------------------------------------------------------------------

    def disable_sleeps(self, steps: Iterable[Any] | None = None) -> None:
        """End sleeps at once: every sleep, or only the selected ones."""
        if steps is None:
            self.all_sleeps_disabled = True
        else:
            self.sleeps_disabled.update(selector(s, what="sleep") for s in _listed(steps))
        self._fire_now(TimerKind.SLEEP, lambda key: self.sleep_disabled(key))

    def disable_retry_delays(self, steps: Iterable[Any] | None = None) -> None:
        """Retry failed attempts at once: every ``step.do``, or only the selected ones."""
        if steps is None:
            self.all_retry_delays_disabled = True
        else:
            self.retry_delays_disabled.update(selector(s) for s in _listed(steps))
        self._fire_now(TimerKind.RETRY, lambda key: self.retry_delay_disabled(key))

    def mock_step_result(self, step: Any, result: Any) -> None:
        """The step returns ``result`` without running its body."""
        chosen = selector(step)
        mock = self.steps.get(chosen)
        if mock.has_result:
            raise ModifierError(f"{PREFIX} Trying to mock step '{chosen[0]}' multiple times!")
        mock.result = encode_json(result, what=f"the mocked result of step '{chosen[0]}'")
        mock.has_result = True

    def mock_step_error(self, step: Any, error: BaseException, times: int | None = None) -> None:
        """Attempts of the step fail with ``error``: every attempt, or ``times`` of them."""
        chosen = selector(step)
        if not isinstance(error, BaseException):
            raise ModifierError(f"{PREFIX} mock_step_error takes an exception instance such as "
                                f"ValueError('boom'), not {type(error).__name__}")
        count = check_times(times, chosen[0])
        mock = self.steps.get(chosen)
        if mock.has_result:
            raise ModifierError(f"{PREFIX} Trying to mock error on step '{chosen[0]}' after "
                                "mocking its result!")
        shape = error_dict(error)
        if count is None:
            mock.error = shape
        else:
            for attempt in range(mock.next_attempt, mock.next_attempt + count):
                mock.errors[attempt] = shape
            mock.next_attempt += count

    def force_step_timeout(self, step: Any, times: int | None = None) -> None:
        """Attempts of the step time out at once: every attempt, or ``times`` of them."""
        chosen = selector(step)
        count = check_times(times, chosen[0])
        mock = self.steps.get(chosen)
        if mock.has_result:
            raise ModifierError(f"{PREFIX} Trying to force timeout on step '{chosen[0]}' after "
                                "mocking its result!")
        if count is None:
            mock.timeout = True
        else:
            mock.timeouts.update(range(mock.next_attempt, mock.next_attempt + count))
            mock.next_attempt += count

    def mock_event(self, event: Mapping[str, Any]) -> None:
        """Deliver ``{"type", "payload"}`` to the next ``wait_for_event`` of that type."""
        if not isinstance(event, Mapping) or "type" not in event:
            raise ModifierError(f"{PREFIX} mock_event takes {{'type': ..., 'payload': ...}}, "
                                f"not {event!r}")
        event_type = check_event_type(event["type"])
        payload = event.get("payload")
        encode_json(payload, what=f"the payload of mocked event '{event_type}'")
        self.mocked_events.append((event_type, payload))
        engine = self._registry.engine if self._registry is not None else None
        if engine is not None and self.instance_id is not None:
            row = engine.store.find_instance(self.instance_id)
            if row is not None:
                # the instance exists: deliver durably, as send_event does (buffered until asked)
                engine.control.send_event(self.instance_id, event_type, payload)
                return
        self.events.append((event_type, payload))

    def force_event_timeout(self, step: Any) -> None:
        """The selected ``wait_for_event`` times out at once (now, if it is already waiting)."""
        self.event_timeouts.add(selector(step, what="wait_for_event"))
        self._fire_now(TimerKind.EVENT_TIMEOUT, lambda key: self.event_timeout_forced(key))

    # ---- what the engine asks --------------------------------------------------------------------

    def sleep_disabled(self, key: StepKey) -> bool:
        return self.all_sleeps_disabled or (key[1], key[2]) in self.sleeps_disabled

    def retry_delay_disabled(self, key: StepKey) -> bool:
        return self.all_retry_delays_disabled or (key[1], key[2]) in self.retry_delays_disabled

    def event_timeout_forced(self, key: StepKey) -> bool:
        return (key[1], key[2]) in self.event_timeouts

    def take_event(self, event_type: str) -> tuple[bool, Any]:
        for i, (kind, payload) in enumerate(self.events):
            if kind == event_type:
                del self.events[i]
                return True, payload
        return False, None

    # ---- templates -------------------------------------------------------------------------------

    def absorb(self, template: "InstanceModifiers") -> None:
        """Add what ``template`` asks for to this instance's own modifiers (its own win)."""
        for chosen, mock in template.steps._steps.items():
            self.steps._steps.setdefault(chosen, mock.copy())
        self.all_sleeps_disabled |= template.all_sleeps_disabled
        self.sleeps_disabled |= template.sleeps_disabled
        self.all_retry_delays_disabled |= template.all_retry_delays_disabled
        self.retry_delays_disabled |= template.retry_delays_disabled
        self.events.extend(template.events)
        self.mocked_events.extend(template.mocked_events)
        self.event_timeouts |= template.event_timeouts

    def restarted(self) -> None:
        """The instance was restarted: its run starts over, and so do its mocked events (a
        restart erases the events it had been sent; mocked ones are the test's, not the run's)."""
        self.events = list(self.mocked_events)

    def _fire_now(self, kind: str, select: Callable[[StepKey], bool]) -> None:
        """A wait of this instance already under way that the modifier ends: end it now."""
        if self._registry is not None and self.instance_id is not None:
            self._registry.engine.fire_timers_now(
                self.instance_id, lambda timer: timer.kind == kind and select(timer.step))


def _listed(steps: Any) -> list[Any]:
    if isinstance(steps, (str, Mapping)):
        return [steps]  # one selector given where a list was expected: take it as a list of one
    return list(steps)


# ---- the engine's registry --------------------------------------------------------------------

@dataclass(eq=False)
class WorkflowSession:
    """``introspect_workflow``: a template applied to every instance of ``workflow`` created while
    the session is open (with ``id_prefix``, only ids in that tenant's namespace)."""

    workflow: str
    id_prefix: str | None
    template: InstanceModifiers
    created: list[str] = field(default_factory=list)

    def covers(self, instance_id: str, workflow: str) -> bool:
        return workflow == self.workflow and (self.id_prefix is None
                                              or instance_id.startswith(self.id_prefix))


class Modifiers:
    """Every modifier an engine knows of, by instance id (``engine.modifiers``)."""

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self._instances: dict[str, InstanceModifiers] = {}
        self._sessions: list[WorkflowSession] = []

    def for_instance(self, instance_id: str) -> InstanceModifiers:
        """The instance's modifiers, made on first use (the instance need not exist yet)."""
        modifiers = self._instances.get(instance_id)
        if modifiers is None:
            modifiers = self._instances[instance_id] = InstanceModifiers(self, instance_id)
        return modifiers

    def of(self, instance_id: str) -> InstanceModifiers | None:
        return self._instances.get(instance_id)

    def discard(self, instance_id: str) -> None:
        self._instances.pop(instance_id, None)

    # ---- workflow sessions -----------------------------------------------------------------------

    def open_session(self, workflow: str, id_prefix: str | None = None) -> WorkflowSession:
        """Only one session at a time may cover an instance (the platform allows one per workflow;
        sessions of different tenants of one workflow do not overlap)."""
        for other in self._sessions:
            if other.workflow == workflow and (other.id_prefix is None or id_prefix is None
                                               or other.id_prefix == id_prefix):
                raise ModifierError(
                    f"{PREFIX} Workflow '{workflow}' is already being introspected; dispose that "
                    "introspector before introspecting it again")
        session = WorkflowSession(workflow, id_prefix, InstanceModifiers(None, None))
        self._sessions.append(session)
        return session

    def close_session(self, session: WorkflowSession) -> None:
        if session in self._sessions:
            self._sessions.remove(session)

    def instance_created(self, instance_id: str) -> None:
        """The engine's hook after an instance is created in this process."""
        if not self._sessions:
            return
        row = self.engine.store.find_instance(instance_id)
        if row is None:
            return
        for session in self._sessions:
            if session.covers(instance_id, row.workflow):
                self.for_instance(instance_id).absorb(session.template)
                session.created.append(instance_id)
                return

    def instance_restarted(self, instance_id: str) -> None:
        """The engine's hook after ``restart()`` in this process: modifiers outlive it."""
        modifiers = self._instances.get(instance_id)
        if modifiers is not None:
            modifiers.restarted()

    # ---- hooks -------------------------------------------------------------------------------

    def sleep_disabled(self, instance_id: str, key: StepKey) -> bool:
        modifiers = self._instances.get(instance_id)
        return modifiers is not None and modifiers.sleep_disabled(key)

    def retry_delay_disabled(self, instance_id: str, key: StepKey) -> bool:
        modifiers = self._instances.get(instance_id)
        return modifiers is not None and modifiers.retry_delay_disabled(key)

    def event_timeout_forced(self, instance_id: str, key: StepKey) -> bool:
        modifiers = self._instances.get(instance_id)
        return modifiers is not None and modifiers.event_timeout_forced(key)

    def take_event(self, instance_id: str, event_type: str) -> tuple[bool, Any]:
        """``(True, payload)`` of the oldest mocked event of ``event_type`` not yet delivered."""
        modifiers = self._instances.get(instance_id)
        return modifiers.take_event(event_type) if modifiers is not None else (False, None)

    def step_mocks(self, instance_id: str) -> StepMocks | None:
        """The instance's step mocks (shared, so a run in this process sees later changes)."""
        modifiers = self._instances.get(instance_id)
        return modifiers.steps if modifiers is not None else None


__all__ = ["PREFIX", "InstanceModifiers", "ModifierError", "Modifiers", "StepMocks",
           "WorkflowSession", "selector"]

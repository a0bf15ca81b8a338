"""Operations on instances that need only the database: create, status, pause, resume,
terminate, restart (from the top, or from a step), delete, send_event.

They work from any process sharing the file. A running engine notices what another process did
on its next poll (within ``Engine.poll_ms``); an engine in this process is also told at once through
``Control.on_change``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from emulator.rules import states
from emulator.clock import Clock
from emulator.rules.limits import (MAX_BATCH, MAX_ID_LENGTH, MAX_PAYLOAD_BYTES, check_event_type,
                                   check_instance_id, check_step_name, encode_json, is_valid_id)
from emulator.engine.store import InstanceRow, StepKey, StepRow, Store
from emulator.rules.steps import ENDED, RESTART_DEFAULT_TYPE, StepKind, StepStatus
from emulator.rules.steps import RESTART_STEP_TYPES as RESTART_TYPES
from emulator.rules.tenant_scope import PREFIX_LENGTH, scope_of
from emulator.rules.values import decode_json
from emulator.errors import (CannotRestartError, CannotTerminateError, InstanceAlreadyExistsError,
                             InstanceNotFoundError, InstanceNotRunningError, InvalidIdError,
                             ValidationError)

#: The platform's per-id outcome codes of ``delete_batch`` (numbers, as its API gives them).
DELETE_NOT_FOUND = {"code": 10400, "message": "workflows.api.error.instance.not_found"}
DELETE_FAILED = {"code": 10001, "message": "workflows.api.error.internal_server"}


@dataclass(frozen=True, slots=True)
class CreateInput:
    id: str
    params: str               # JSON
    scope: str | None = None  # a wrapped binding's tenant scope (rules/tenant_scope.py)


def parse_create_options(options: Any, *, what: str = "create options") -> CreateInput:
    """Validate ``{"id"?, "params"?}`` (the binding's create options) before anything is written."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValidationError(f"{what} must be a dict like {{'id': ..., 'params': ...}}, "
                              f"not {type(options).__name__}")
    unknown = set(options) - {"id", "params", "retention", "locationHint", "location_hint"}
    if unknown:
        raise ValidationError(f"{what} has unknown key(s): {', '.join(sorted(unknown))}")
    instance_id = options.get("id")
    params = options.get("params", {})
    scoped = scope_of(instance_id, params)
    if scoped is not None:      # the platform's id rule applies to the tenant's own id
        check_instance_id(scoped[1])
    elif instance_id is not None:
        check_instance_id(instance_id)
    else:
        instance_id = uuid.uuid4().hex
    return CreateInput(instance_id, encode_json(params, what="params"),
                       scoped[0] if scoped is not None else None)


@dataclass(frozen=True, slots=True)
class RestartFrom:
    """The step ``restart({"from": ...})`` runs again from: its name, its occurrence (from 1)
    and the platform's type of step."""

    name: str
    count: int = 1
    type: str = RESTART_DEFAULT_TYPE

    @property
    def key(self) -> StepKey:
        return (RESTART_TYPES[self.type], self.name, self.count)


def parse_restart_options(options: Any) -> RestartFrom | None:
    """``None`` or ``{"from": {"name", "count"?, "type"?}}`` (count 1 and type ``do`` by
    default), checked whole before anything is written; None means from the top."""
    if options is None:
        return None
    if not isinstance(options, dict):
        raise ValidationError(f"restart options must be a dict like {{'from': {{'name': ...}}}}, "
                              f"not {type(options).__name__}")
    unknown = set(options) - {"from"}
    if unknown:
        raise ValidationError(f"restart options have unknown key(s): {_keys(unknown)}; "
                              "the one key is 'from'")
    start = options.get("from")
    if start is None:
        return None
    if not isinstance(start, dict):
        raise ValidationError(f"restart 'from' must be a dict like {{'name': 'charge', 'count': 1, "
                              f"'type': 'do'}}, not {type(start).__name__}")
    unknown = set(start) - {"name", "count", "type"}
    if unknown:
        raise ValidationError(f"restart 'from' has unknown key(s): {_keys(unknown)}; "
                              "it takes 'name', 'count' and 'type'")
    if "name" not in start:
        raise ValidationError("restart 'from' needs 'name', the name of the step to run again from")
    name = check_step_name(start["name"])
    count = start.get("count", 1)
    if type(count) is not int or count < 1:
        raise ValidationError(f"restart 'from' count must be a whole number from 1 (the step's "
                              f"occurrence), not {count!r}")
    kind = start.get("type", RESTART_DEFAULT_TYPE)
    if not isinstance(kind, str) or kind not in RESTART_TYPES:
        raise ValidationError(f"restart 'from' type must be one of {', '.join(RESTART_TYPES)}, "
                              f"not {kind!r}")
    return RestartFrom(name, count, kind)


def check_batch_ids(ids: Any, what: str = "delete_batch") -> list[str]:
    """1 to 100 instance ids, each of the platform's form (or a tenant-scoped one: a scope, a
    dash and a tenant's id of that form); the first that is not fails the whole call."""
    if isinstance(ids, dict) and set(ids) == {"instances"}:
        ids = ids["instances"]   # the local platform's {"instances": [...]} form
    if not isinstance(ids, (list, tuple)):
        raise ValidationError(f"{what} takes a list of instance ids, not {type(ids).__name__}")
    if not ids:
        raise ValidationError(f"{what} should have at least 1 instance")
    if len(ids) > MAX_BATCH:
        raise ValidationError(f"{what} only supports {MAX_BATCH} instances at a time, "
                              f"got {len(ids)}")
    for instance_id in ids:
        if not is_stored_id(instance_id):
            raise InvalidIdError(
                f"Instance ID is invalid: {instance_id!r} (ids are 1-{MAX_ID_LENGTH} characters "
                "matching ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$); nothing was deleted")
    return list(ids)


def is_stored_id(value: Any) -> bool:
    """An id as the engine keys instances: the platform's form, or a tenant scope (12 hex digits),
    a dash and a tenant's id of the platform's form."""
    if is_valid_id(value):
        return True
    if not isinstance(value, str) or len(value) <= PREFIX_LENGTH + 1 or value[PREFIX_LENGTH] != "-":
        return False
    scope = value[:PREFIX_LENGTH]
    return all(c in "0123456789abcdef" for c in scope) and is_valid_id(value[PREFIX_LENGTH + 1:])


def _keys(keys: set[str]) -> str:
    return ", ".join(sorted(map(repr, keys)))


def terminate_rollback(options: Any = None, rollback: Any = None) -> bool:
    """Whether ``terminate(options, rollback=...)`` asks for a rollback: ``{"rollback": bool}``
    or the keyword, checked."""
    if options is not None:
        if not isinstance(options, dict):
            raise ValidationError("terminate options must be a dict like {'rollback': True}, "
                                  f"not {type(options).__name__}")
        unknown = set(options) - {"rollback"}
        if unknown:
            raise ValidationError(f"terminate options have unknown key(s): "
                                  f"{', '.join(sorted(map(str, unknown)))} (allowed: rollback)")
        if rollback is not None and options.get("rollback", rollback) != rollback:
            raise ValidationError("terminate got rollback both in its options and as a keyword, "
                                  "with different values; give it once")
        rollback = options.get("rollback", rollback)
    if rollback is None:
        return False
    if not isinstance(rollback, bool):
        raise ValidationError(f"terminate's rollback must be True or False, not {rollback!r}")
    return rollback


def rollback_status(column: str) -> dict[str, Any] | None:
    """The status record's ``rollback``: None while the phase runs, then ``{"outcome", "error"}``."""
    phase = json.loads(column)
    if phase.get("outcome") is None:
        return None
    return {"outcome": phase["outcome"], "error": phase.get("error")}


def event_value(payload: Any, type: str, at: int) -> dict[str, Any]:
    return {"payload": payload, "timestamp": at, "type": type}


class Control:
    def __init__(self, store: Store, clock: Clock,
                 on_change: Callable[[str, str], None] | None = None) -> None:
        self.store = store
        self.clock = clock
        # (instance_id, what) -> the engine in this process reacts at once
        self._react = on_change or (lambda instance_id, what: None)

    def on_change(self, instance_id: str, what: str) -> None:
        """A change committed: the store hears of it first (its hook for engines on other
        hosts, ``Store.changed``), then this process's engine."""
        self.store.changed(instance_id, what)
        self._react(instance_id, what)

    def _locked(self, instance_id: str) -> InstanceRow:
        """The instance's row, locked for the rest of the transaction (``lock_instance_txn``)."""
        row = self.store.lock_instance_txn(instance_id)
        if row is None:
            raise InstanceNotFoundError(f"Instance '{instance_id}' does not exist",
                                        instance_id=instance_id, hint="dynwf instances list")
        return row

    # ---- create ----------------------------------------------------------------------------

    def create(self, workflow: str, options: Any = None, *, code_version: str | None = None) -> str:
        """Create an instance of ``workflow``; returns the engine's key (the id given, unless
        another workflow's instance holds it: ``Store.insert_instance_txn``)."""
        item = parse_create_options(options)
        with self.store.write():
            key = self.store.insert_instance_txn(item.id, workflow, item.params,
                                                 self.clock.now_ms(), code_version, item.scope)
            if key is None:
                raise InstanceAlreadyExistsError(
                    f"Instance '{item.id}' already exists", instance_id=item.id,
                    hint="use another id, or restart() the existing instance")
        self.on_change(key, "created")
        return key

    def create_batch(self, workflow: str, batch: Iterable[Any], *,
                     code_version: str | None = None) -> list[tuple[str, str]]:
        """Create up to 100 instances at once; ids the workflow already has are skipped and left
        out. Returns ``(key, id)`` of each one created."""
        items = list(batch) if not isinstance(batch, (str, bytes, dict)) else None
        if items is None:
            raise ValidationError("create_batch takes a list of create options")
        if not items:
            raise ValidationError("create_batch should have at least 1 instance")
        if len(items) > MAX_BATCH:
            raise ValidationError(f"create_batch takes at most {MAX_BATCH} instances, got {len(items)}")
        parsed = [parse_create_options(o, what=f"batch[{i}]") for i, o in enumerate(items)]
        created: list[tuple[str, str]] = []
        now = self.clock.now_ms()
        with self.store.write():
            for item in parsed:
                key = self.store.insert_instance_txn(item.id, workflow, item.params, now,
                                                     code_version, item.scope)
                if key is not None:
                    created.append((key, item.id))
        if created:   # other hosts need no id to claim new work: one announcement for the batch
            self.store.changed("*", "created")
        for key, _id in created:
            self._react(key, "created")
        return created

    # ---- read ------------------------------------------------------------------------------

    def status(self, instance_id: str) -> dict[str, Any]:
        """The platform's InstanceStatus: ``{"status", "error", "output"}``, and ``rollback`` once
        a rollback phase has begun (docs/semantics.md, "Rollbacks")."""
        row = self.store.get_instance(instance_id)
        status = {
            "status": row.status,
            "error": json.loads(row.error) if row.error is not None else None,
            "output": decode_json(row.output) if row.output is not None else None,
        }
        if row.rollback is not None:
            status["rollback"] = rollback_status(row.rollback)
        return status

    def get(self, instance_id: str) -> InstanceRow:
        return self.store.get_instance(instance_id)

    def get_in_workflow(self, workflow: str, instance_id: str) -> InstanceRow:
        """The instance ``workflow``'s binding created as ``instance_id`` (ids are per workflow)."""
        row = self.store.find_in_workflow(workflow, instance_id)
        if row is None:
            raise InstanceNotFoundError(f"Instance '{instance_id}' does not exist",
                                        instance_id=instance_id, hint="dynwf instances list")
        return row

    # ---- lifecycle -------------------------------------------------------------------------

    def pause(self, instance_id: str) -> str:
        """Pause: a running instance finishes its in-flight steps first (``waitingForPause``);
        a queued or waiting one pauses at once and its timers stop. Otherwise a no-op."""
        now = self.clock.now_ms()
        with self.store.write():
            row = self._locked(instance_id)
            if row.status == states.RUNNING and row.lease_owner is not None:
                self.store.set_status_txn(instance_id, row.status, states.WAITING_FOR_PAUSE, now)
                new = states.WAITING_FOR_PAUSE
            elif row.status in (states.QUEUED, states.WAITING, states.RUNNING):
                # running with no engine's lease (restarted, not claimed yet): no step in flight
                self.store.set_status_txn(instance_id, row.status, states.PAUSED, now, paused_at=now)
                new = states.PAUSED
            else:
                return row.status
        self.on_change(instance_id, "pause")
        return new

    def resume(self, instance_id: str) -> str:
        """Resume a paused instance (its sleeps keep their remaining time) or cancel a pending
        pause. A no-op in any other status (what the local platform does)."""
        now = self.clock.now_ms()
        with self.store.write():
            row = self._locked(instance_id)
            if row.status == states.PAUSED:
                self.store.shift_timers_txn(instance_id, now - (row.paused_at or now))
                self.store.set_status_txn(instance_id, row.status, states.QUEUED, now, paused_at=None)
                new = states.QUEUED
            elif row.status == states.WAITING_FOR_PAUSE:
                self.store.set_status_txn(instance_id, row.status, states.RUNNING, now)
                new = states.RUNNING
            else:
                return row.status
        self.on_change(instance_id, "resume")
        return new

    def terminate(self, instance_id: str, *, rollback: bool = False) -> None:
        """Stop the instance at once; with ``rollback`` and a step that registered a handler,
        first run its rollback phase (the instance is queued for it and ends ``terminated``)."""
        now = self.clock.now_ms()
        with self.store.write():
            row = self._locked(instance_id)
            if states.is_finished(row.status):
                raise CannotTerminateError(instance_id=instance_id, status=row.status)
            if rollback and row.rollback is None and row.status != states.UNKNOWN \
                    and self.store.has_rollback_handlers(instance_id):
                phase = {"trigger": None, "trigger_traceback": None, "outcome": None,
                         "error": None}
                self.store.set_rollback_txn(instance_id, json.dumps(phase), now)
                self.store.delete_timers_txn(instance_id)   # its waits end with the phase
                fields = {"lease_owner": None, "lease_expiry": None, "paused_at": None}
                if row.status == states.QUEUED:
                    self.store.unlease_txn(instance_id, now)
                else:
                    self.store.set_status_txn(instance_id, row.status, states.QUEUED, now, **fields)
                what = "terminate_rollback"
            else:
                extra = {}
                if row.rollback is not None and json.loads(row.rollback).get("outcome") is None:
                    # a plain terminate cuts a rollback phase short: it did not complete
                    cut = {**json.loads(row.rollback), "outcome": "failed",
                           "error": {"name": "Terminated",
                                     "message": "the instance was terminated during its rollback"}}
                    extra["rollback"] = json.dumps(cut)
                self.store.finish_txn(instance_id, row.status, states.TERMINATED, now, **extra)
                what = "terminate"
        self.on_change(instance_id, what)

    def restart(self, instance_id: str, options: Any = None) -> None:
        """Run again with the same params, from any status. Without ``{"from": ...}`` every
        step is erased; with it, the steps first reached before the named one keep their
        results and that step and every later one run again (docs/semantics.md §4.6). A step
        the instance never reached is :class:`CannotRestartError`, before anything changes.
        The instance reads ``running`` as soon as this returns."""
        start = parse_restart_options(options)
        with self.store.write():
            row = self._locked(instance_id)
            from_seq = self._from_seq_txn(instance_id, start) if start is not None else None
            self.store.reset_txn(instance_id, row.status, self.clock.now_ms(), from_seq=from_seq)
        self.on_change(instance_id, "restart")

    def _from_seq_txn(self, instance_id: str, start: RestartFrom) -> int:
        """Where ``start`` stands in the order the instance first reached its steps: the steps
        before it are what a restart from it keeps and a rerun from it copies. A step the
        history does not hold is :class:`CannotRestartError`."""
        from_seq = self.store.step_seq(instance_id, start.key)
        if from_seq is None:
            raise CannotRestartError(instance_id=instance_id, name=start.name,
                                     count=start.count, type=start.type)
        return from_seq

    def rerun(self, instance_id: str, start: RestartFrom, *, new_id: str | None = None,
              output: str | None = None) -> str:
        """A new instance whose history is the original's up to and excluding ``start`` (the
        steps first reached before it, with their failed attempts), queued to continue with the
        code the workflow runs now; with ``output``, ``start`` itself (a ``do`` step) is kept as
        done with that result (JSON text). The original is not touched; the new one names it
        (``rerun_of``) and the step. Returns the new instance's key (docs/semantics.md §4.10)."""
        if output is not None and start.type != "do":
            raise ValidationError(f"--output replaces a do step's result; {start.name!r} is a "
                                  f"{start.type} step")
        result = None
        if output is not None:
            try:
                value = json.loads(output)
            except ValueError as exc:
                raise ValidationError(f"the output to replace the step's with is not JSON: {exc}",
                                      hint="""--output '{"ok": true}'""") from None
            result = encode_json(value, what="the replaced output")
        if new_id is not None:
            check_instance_id(new_id)
        now = self.clock.now_ms()
        with self.store.write():
            row = self.store.get_instance(instance_id)
            from_seq = self._from_seq_txn(instance_id, start)
            scope = self.store.scope_of(instance_id)
            given = new_id or uuid.uuid4().hex
            key = f"{scope}-{given}" if scope else given
            kept = [step for step in self.store.steps_before(instance_id, from_seq)
                    if step.status in ENDED]
            if result is not None:
                replaced = self.store.get_step(instance_id, start.key)
                kept.append(StepRow(StepKind.DO, start.name, start.count, StepStatus.DONE,
                                    max(replaced.attempts if replaced else 1, 1),
                                    replaced.config if replaced else None, result, None, None,
                                    None, now, now))
            copy = InstanceRow(key, row.workflow, states.QUEUED, row.params, None, None, 1, None,
                               None, None, None, row.created_at, now, None, None,
                               binding_id=key)
            link = json.dumps({"kind": start.key[0], "name": start.name, "count": start.count,
                               **({"output_replaced": True} if result is not None else {})})
            if not self.store.insert_copied_instance_txn(copy, scope, rerun_of=instance_id,
                                                         rerun_from=link):
                raise InstanceAlreadyExistsError(
                    f"Instance '{given}' already exists", instance_id=given,
                    hint="choose another id with --id, or leave it out for a random one")
            attempts = self.store.list_attempts(instance_id)
            for step in kept:
                self.store.insert_step_txn(key, step)
                if step.key == start.key:
                    continue        # the replaced step: its result is the one given, alone
                for attempt in attempts.get(step.key, []):
                    self.store.add_attempt_txn(key, step.key, attempt["attempt"],
                                               json.dumps(attempt["error"]), attempt["at"])
        self.on_change(key, "created")
        return key

    def delete(self, instance_id: str) -> None:
        """Stop the instance without rollback and erase everything stored about it (its row,
        steps, attempts, timers, events and logs)."""
        with self.store.write():
            if not self.store.delete_instance_txn(instance_id):
                raise InstanceNotFoundError(f"Instance '{instance_id}' does not exist",
                                            instance_id=instance_id, hint="dynwf instances list")
        self.on_change(instance_id, "delete")

    def delete_batch(self, ids: Any, *, key_of: Callable[[str], str | None] = lambda i: i
                     ) -> dict[str, list[dict[str, Any]]]:
        """Delete up to 100 instances: ``{"deleted": [{"id"}], "errors": [{"id", "code",
        "message"}]}``, one entry per input position (an id given twice is deleted once and
        reported twice). Any id that is not an id fails the whole call before anything is
        deleted. ``key_of`` maps an id given to the engine's key of the instance it names (a
        binding's ids are per workflow), or None; an id naming no instance is reported with the
        platform's not-found code."""
        ids = check_batch_ids(ids)
        outcome: dict[str, dict[str, Any] | None] = {}
        deleted_keys: list[str] = []
        with self.store.write():
            for instance_id in dict.fromkeys(ids):
                key = key_of(instance_id)
                if key is None:
                    outcome[instance_id] = DELETE_NOT_FOUND
                    continue
                try:
                    with self.store.savepoint("delete_one"):
                        found = self.store.delete_instance_txn(key)
                except Exception:   # noqa: BLE001 - the platform reports it per id, as internal
                    outcome[instance_id] = DELETE_FAILED
                else:
                    outcome[instance_id] = None if found else DELETE_NOT_FOUND
                    if found:
                        deleted_keys.append(key)
        for key in deleted_keys:
            self.on_change(key, "delete")
        deleted = [{"id": i} for i in ids if outcome[i] is None]
        errors = [{"id": i, **outcome[i]} for i in ids if outcome[i] is not None]
        return {"deleted": deleted, "errors": errors}

    def wake(self, instance_id: str) -> int:
        """End the current sleep or retry back-off now; returns how many waits were cut short."""
        now = self.clock.now_ms()
        with self.store.write():
            row = self._locked(instance_id)
            if states.is_finished(row.status):
                raise InstanceNotRunningError(f"Instance '{instance_id}' is {row.status}: nothing to "
                                              "wake", instance_id=instance_id)
            woken = self.store.wake_timers_txn(instance_id, now)
        self.on_change(instance_id, "wake")
        return woken

    def send_event(self, instance_id: str, type: Any, payload: Any = None) -> None:
        """Deliver to the oldest matching ``wait_for_event``, or buffer FIFO until one asks."""
        check_event_type(type)
        now = self.clock.now_ms()
        # the limit is the payload's own (1 MiB), not the event record's around it
        payload_json = encode_json(payload, what="event payload")
        encoded = encode_json(event_value(payload, type, now), what="event",
                              limit=MAX_PAYLOAD_BYTES + 1024)  # the record adds < 200 bytes
        with self.store.write():
            row = self._locked(instance_id)
            if states.is_finished(row.status):
                raise InstanceNotRunningError(
                    f"Cannot send event to instance '{instance_id}': it is {row.status}",
                    instance_id=instance_id)
            waiter = self.store.oldest_waiter_txn(instance_id, type)
            if waiter is None:
                self.store.buffer_event_txn(instance_id, type, payload_json, now)
            else:
                self.store.resolve_step_txn(instance_id, waiter, StepStatus.WAITING, StepStatus.DONE,
                                            now, result=encoded)
                self.store.delete_step_timers_txn(instance_id, waiter)
                if row.status == states.WAITING:
                    self.store.set_status_txn(instance_id, row.status, states.QUEUED, now)
        self.on_change(instance_id, "event")

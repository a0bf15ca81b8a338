"""Operations on instances that need only the database: create, status, pause, resume,
terminate, restart, send_event.

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
from emulator.rules.limits import MAX_BATCH, check_event_type, check_instance_id, encode_json
from emulator.engine.store import InstanceRow, Store
from emulator.rules.tenant_scope import scope_of
from emulator.errors import (CannotTerminateError, InstanceAlreadyExistsError, InstanceNotRunningError,
                             ValidationError)


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
        self.on_change = on_change or (lambda instance_id, what: None)

    # ---- create ----------------------------------------------------------------------------

    def create(self, workflow: str, options: Any = None, *, code_version: str | None = None) -> str:
        item = parse_create_options(options)
        with self.store.write():
            if not self.store.insert_instance_txn(item.id, workflow, item.params, self.clock.now_ms(),
                                                  code_version, item.scope):
                raise InstanceAlreadyExistsError(
                    f"Instance '{item.id}' already exists", instance_id=item.id,
                    hint="use another id, or restart() the existing instance")
        self.on_change(item.id, "created")
        return item.id

    def create_batch(self, workflow: str, batch: Iterable[Any], *,
                     code_version: str | None = None) -> list[str]:
        """Create up to 100 instances at once; ids already taken are skipped and left out."""
        items = list(batch) if not isinstance(batch, (str, bytes, dict)) else None
        if items is None:
            raise ValidationError("create_batch takes a list of create options")
        if not items:
            raise ValidationError("create_batch should have at least 1 instance")
        if len(items) > MAX_BATCH:
            raise ValidationError(f"create_batch takes at most {MAX_BATCH} instances, got {len(items)}")
        parsed = [parse_create_options(o, what=f"batch[{i}]") for i, o in enumerate(items)]
        created: list[str] = []
        now = self.clock.now_ms()
        with self.store.write():
            for item in parsed:
                if self.store.insert_instance_txn(item.id, workflow, item.params, now, code_version,
                                                  item.scope):
                    created.append(item.id)
        for instance_id in created:
            self.on_change(instance_id, "created")
        return created

    # ---- read ------------------------------------------------------------------------------

    def status(self, instance_id: str) -> dict[str, Any]:
        """The platform's InstanceStatus: ``{"status", "error", "output"}``, and ``rollback`` once
        a rollback phase has begun (docs/semantics.md, "Rollbacks")."""
        row = self.store.get_instance(instance_id)
        status = {
            "status": row.status,
            "error": json.loads(row.error) if row.error is not None else None,
            "output": json.loads(row.output) if row.output is not None else None,
        }
        if row.rollback is not None:
            status["rollback"] = rollback_status(row.rollback)
        return status

    def get(self, instance_id: str) -> InstanceRow:
        return self.store.get_instance(instance_id)

    # ---- lifecycle -------------------------------------------------------------------------

    def pause(self, instance_id: str) -> str:
        """Pause: a running instance finishes its in-flight steps first (``waitingForPause``);
        a queued or waiting one pauses at once and its timers stop. Otherwise a no-op."""
        now = self.clock.now_ms()
        with self.store.write():
            row = self.store.get_instance(instance_id)
            if row.status == states.RUNNING:
                self.store.set_status_txn(instance_id, row.status, states.WAITING_FOR_PAUSE, now)
                new = states.WAITING_FOR_PAUSE
            elif row.status in (states.QUEUED, states.WAITING):
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
            row = self.store.get_instance(instance_id)
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
            row = self.store.get_instance(instance_id)
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

    def restart(self, instance_id: str) -> None:
        """Erase all step state and run again from the top with the same params (any status)."""
        with self.store.write():
            row = self.store.get_instance(instance_id)
            self.store.reset_txn(instance_id, row.status, self.clock.now_ms())
        self.on_change(instance_id, "restart")

    def wake(self, instance_id: str) -> int:
        """End the current sleep or retry back-off now; returns how many waits were cut short."""
        now = self.clock.now_ms()
        with self.store.write():
            row = self.store.get_instance(instance_id)
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
        encoded = json.dumps(event_value(payload, type, now),
                             separators=(",", ":"), ensure_ascii=False)
        with self.store.write():
            row = self.store.get_instance(instance_id)
            if states.is_finished(row.status):
                raise InstanceNotRunningError(
                    f"Cannot send event to instance '{instance_id}': it is {row.status}",
                    instance_id=instance_id)
            waiter = self.store.oldest_waiter_txn(instance_id, type)
            if waiter is None:
                self.store.buffer_event_txn(instance_id, type, payload_json, now)
            else:
                self.store.resolve_step_txn(instance_id, waiter, "waiting", "done", now, result=encoded)
                self.store.delete_step_timers_txn(instance_id, waiter)
                if row.status == states.WAITING:
                    self.store.set_status_txn(instance_id, row.status, states.QUEUED, now)
        self.on_change(instance_id, "event")

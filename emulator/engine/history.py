"""An instance's history as a file: the documented, versioned JSON of ``dynwf instances export``,
read back by ``dynwf instances import``, ``dynwf replay --history`` and the pytest plugin's
``replay`` (docs/semantics.md §4.10).

A history file comes from anywhere (a bug report, a test folder), so reading one checks
everything before anything is written: the format and version, every field's type, ids, step
names, kinds, statuses and counts, each value's size (1 MiB, as the engine's own limit), the
configs. Importing writes the instance, its steps, failed attempts, buffered events and timers
in one transaction: a file refused half-way leaves nothing behind.

Values are kept as the engine stores them (JSON in which a datetime is ``{"$datetime": ...}``),
so a result reads back as the same value on replay. A step marked sensitive keeps its real
output here: a history is for replaying, and replay needs it; treat the file as a secret when
one is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from emulator.engine.store import InstanceRow, StepRow, Store, TimerRow
from emulator.errors import HistoryError, InstanceAlreadyExistsError, DynwfError
from emulator.rules import states
from emulator.rules.limits import (MAX_CODE_VERSION_CHARS, MAX_PAYLOAD_BYTES, check_event_type,
                                   check_step_name, is_valid_id, is_valid_workflow_name, utf8_size)
from emulator.rules.retries import config_from_wire
from emulator.rules.steps import StepKey, StepKind, StepStatus, TimerKind
from emulator.rules.tenant_scope import PREFIX_LENGTH, scope_of
from emulator.tracebacks import traceback_fault

FORMAT = "dynwf.history"
VERSION = 1
#: The largest history file read: a step limit's worth of results would be far more, but a
#: history that size is not one a person reviews or a test keeps.
MAX_HISTORY_BYTES = 64 * 1024 * 1024
_KINDS = tuple(StepKind)
_TIMER_KINDS = tuple(TimerKind)
_MAX_MODULES_BYTES = 64 * 1024 * 1024
_MAX_NUMBER = 2 ** 53


@dataclass
class History:
    """One instance's record: what ``export`` writes and ``import``/``replay`` read."""

    instance: InstanceRow
    scope: str | None
    steps: list[StepRow]
    attempts: dict[StepKey, list[dict[str, Any]]] = field(default_factory=dict)
    events: list[tuple[str, str, int]] = field(default_factory=list)   # type, payload JSON, at
    timers: list[TimerRow] = field(default_factory=list)
    #: the tenant's modules the instance started on, when known: {"fingerprint", "modules"}
    source: dict[str, Any] | None = None
    rerun_of: str | None = None
    rerun_from: str | None = None

    @property
    def tenant(self) -> Any:
        params = json.loads(self.instance.params)
        metadata = params.get("__dispatcherMetadata") if isinstance(params, dict) else None
        return metadata.get("tenantId") if isinstance(metadata, dict) else None


def read_history(store: Store, key: str) -> History:
    """The stored history of instance ``key``."""
    row = store.get_instance(key)
    rerun_of, rerun_from = store.rerun_link(key)
    return History(row, store.scope_of(key), store.list_steps(key), store.list_attempts(key),
                   store.buffered_event_rows(key), store.timers_of(key),
                   rerun_of=rerun_of, rerun_from=rerun_from)


def to_json(history: History) -> dict[str, Any]:
    """The file's content (docs/semantics.md §4.10 documents each field)."""
    row = history.instance
    return {
        "format": FORMAT, "version": VERSION,
        "instance": {
            "id": row.id, "binding_id": row.known_as, "workflow": row.workflow,
            "scope": history.scope, "status": row.status,
            "params": json.loads(row.params),
            "output": json.loads(row.output) if row.output is not None else None,
            "error": json.loads(row.error) if row.error is not None else None,
            "error_traceback": json.loads(row.error_traceback) if row.error_traceback else None,
            "code_version": row.code_version, "created_at": row.created_at,
            "updated_at": row.updated_at, "started_at": row.started_at, "ended_at": row.ended_at,
            "rerun_of": history.rerun_of,
            "rerun_from": json.loads(history.rerun_from) if history.rerun_from else None,
        },
        "tenant": history.tenant,
        "steps": [{
            "kind": s.kind, "name": s.name, "count": s.count, "status": s.status,
            "attempts": s.attempts, "config": json.loads(s.config) if s.config else None,
            "result": json.loads(s.result) if s.result is not None else None,
            "has_result": s.result is not None,
            "error": json.loads(s.error) if s.error is not None else None,
            "failed_attempts": history.attempts.get(s.key, []),
            "event_type": s.event_type, "duration_ms": s.duration_ms,
            "started_at": s.started_at, "ended_at": s.ended_at,
            "rollback": json.loads(s.rollback) if s.rollback else None,
        } for s in history.steps],
        "events": [{"type": t, "payload": json.loads(p), "received_at": at}
                   for t, p, at in history.events],
        "timers": [{"kind": t.kind, "step": {"kind": t.step[0], "name": t.step[1],
                                             "count": t.step[2]}, "due": t.due}
                   for t in history.timers],
        "source": history.source,
    }


# ---- reading a file: every field checked --------------------------------------------------------

def parse_history(text: str | bytes, *, where: str = "the history") -> History:
    """A history file's text, checked whole (see the module's note); :class:`HistoryError`
    names the first field that is wrong."""
    if len(text) > MAX_HISTORY_BYTES:
        raise HistoryError(f"{where} is {len(text):,} bytes, over the limit of "
                           f"{MAX_HISTORY_BYTES:,}")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise HistoryError(f"{where} is not JSON: {exc}",
                           hint="export one with dynwf instances export ID > history.json") from None
    return _History(where).parse(data)


class _History:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, why: str) -> HistoryError:
        return HistoryError(f"{self.where}: {path} {why}; nothing was written",
                            hint=f"the format is {FORMAT} version {VERSION} "
                                 "(docs/semantics.md §4.10)")

    def typed(self, value: Any, kinds: tuple[type, ...], path: str, *,
              optional: bool = False) -> Any:
        if value is None and optional:
            return None
        if type(value) not in kinds:
            names = " or ".join(k.__name__ for k in kinds) + (" or null" if optional else "")
            raise self.fail(path, f"is {type(value).__name__ if value is not None else 'null'}, "
                                  f"not {names}")
        if type(value) is int and not -_MAX_NUMBER <= value <= _MAX_NUMBER:
            raise self.fail(path, "is out of range")
        return value

    def time(self, value: Any, path: str, *, optional: bool = True) -> int | None:
        value = self.typed(value, (int,), path, optional=optional)
        if value is not None and value < 0:
            raise self.fail(path, "is a negative time")
        return value

    def value(self, value: Any, path: str) -> str:
        """A stored JSON value, kept as the engine stores it, within the engine's 1 MiB."""
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (ValueError, RecursionError) as exc:
            raise self.fail(path, f"is not a JSON value: {exc}") from None
        if utf8_size(text) > MAX_PAYLOAD_BYTES:
            raise self.fail(path, f"is over the limit of {MAX_PAYLOAD_BYTES:,} bytes")
        return text

    def object(self, value: Any, path: str, keys: set[str], required: set[str]) -> dict[str, Any]:
        self.typed(value, (dict,), path)
        unknown = set(value) - keys
        if unknown:
            raise self.fail(path, f"has unknown key(s) {sorted(unknown)[:5]}")
        missing = required - set(value)
        if missing:
            raise self.fail(path, f"lacks {sorted(missing)}")
        return value

    def error(self, value: Any, path: str) -> str | None:
        if value is None:
            return None
        self.object(value, path, {"name", "message", "traceback"}, {"name", "message"})
        self.typed(value["name"], (str,), path + ".name")
        self.typed(value["message"], (str,), path + ".message")
        if "traceback" in value and traceback_fault(value["traceback"]) is not None:
            raise self.fail(path + ".traceback", traceback_fault(value["traceback"])[1])
        return self.value(value, path)

    def parse(self, data: Any) -> History:
        top = self.object(data, "the file", {"format", "version", "instance", "tenant", "steps",
                                             "events", "timers", "source"},
                          {"format", "version", "instance", "steps"})
        if top["format"] != FORMAT:
            raise self.fail("format", f"is {top['format']!r}, not {FORMAT!r}")
        if top["version"] != VERSION:
            raise self.fail("version", f"is {top['version']!r}; this dynwf reads version "
                                       f"{VERSION}")
        row, scope, rerun_of, rerun_from = self.instance(top["instance"])
        steps, attempts = self.steps(self.typed(top["steps"], (list,), "steps"))
        events = [self.event(e, f"events[{i}]")
                  for i, e in enumerate(self.typed(top.get("events", []), (list,), "events"))]
        timers = [self.timer(t, f"timers[{i}]", row.id, {s.key for s in steps})
                  for i, t in enumerate(self.typed(top.get("timers", []), (list,), "timers"))]
        return History(row, scope, steps, attempts, events, timers,
                       source=self.source(top.get("source")), rerun_of=rerun_of,
                       rerun_from=rerun_from)

    def instance(self, value: Any) -> tuple[InstanceRow, str | None, str | None, str | None]:
        keys = {"id", "binding_id", "workflow", "scope", "status", "params", "output", "error",
                "error_traceback", "code_version", "created_at", "updated_at", "started_at",
                "ended_at", "rerun_of", "rerun_from"}
        v = self.object(value, "instance", keys, {"id", "workflow", "status", "params",
                                                  "created_at"})
        key = self.typed(v["id"], (str,), "instance.id")
        scope = self.typed(v.get("scope"), (str,), "instance.scope", optional=True)
        if scope is not None:
            if len(scope) != PREFIX_LENGTH or any(c not in "0123456789abcdef" for c in scope) \
                    or not key.startswith(scope + "-") or not is_valid_id(key[PREFIX_LENGTH + 1:]):
                raise self.fail("instance.scope", "is not the 12 hex digits the id starts with")
        elif not is_valid_id(key):
            raise self.fail("instance.id", "is not an instance id (1-100 characters of "
                                           "a-z A-Z 0-9 _ -)")
        if scope is not None:
            # the scope is the metadata's own (rules/tenant_scope.py): a file must not place an
            # instance in another tenant's namespace
            scoped = scope_of(key, v["params"])
            if scoped is None or scoped[0] != scope:
                raise self.fail("instance.scope", "is not the scope of the params' dispatcher "
                                                  "metadata")
        binding_id = self.typed(v.get("binding_id", key), (str,), "instance.binding_id")
        if binding_id != key and not (binding_id and key == f"{binding_id}.{v['workflow']}"):
            raise self.fail("instance.binding_id", "does not match the id")
        workflow = self.typed(v["workflow"], (str,), "instance.workflow")
        if not is_valid_workflow_name(workflow):
            raise self.fail("instance.workflow", "is not a workflow name")
        status = self.typed(v["status"], (str,), "instance.status")
        if status not in states.ALL or status == states.UNKNOWN:
            raise self.fail("instance.status", f"is {status!r}, not a status")
        code_version = self.typed(v.get("code_version"), (str,), "instance.code_version",
                                  optional=True)
        if code_version is not None and len(code_version) > MAX_CODE_VERSION_CHARS:
            raise self.fail("instance.code_version", "is too long")
        output = self.value(v["output"], "instance.output") \
            if v.get("output") is not None else None
        traceback = v.get("error_traceback")
        if traceback is not None and traceback_fault(traceback) is not None:
            raise self.fail("instance.error_traceback", traceback_fault(traceback)[1])
        created = self.time(v["created_at"], "instance.created_at", optional=False)
        rerun_of = self.typed(v.get("rerun_of"), (str,), "instance.rerun_of", optional=True)
        rerun_from = v.get("rerun_from")
        if rerun_from is not None:
            self.object(rerun_from, "instance.rerun_from",
                        {"kind", "name", "count", "output_replaced"}, {"kind", "name", "count"})
        row = InstanceRow(key, workflow, status, self.value(v["params"], "instance.params"),
                          output, self.error(v.get("error"), ".".join(("instance", "error"))), 1, None, None,
                          None, code_version, created,
                          self.time(v.get("updated_at", created), "instance.updated_at"),
                          self.time(v.get("started_at"), "instance.started_at"),
                          self.time(v.get("ended_at"), "instance.ended_at"),
                          json.dumps(traceback) if traceback else None, binding_id)
        return row, scope, rerun_of, json.dumps(rerun_from) if rerun_from else None

    def steps(self, items: list[Any]) -> tuple[list[StepRow], dict[StepKey, list[dict[str, Any]]]]:
        keys = {"kind", "name", "count", "status", "attempts", "config", "result", "has_result",
                "error", "failed_attempts", "event_type", "duration_ms", "started_at", "ended_at",
                "rollback"}
        steps: list[StepRow] = []
        attempts: dict[StepKey, list[dict[str, Any]]] = {}
        seen: set[StepKey] = set()
        for i, item in enumerate(items):
            path = f"steps[{i}]"
            v = self.object(item, path, keys, {"kind", "name", "count", "status"})
            kind = self.typed(v["kind"], (str,), path + ".kind")
            if kind not in _KINDS:
                raise self.fail(path + ".kind", f"is {kind!r}, not one of {', '.join(_KINDS)}")
            name = self.typed(v["name"], (str,), path + ".name")
            try:
                check_step_name(name)
            except DynwfError as exc:
                raise self.fail(path + ".name", exc.message) from None
            count = self.typed(v["count"], (int,), path + ".count")
            if count < 1:
                raise self.fail(path + ".count", "is below 1")
            if (kind, name, count) in seen:
                raise self.fail(path, "repeats a step already listed")
            seen.add((kind, name, count))
            status = self.typed(v["status"], (str,), path + ".status")
            if status not in set(StepStatus):
                raise self.fail(path + ".status", f"is {status!r}, not a step status")
            tries = self.typed(v.get("attempts", 0), (int,), path + ".attempts")
            if tries < 0:
                raise self.fail(path + ".attempts", "is negative")
            config = v.get("config")
            config_text = None
            if config is not None:
                config_text = json.dumps(self.typed(config, (dict,), path + ".config"))
                try:
                    config_text = config_from_wire(config_text).json
                except DynwfError as exc:
                    raise self.fail(path + ".config", exc.message) from None
            rollback = v.get("rollback")
            rollback_text = None
            if rollback is not None:
                if kind != StepKind.DO:
                    raise self.fail(path + ".rollback", "is set on a step that is not a do step")
                rollback_text = json.dumps(self.typed(rollback, (dict,), path + ".rollback"))
                try:
                    parsed = config_from_wire(rollback_text)
                except DynwfError as exc:
                    raise self.fail(path + ".rollback", exc.message) from None
                if parsed.sensitive is not None:
                    raise self.fail(path + ".rollback", "takes only 'retries' and 'timeout'")
                rollback_text = parsed.json
            has_result = self.typed(v.get("has_result", v.get("result") is not None), (bool,),
                                    path + ".has_result")
            result = self.value(v.get("result"), path + ".result") if has_result else None
            event_type = self.typed(v.get("event_type"), (str,), path + ".event_type",
                                    optional=True)
            if event_type is not None:
                try:
                    check_event_type(event_type)
                except DynwfError as exc:
                    raise self.fail(path + ".event_type", exc.message) from None
            duration = self.time(v.get("duration_ms"), path + ".duration_ms")
            steps.append(StepRow(kind, name, count, status, tries, config_text, result,
                                 self.error(v.get("error"), path + ".error"), event_type, duration,
                                 self.time(v.get("started_at"), path + ".started_at"),
                                 self.time(v.get("ended_at"), path + ".ended_at"),
                                 rollback_text))
            failed = []
            for j, attempt in enumerate(self.typed(v.get("failed_attempts", []), (list,),
                                                   path + ".failed_attempts")):
                apath = f"{path}.failed_attempts[{j}]"
                a = self.object(attempt, apath, {"attempt", "error", "at"},
                                {"attempt", "error", "at"})
                number = self.typed(a["attempt"], (int,), apath + ".attempt")
                if number < 1:
                    raise self.fail(apath + ".attempt", "is below 1")
                failed.append({"attempt": number,
                               "error": json.loads(self.error(a["error"], apath + ".error")),
                               "at": self.time(a["at"], apath + ".at", optional=False)})
            if failed:
                attempts[(kind, name, count)] = failed
        return steps, attempts

    def event(self, value: Any, path: str) -> tuple[str, str, int]:
        v = self.object(value, path, {"type", "payload", "received_at"},
                        {"type", "payload", "received_at"})
        try:
            check_event_type(self.typed(v["type"], (str,), path + ".type"))
        except HistoryError:
            raise
        except DynwfError as exc:
            raise self.fail(path + ".type", exc.message) from None
        return v["type"], self.value(v["payload"], path + ".payload"), \
            self.time(v["received_at"], path + ".received_at", optional=False)

    def timer(self, value: Any, path: str, key: str, steps: set[StepKey]) -> TimerRow:
        v = self.object(value, path, {"kind", "step", "due"}, {"kind", "step", "due"})
        kind = self.typed(v["kind"], (str,), path + ".kind")
        if kind not in _TIMER_KINDS:
            raise self.fail(path + ".kind", f"is {kind!r}, not one of {', '.join(_TIMER_KINDS)}")
        s = self.object(v["step"], path + ".step", {"kind", "name", "count"},
                        {"kind", "name", "count"})
        step = (s["kind"], s["name"], s["count"])
        if step not in steps:
            raise self.fail(path + ".step", "names no step of the history")
        return TimerRow(0, key, kind, step, self.time(v["due"], path + ".due", optional=False))

    def source(self, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        v = self.object(value, "source", {"fingerprint", "modules"}, {"modules"})
        modules = self.typed(v["modules"], (dict,), "source.modules")
        total = 0
        for name, text in modules.items():
            self.typed(text, (str,), f"source.modules[{name!r}]")
            total += utf8_size(name) + utf8_size(text)
        if total > _MAX_MODULES_BYTES:
            raise self.fail("source.modules", "are over 64 MiB in all")
        self.typed(v.get("fingerprint"), (str,), "source.fingerprint", optional=True)
        return {"fingerprint": v.get("fingerprint"), "modules": modules}


# ---- importing -------------------------------------------------------------------------------------

def import_history_txn(store: Store, history: History, now: int) -> str:
    """Write ``history`` as an instance of this store (its id kept) inside the caller's
    transaction. A run that was under way is queued, so an engine replays it from its last
    committed step; every other status is kept as recorded. Returns the instance's key."""
    row = history.instance
    if row.status in (states.RUNNING, states.WAITING_FOR_PAUSE):
        row.status = states.QUEUED
    if not store.insert_copied_instance_txn(row, history.scope, rerun_of=history.rerun_of,
                                            rerun_from=history.rerun_from):
        raise InstanceAlreadyExistsError(
            f"Instance '{row.id}' already exists in this state file", instance_id=row.id,
            hint="delete it first (dynwf instances delete), or import into another --state-dir")
    for step in history.steps:
        store.insert_step_txn(row.id, step)
        for attempt in history.attempts.get(step.key, []):
            store.add_attempt_txn(row.id, step.key, attempt["attempt"],
                                  json.dumps(attempt["error"]), attempt["at"])
    for event_type, payload, at in history.events:
        store.buffer_event_txn(row.id, event_type, payload, at)
    if not states.is_finished(row.status):
        for timer in history.timers:
            store.add_timer_txn(row.id, timer.kind, timer.step, timer.due)
    return row.id


def encode(history: History) -> str:
    """The file's text."""
    return json.dumps(to_json(history), indent=2, ensure_ascii=False) + "\n"


__all__ = ["FORMAT", "History", "VERSION", "encode", "import_history_txn",
           "parse_history", "read_history", "to_json"]

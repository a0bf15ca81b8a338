"""Each operation on instances, written once: the command line (``dynwf instances ...``) and the
dev server's HTTP API both call these and render what they return (plain JSON-ready data).

Ids: an instance created by a tenant has the real id ``<12-hex prefix>-<tenant's id>``
(``dynamic_workflows``). People know it by the tenant's id, so every operation takes either;
:func:`resolve_id` decides which instance is meant, or says why it cannot.

Clocks: the operations are database writes through :class:`Control`, so they work whether or not
an engine runs, and a running engine in another process notices them on its next poll. The clock
given here stamps what the operation writes (an event's timestamp, a woken timer's due time, a
pause's length). The command line uses the system clock; the dev server passes its engine's
``Control`` so its own engine also reacts at once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from emulator.code_version import code_fingerprint
from emulator.defaults import POLL_MS
from emulator.rules.durations import format_ms
from emulator.rules import states
from emulator.rules.values import display_json
from emulator.clock import Clock, SystemClock
from emulator.engine.control import (Control, check_batch_ids, parse_restart_options,
                                     rollback_status)
from emulator.engine.history import import_history_txn, parse_history, read_history
from emulator.engine.history import to_json as history_json
from emulator.rules.limits import is_valid_id
from emulator.rules.steps import RESTART_DEFAULT_TYPE, StepKind, StepStatus
from emulator.engine.store import InstanceRow, StepRow, Store, TimerRow
from emulator.engine.stores import open_store as open_store_at, sqlite_path
from emulator.error_codes import Code
from emulator.errors import (AmbiguousInstanceError, DynwfError, InstanceError,
                             InstanceNotFoundError, InvalidIdError, UnknownStatusError,
                             ValidationError)
from emulator.project import Project
from emulator.rules.tenant_scope import scoped_instance_id, tenant_instance_id, tenant_prefix
from emulator.runtime.dynamic_workflows import unwrap_params

LIST_HINT = "dynwf instances list"
#: Candidates named in an ``instance.ambiguous`` message (the rest are counted).
_SHOWN_CANDIDATES = 5


class StateNotFoundError(DynwfError):
    """The project has no state file yet: nothing has ever run."""

    code = Code.STATE_NOT_FOUND


def open_store(project: Project) -> Store:
    """The project's state database (``--database``, else the state folder's file); refuses to
    create a SQLite file (a typo'd ``--state-dir`` must not read as "no instances")."""
    if project.database_url is not None:
        path = sqlite_path(project.database_url)
        if path is not None and not path.is_file():
            raise StateNotFoundError(f"no instances yet: {path} does not exist",
                                     hint="run dynwf run or dynwf dev first, or check --database")
        return open_store_at(project.database_url)
    if not project.database.is_file():
        raise StateNotFoundError(f"no instances yet: {project.database} does not exist",
                                 hint="run dynwf run or dynwf dev first, or check --state-dir")
    return Store(project.database)


class WaitTimeoutError(InstanceError):
    """``--wait`` gave up: the instance did not settle within the time given."""

    code = Code.INSTANCE_WAIT_TIMEOUT


#: Statuses an engine still has to move the instance on from; any other one is where it settled.
UNSETTLED = (states.QUEUED, states.RUNNING, states.WAITING_FOR_PAUSE)
#: Real seconds between looks at the state file while waiting for an instance to settle.
SETTLE_LOOK_S = 0.1


# ---- what a row says about its tenant ---------------------------------------------------------

def envelope_of(row: InstanceRow) -> tuple[dict[str, Any] | None, Any]:
    """``(metadata, params)``: the dispatcher envelope opened, or ``(None, params)`` for an
    instance created through a raw binding."""
    params = display_json(row.params)
    unwrapped = unwrap_params(params)
    if unwrapped is None:
        return None, params
    metadata = unwrapped.metadata if isinstance(unwrapped.metadata, dict) else None
    return metadata, unwrapped.params


def tenant_of(metadata: dict[str, Any] | None) -> Any:
    return metadata.get("tenantId") if metadata else None


def visible_id(metadata: dict[str, Any] | None, real_id: str) -> str | None:
    """The id the instance's tenant knows it by (None when it is not in a tenant's namespace)."""
    if metadata is None:
        return None
    try:
        return tenant_instance_id(metadata, real_id)
    except ValidationError:  # metadata that cannot be hashed has no namespace
        return None


def summary(row: InstanceRow) -> dict[str, Any]:
    """One instance as ``list`` shows it."""
    metadata, _params = envelope_of(row)
    return {
        "id": row.id, "tenant": tenant_of(metadata),
        "tenant_instance_id": visible_id(metadata, row.known_as),
        "workflow": row.workflow, "status": row.status,
        "created_at": row.created_at, "updated_at": row.updated_at,
        "code_version": row.code_version,
    }


# ---- id resolution ----------------------------------------------------------------------------

def resolve_id(store: Store, given: str, tenant: str | None = None,
               workflow: str | None = None, *, keys_first: bool = False) -> InstanceRow:
    """The instance ``given`` names (of ``workflow`` only, when given), in this order (with
    ``keys_first``, step 1 comes first: for callers that hold engine keys, the admin API):

    0. the instance created as ``given``; ids are unique per workflow, so when two workflows'
       instances were created as ``given`` it names neither: the error lists them and asks for
       the workflow (docs/semantics.md §1.2);
    1. the real id ``given``, the engine's key (with ``tenant``, only if it is that tenant's
       instance);
    2. with ``tenant``: the tenant's id ``given`` in the namespace of ``{"tenantId": tenant}``,
       else in any namespace whose metadata has that ``tenantId`` (metadata with more keys);
    3. without: the one instance some tenant knows as ``given``.

    Step 3 matches the tenant-visible id exactly (``<prefix>-<given>`` where the prefix is that
    instance's own namespace), not any id that merely ends in ``-<given>``: tenant ids contain
    dashes, and ``wake 1`` must not pick ``...-order-1``.
    """
    def fits(row: InstanceRow) -> bool:
        return (tenant is None or _is_tenants(row, tenant)) \
            and (workflow is None or row.workflow == workflow)

    row = store.find_instance(given) if given and keys_first else None
    if row is not None and fits(row):
        return row
    row = _created_as(store, given, fits) if given else None
    if row is not None:
        return row
    row = store.find_instance(given) if given else None
    if row is not None and fits(row):
        return row
    if given and tenant is not None:
        try:
            scoped = scoped_instance_id({"tenantId": tenant}, given)
        except InvalidIdError:
            scoped = None
        # the tenant's namespace is in the id itself: only the workflow is still to match
        row = _created_as(store, scoped, lambda r: workflow is None or r.workflow == workflow) \
            if scoped is not None else None
        if row is not None:
            return row
    candidates = [r for r in _known_as(store, given, tenant) if fits(r)] if given else []
    if len(candidates) == 1:
        return candidates[0]
    whose = f" of tenant '{tenant}'" if tenant is not None else ""
    if not candidates:
        raise InstanceNotFoundError(f"Instance '{given}'{whose} does not exist", instance_id=given,
                                    hint=LIST_HINT + (f" --tenant {tenant}" if tenant else ""))
    named = ", ".join(f"{r.id} (tenant {tenant_of(envelope_of(r)[0])})"
                      for r in candidates[:_SHOWN_CANDIDATES])
    more = len(candidates) - _SHOWN_CANDIDATES
    raise AmbiguousInstanceError(
        f"'{given}'{whose} names {len(candidates)} instances: {named}"
        + (f" and {more} more" if more > 0 else ""),
        instance_id=given, hint="give the full id, or the tenant with --tenant")


def _created_as(store: Store, binding_id: str,
                fits: Callable[[InstanceRow], bool]) -> InstanceRow | None:
    """The one instance created as ``binding_id`` that ``fits``; an error when two workflows'
    do (ids are unique per workflow only)."""
    rows = [row for row in store.instances_known_as(binding_id) if fits(row)]
    if len(rows) > 1:
        named = ", ".join(f"'{row.workflow}' (key {row.id})" for row in rows)
        raise AmbiguousInstanceError(
            f"Instance id '{binding_id}' is used by {len(rows)} workflows: {named}",
            instance_id=binding_id,
            hint="say which with --workflow NAME, or give the instance's key")
    return rows[0] if rows else None


def _is_tenants(row: InstanceRow, tenant: str) -> bool:
    found = tenant_of(envelope_of(row)[0])
    return found is not None and str(found) == tenant


def _known_as(store: Store, given: str, tenant: str | None) -> list[InstanceRow]:
    """Instances whose tenant knows them as ``given`` (of ``tenant`` only, when given)."""
    found = []
    for row in store.instances_ending_with("-" + given):
        metadata, _params = envelope_of(row)
        if visible_id(metadata, row.known_as) != given:
            continue
        if tenant is not None and str(tenant_of(metadata)) != tenant:
            continue
        found.append(row)
    return found


# ---- the operations ---------------------------------------------------------------------------

class InstanceOps:
    """list, describe, pause, resume, terminate, restart, delete, send_event, wake and logs over one
    store. Each takes an id as :func:`resolve_id` reads it, and an optional tenant."""

    def __init__(self, store: Store, clock: Clock | None = None, *,
                 control: Control | None = None, tenants_dir: Path | None = None,
                 keys_first: bool = False) -> None:
        self.store = store
        #: ids are engine keys before anything else (the admin API: its pages hold keys)
        self.keys_first = keys_first
        self.control = control or Control(store, clock or SystemClock())
        self.clock = self.control.clock
        #: where tenants' code lives by convention (tenants/<id>/), to tell when it changed
        self.tenants_dir = tenants_dir

    @classmethod
    def open(cls, project: Project, clock: Clock | None = None) -> "InstanceOps":
        """Ops on the project's state file (which must exist); close() when done."""
        return cls(open_store(project), clock, tenants_dir=project.tenants_dir)

    @classmethod
    def create(cls, project: Project, clock: Clock | None = None) -> "InstanceOps":
        """Ops on the project's database (``--database``, else the state folder's file, made when
        there is none yet: an import into a new state folder); close() when done."""
        return cls(open_store_at(project.store_url), clock, tenants_dir=project.tenants_dir)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "InstanceOps":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def resolve(self, given: str, tenant: str | None = None,
                workflow: str | None = None) -> InstanceRow:
        return resolve_id(self.store, given, tenant, workflow, keys_first=self.keys_first)

    # ---- reading -----------------------------------------------------------------------------

    def list_instances(self, *, tenant: str | None = None, status: str | None = None,
                       workflow: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first, at most ``limit``; each row as :func:`summary` makes it."""
        if status is not None and status not in states.ALL:
            raise UnknownStatusError(status=status, known=states.ALL)
        if limit < 1:
            raise ValidationError(f"limit must be at least 1, got {limit}")
        rows = self.store.list_instances(tenant=tenant, status=status, workflow=workflow,
                                         limit=limit)
        return [summary(row) for row in rows]

    def describe(self, given: str, *, tenant: str | None = None,
                 workflow: str | None = None) -> dict[str, Any]:
        """Everything known about one instance: status, output or error, the tenant and its
        metadata, the params as the tenant passed them, each step, pending timers, events
        waiting in the buffer."""
        row = self.resolve(given, tenant, workflow)
        metadata, params = envelope_of(row)
        now = self.clock.now_ms()
        buffered = self.store.buffered_events(row.id)
        attempts = self.store.list_attempts(row.id)
        public = row.to_public()
        return {
            **summary(row),
            "metadata": metadata, "params": params,
            "output": public["output"], "error": public["error"],
            # the user's frames run() raised its error from (emulator/tracebacks.py's shape)
            "error_traceback": json.loads(row.error_traceback) if row.error_traceback else None,
            # the rollback phase as status() shows it; absent when none began
            **({"rollback": rollback_status(row.rollback)} if row.rollback is not None else {}),
            "started_at": row.started_at, "ended_at": row.ended_at,
            "steps": [_step(step, attempts.get(step.key, []))
                      for step in self.store.list_steps(row.id)],
            "timers": [_timer(timer, now) for timer in self.store.timers_of(row.id)],
            "events_buffered": sum(buffered.values()), "events_buffered_by_type": buffered,
            "current_code_version": self._current_code_version(tenant_of(metadata)),
            **self._rerun_links(row),
            "now": now,
        }

    def _rerun_links(self, row: InstanceRow) -> dict[str, Any]:
        """What a rerun knows of its original, and the original of its reruns."""
        rerun_of, rerun_from = self.store.rerun_link(row.id)
        return {"rerun_of": rerun_of,
                "rerun_from": json.loads(rerun_from) if rerun_from else None,
                "reruns": [{"id": key, "from": json.loads(start) if start else None,
                            "status": status}
                           for key, start, status in self.store.reruns_of(row.id)]}

    def _current_code_version(self, tenant: str | None) -> str | None:
        """The fingerprint of ``tenants/<tenant>/`` now, as the template's dispatcher loads it
        (every ``.py`` file, keyed by its path in the folder); None when there is no such folder."""
        modules = self._tenant_modules(tenant)
        return code_fingerprint(modules) if modules else None

    def _tenant_modules(self, tenant: str | None) -> dict[str, str] | None:
        if self.tenants_dir is None or not tenant or not is_valid_id(str(tenant)):
            return None             # a tenant id that is not an id never names a folder
        folder = self.tenants_dir / str(tenant)
        if not folder.is_dir():
            return None
        return {path.relative_to(folder).as_posix(): path.read_text(encoding="utf-8")
                for path in sorted(folder.rglob("*.py")) if "__pycache__" not in path.parts}

    def logs(self, given: str, *, tenant: str | None = None, workflow: str | None = None,
             after_seq: int | None = None) -> dict[str, Any]:
        """Log lines of the instance (after ``after_seq``, if given) and its status. The status
        is read first, so when it says finished the lines are the last there will be."""
        row = self.resolve(given, tenant, workflow)
        lines = [_log_line(line) for line in self.store.list_logs(row.id, after_seq)]
        return {"id": row.id, "workflow": row.workflow, "status": row.status,
                "finished": states.is_finished(row.status),
                "lines": lines, "last_seq": lines[-1]["seq"] if lines else after_seq}

    def tail(self, *, tenant: str | None = None, after_seq: int | None = None,
             lines: int | None = None) -> dict[str, Any]:
        """Log lines across instances (one tenant's, with ``tenant``), as ``wrangler tail``
        shows a Worker's: those after ``after_seq``, or the last ``lines`` when it is None.
        Each line names its instance (the id its tenant knows) and tenant."""
        scope = tenant_prefix({"tenantId": tenant}) if tenant is not None else None
        if after_seq is None:
            after_seq = max(self.store.last_log_seq() - (lines or 0), 0) if lines is not None \
                else None
        rows = self.store.tail_logs(after_seq, scope)
        out = []
        metadata_of: dict[str, dict[str, Any] | None] = {}
        for row in rows:
            if row["instance_id"] not in metadata_of:
                unwrapped = unwrap_params(json.loads(row["params"]))
                metadata_of[row["instance_id"]] = unwrapped.metadata if unwrapped is not None \
                    and isinstance(unwrapped.metadata, dict) else None
            metadata = metadata_of[row["instance_id"]]
            line = _log_line(row)
            line["instance"] = row["instance_id"]
            line["tenant"] = tenant_of(metadata)
            line["tenant_instance_id"] = visible_id(metadata, row["instance_id"])
            out.append(line)
        return {"lines": out, "last_seq": out[-1]["seq"] if out else after_seq}

    # ---- changing ------------------------------------------------------------------------------

    def pause(self, given: str, *, tenant: str | None = None, workflow: str | None = None) -> dict[str, Any]:
        """A running instance moves to ``waitingForPause`` until its in-flight steps commit; a
        queued or waiting one pauses at once; any other status is left as it is."""
        row = self.resolve(given, tenant, workflow)
        return self._result(row, status=self.control.pause(row.id))

    def resume(self, given: str, *, tenant: str | None = None, workflow: str | None = None) -> dict[str, Any]:
        """A no-op for an instance that is not paused (or about to pause)."""
        row = self.resolve(given, tenant, workflow)
        return self._result(row, status=self.control.resume(row.id))

    def terminate(self, given: str, *, tenant: str | None = None,
                  workflow: str | None = None, rollback: bool = False) -> dict[str, Any]:
        """Stop the instance for good; with ``rollback``, an engine first runs the rollback
        handlers of its steps (docs/semantics.md, "Rollbacks"), and the result says so."""
        row = self.resolve(given, tenant, workflow)
        self.control.terminate(row.id, rollback=rollback)
        result = self._result(row)
        if rollback:
            result["rollback"] = "pending" if result["status"] == states.QUEUED else "none"
        return result

    def restart(self, given: str, *, tenant: str | None = None,
                workflow: str | None = None,
                start_from: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run again with the same params: from the top (every step erased), or with
        ``start_from`` (``{"name", "count"?, "type"?}``) from that step, keeping the results of
        the steps reached before it."""
        row = self.resolve(given, tenant, workflow)
        self.control.restart(row.id, {"from": start_from} if start_from is not None else None)
        result = self._result(row)
        if start_from is not None:
            result["from"] = {"name": start_from.get("name"), "count": start_from.get("count", 1),
                              "type": start_from.get("type", RESTART_DEFAULT_TYPE)}
            result["steps_kept"] = len(self.store.list_steps(row.id))
        return result

    def rerun(self, given: str, start_from: dict[str, Any], *, tenant: str | None = None,
              workflow: str | None = None, new_id: str | None = None,
              output: str | None = None) -> dict[str, Any]:
        """A new instance with the original's history up to and excluding ``start_from``
        (``{"name", "count"?, "type"?}``), optionally that step's result replaced by ``output``
        (JSON text), continuing with the current code; the original is untouched."""
        row = self.resolve(given, tenant, workflow)
        start = parse_restart_options({"from": start_from})
        key = self.control.rerun(row.id, start, new_id=new_id, output=output)
        new = self.store.get_instance(key)
        result = self._result(new)
        result["rerun_of"] = self._result(row, status=self.store.get_instance(row.id).status)
        result["from"] = {"name": start.name, "count": start.count, "type": start.type}
        result["steps_kept"] = len(self.store.list_steps(key))
        result["output_replaced"] = output is not None
        return result

    def export(self, given: str, *, tenant: str | None = None,
               workflow: str | None = None) -> dict[str, Any]:
        """The instance's history in the documented file format (``engine/history.py``); with
        the tenant's modules when ``tenants/<tenant>/`` is still the code it started on."""
        row = self.resolve(given, tenant, workflow)
        history = read_history(self.store, row.id)
        metadata, _params = envelope_of(row)
        modules = self._tenant_modules(tenant_of(metadata))
        if modules and row.code_version and code_fingerprint(modules) == row.code_version:
            history.source = {"fingerprint": row.code_version, "modules": modules}
        return history_json(history)

    def import_history(self, text: str | bytes, *, where: str = "the history") -> dict[str, Any]:
        """Write a history file's instance into this store: checked whole first, then written in
        one transaction (nothing half-written on failure)."""
        history = parse_history(text, where=where)
        with self.store.write():
            key = import_history_txn(self.store, history, self.clock.now_ms())
        self.control.on_change(key, "created")
        return {**self._result(self.store.get_instance(key)),
                "steps": len(history.steps)}

    def delete(self, given: str, *, tenant: str | None = None,
               workflow: str | None = None) -> dict[str, Any]:
        """Stop the instance without rollback and erase everything stored about it."""
        row = self.resolve(given, tenant, workflow)
        self.control.delete(row.id)
        metadata, _params = envelope_of(row)
        return {"id": row.id, "tenant": tenant_of(metadata),
                "tenant_instance_id": visible_id(metadata, row.id), "deleted": True}

    def delete_many(self, given: list[str], *, tenant: str | None = None,
                    workflow: str | None = None) -> dict[str, Any]:
        """Delete each instance named (as :func:`resolve_id` reads ids; 1 to 100 of them), each
        on its own: ``{"deleted": [{"id", "given"}], "errors": [{"id", "given", "code",
        "message"}]}`` in the order given, a name given twice reported twice. A name that
        resolves to no instance (or to several) is reported with its error; the others are
        deleted all the same. Any name that is not an id fails the call before anything is
        deleted."""
        given = check_batch_ids(given, what="delete")
        deleted: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        outcome: dict[str, dict[str, Any]] = {}   # a name given twice: deleted once, told twice
        for name in given:
            if name not in outcome:
                try:
                    row = self.resolve(name, tenant, workflow)
                    self.control.delete(row.id)
                except (InstanceError, ValidationError) as exc:
                    outcome[name] = {"id": name, "given": name, "code": str(exc.code),
                                     "message": exc.message}
                else:
                    outcome[name] = {"id": row.id, "given": name}
            (errors if "code" in outcome[name] else deleted).append(dict(outcome[name]))
        return {"deleted": deleted, "errors": errors}

    def send_event(self, given: str, type: str, payload: Any = None, *,
                   tenant: str | None = None, workflow: str | None = None) -> dict[str, Any]:
        """Deliver to the oldest ``wait_for_event`` of ``type``, or buffer until one asks."""
        row = self.resolve(given, tenant, workflow)
        self.control.send_event(row.id, type, payload)
        return {**self._result(row), "type": type}

    def wake(self, given: str, *, tenant: str | None = None, workflow: str | None = None) -> dict[str, Any]:
        """End the instance's sleeps and retry back-offs now (event timeouts are kept)."""
        row = self.resolve(given, tenant, workflow)
        woken = self.control.wake(row.id)
        return {**self._result(row), "woken": woken}

    def where(self, given: str, *, tenant: str | None = None, workflow: str | None = None) -> dict[str, Any]:
        """The instance's status and what moves it on next, changing nothing."""
        return self._result(self.resolve(given, tenant, workflow))

    def settle(self, given: str, *, tenant: str | None = None,
               workflow: str | None = None, timeout_s: float = 60.0,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
        """Wait until an engine (another process: this one only reads the state file) has moved
        the instance on to where it rests (finished, waiting, paused), and say where that is.
        A command that changed an instance and then returned at once would leave the reader to
        poll; one that waits forever would hide an engine that is not running."""
        row = self.resolve(given, tenant, workflow)
        deadline = time.monotonic() + timeout_s
        status = self.store.get_instance(row.id).status
        while status in UNSETTLED:
            if time.monotonic() >= deadline:
                raise self._timeout(row, status, timeout_s)
            sleep(SETTLE_LOOK_S)
            status = self.store.get_instance(row.id).status
        return self._result(row, status=status)

    def _timeout(self, row: InstanceRow, status: str, timeout_s: float) -> WaitTimeoutError:
        result = self._result(row, status=status)
        named = self._named(row, result)
        if status == states.QUEUED or (status == states.RUNNING
                                       and self.store.get_instance(row.id).lease_owner is None):
            return WaitTimeoutError(
                f"instance {named} is still {status} after {timeout_s:g}s: nothing ran it: is "
                "dynwf dev running?", instance_id=row.id, hint="start one: dynwf dev" + (
                    f"; or run it here: dynwf run --resume {named}" if _has_tenant(result) else ""))
        return WaitTimeoutError(f"instance {named} is still {status} after {timeout_s:g}s",
                                instance_id=row.id, hint="wait longer with --timeout, or "
                                f"follow it: dynwf instances logs {named} --follow")

    def _result(self, row: InstanceRow, *, status: str | None = None) -> dict[str, Any]:
        metadata, _params = envelope_of(row)
        if status is None:
            status = self.store.get_instance(row.id).status
        result = {"id": row.id, "workflow": row.workflow, "tenant": tenant_of(metadata),
                  "tenant_instance_id": visible_id(metadata, row.known_as), "status": status}
        return {**result, "next": self.next_move(row.id, status, self._named(row, result),
                                                 has_tenant=_has_tenant(result))}

    def _named(self, row: InstanceRow, result: dict[str, Any]) -> str:
        """The instance as a command line names it; with ``--workflow`` when another workflow
        has an instance of the same id (ids are unique per workflow only)."""
        shared = len(self.store.instances_known_as(row.known_as)) > 1
        return _command_id(result) + (f" --workflow {row.workflow}" if shared else "")

    def next_move(self, instance_id: str, status: str, named: str, *,
                  has_tenant: bool = False) -> str:
        """One sentence: what moves the instance on from ``status``, with the command that does
        it (``named``: how a command names the instance). An operation never leaves the reader
        to guess whether anything will happen next. ``has_tenant``: ``named`` carries its
        ``--tenant``, so ``dynwf run --resume`` can take it on without a dev server."""
        if status in (states.QUEUED, states.RUNNING):
            alone = f" or run it here: dynwf run --resume {named}" if has_tenant else ""
            return (f"{status}: a running dynwf dev runs it (its engine notices within "
                    f"{POLL_MS} ms); none runs? start one: dynwf dev{alone}")
        if status == states.WAITING:
            waits = [step.event_type for step in self.store.list_steps(instance_id)
                     if step.status == StepStatus.WAITING and step.event_type]
            if waits:
                return (f"waiting for an event '{waits[0]}': "
                        f"dynwf instances send-event {named} --type {waits[0]}")
            timers = sorted(self.store.timers_of(instance_id), key=lambda t: t.due)
            if timers:
                due_in = max(timers[0].due - self.clock.now_ms(), 0)
                # no dev running: dynwf run --resume takes it on here (wake --wait does too)
                alone = f" (none runs? dynwf run --resume {named})" if has_tenant else ""
                if due_in == 0:
                    return f"waiting: due now, a running dynwf dev runs it{alone}"
                return (f"waiting: due again in {format_ms(due_in)}, then a running dynwf dev "
                        f"runs it{alone}; to run it now: dynwf instances wake {named} --wait")
            return "waiting: a running dynwf dev runs it when its wait ends"
        if status == states.WAITING_FOR_PAUSE:
            return "pausing: it pauses once its steps in flight finish"
        if status == states.PAUSED:
            return f"paused: nothing runs it until dynwf instances resume {named}"
        if states.is_finished(status):
            return f"{status}: finished, nothing moves it; to run it again: " \
                   f"dynwf instances restart {named}"
        return f"{status}: dynwf instances describe {named} says more"


def _has_tenant(result: dict[str, Any]) -> bool:
    return bool(result["tenant_instance_id"]) and isinstance(result["tenant"], str)


def _command_id(result: dict[str, Any]) -> str:
    """The instance as a command line names it: the tenant's id with ``--tenant``, else the id."""
    if _has_tenant(result):
        return f"{result['tenant_instance_id']} --tenant {result['tenant']}"
    return result["id"]


# ---- rows as data -----------------------------------------------------------------------------

def _step(step: StepRow, failed_attempts: list[dict[str, Any]]) -> dict[str, Any]:
    public = step.to_public()
    ended = step.ended_at is not None and step.started_at is not None
    return {
        "kind": step.kind, "name": step.name, "count": step.count, "status": step.status,
        "attempts": step.attempts,
        # from the first attempt's start to the end (retries and back-offs included)
        "duration_ms": step.ended_at - step.started_at if ended else None,
        # the sleep's length, or the event wait's timeout, as the code asked for it
        "requested_ms": step.duration_ms,
        # a sleep ended ahead of its time (fast-forward, instances wake): how long it really took
        "woken_early": bool(step.kind == StepKind.SLEEP and ended and step.duration_ms is not None
                            and step.ended_at - step.started_at < step.duration_ms),
        "event_type": step.event_type,
        # a sensitive step's output reads "[redacted]" (rules/redaction.py), and says so
        "result": public["result"], "sensitive": public["sensitive"], "error": public["error"],
        # every failed attempt's error, with the user's traceback when the code raised it:
        # {"attempt", "error": {"name", "message", "traceback"?}, "at"}
        "failed_attempts": failed_attempts,
        "started_at": step.started_at, "ended_at": step.ended_at,
        # a do step that registered a rollback handler (a rollback step is kind "rollback")
        "has_rollback": step.rollback is not None,
    }


def _timer(timer: TimerRow, now: int) -> dict[str, Any]:
    kind, name, count = timer.step
    return {"kind": timer.kind, "step": {"kind": kind, "name": name, "count": count},
            "due_at": timer.due, "due_in_ms": timer.due - now}


def _log_line(line: dict[str, Any]) -> dict[str, Any]:
    step = line["step"]
    return {"seq": line["seq"], "at": line["at"], "level": line["level"], "message": line["message"],
            "step": {"kind": step[0], "name": step[1], "count": step[2]} if step else None}


__all__ = ["InstanceOps", "StateNotFoundError", "WaitTimeoutError", "envelope_of", "open_store",
           "resolve_id", "summary", "tenant_of", "visible_id"]

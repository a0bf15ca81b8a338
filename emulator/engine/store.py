"""Every SQL statement of the engine, on one SQLite file in WAL mode.

Writers run inside ``Store.write()`` (``BEGIN IMMEDIATE``, so a writer takes the lock up front
instead of failing half-way on upgrade). Functions that must be called inside that transaction
end in ``_txn``. The schema lives in ``migrations/NNNN_*.sql``, applied once each through
sqlite-utils' ``Migrations`` under the same immediate lock, so two processes opening a new file
at the same moment do not race. A file whose every migration is recorded already (every open but
the first) is opened without importing sqlite-utils, a third of a short command's start-up.

Durability: ``synchronous=NORMAL`` in WAL mode survives any process crash (the guarantee this
engine promises: a killed engine loses no committed step); only an operating-system crash or
power loss can drop the last transactions. ``FULL`` costs ~9x in commits/s here (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from emulator.rules import states
from emulator.errors import InstanceNotFoundError, InvalidTransitionError
from emulator.rules.redaction import is_output_sensitive, shown_result
from emulator.rules.steps import StepKey
from emulator.rules.values import display_json

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils.migrations import Migrations

BUSY_TIMEOUT_MS = 10_000  # the 5 s default is exceeded when many engines share one slow disk


@dataclass(slots=True)
class InstanceRow:
    id: str
    workflow: str
    status: str
    params: str
    output: str | None
    error: str | None
    generation: int
    lease_owner: str | None
    lease_expiry: int | None
    paused_at: int | None
    code_version: str | None
    created_at: int
    updated_at: int
    started_at: int | None
    ended_at: int | None
    error_traceback: str | None = None   # JSON: the user's frames run() raised ``error`` from
    #: the id the workflow's binding created it with (unique per workflow); ``id`` is the engine's
    #: key, the same unless another workflow had the id first (docs/semantics.md §1.2)
    binding_id: str | None = None

    @property
    def known_as(self) -> str:
        """The id its workflow's binding, and its code's ``event["instanceId"]``, know it by."""
        return self.binding_id if self.binding_id is not None else self.id
    rollback: str | None = None          # JSON: the rollback phase, once one began (0005_rollbacks)

    def __post_init__(self) -> None:
        # a status this version does not know (a newer writer's, a damaged row) reads as the
        # platform's fallback, "unknown" (docs/semantics.md, "Instances and statuses")
        if self.status not in states.ALL:
            self.status = states.UNKNOWN

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id, "workflow": self.workflow, "status": self.status,
            "params": display_json(self.params),
            "output": display_json(self.output) if self.output is not None else None,
            "error": json.loads(self.error) if self.error is not None else None,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "started_at": self.started_at, "ended_at": self.ended_at,
            "code_version": self.code_version,
        }


@dataclass(slots=True)
class StepRow:
    kind: str
    name: str
    count: int
    status: str
    attempts: int
    config: str | None
    result: str | None
    error: str | None
    event_type: str | None
    duration_ms: int | None
    started_at: int | None
    ended_at: int | None
    rollback: str | None = None   # JSON: the resolved rollback config of a do step with a handler

    @property
    def key(self) -> StepKey:
        return (self.kind, self.name, self.count)

    @property
    def is_sensitive(self) -> bool:
        """Its config asks for its output to be redacted (``sensitive: "output"``)."""
        return is_output_sensitive(self.config)

    def shown_result(self, read: Callable[[str], Any] = display_json) -> Any:
        """The result as any view may show it: :data:`~emulator.rules.redaction.REDACTED` for a
        sensitive step. ``result`` itself stays the real value, for the engine alone."""
        return shown_result(self.config, self.result, read)

    def to_public(self) -> dict[str, Any]:
        """The step as every surface shows it (describe, the admin API, the test API); its
        output redacted when its config is sensitive (docs/semantics.md §2.3)."""
        return {
            "kind": self.kind, "name": self.name, "count": self.count, "status": self.status,
            "attempts": self.attempts,
            "result": self.shown_result(), "sensitive": self.is_sensitive,
            "error": json.loads(self.error) if self.error is not None else None,
            "event_type": self.event_type, "started_at": self.started_at,
            "ended_at": self.ended_at, "has_rollback": self.rollback is not None,
        }


@dataclass(slots=True)
class TimerRow:
    id: int
    instance_id: str
    kind: str
    step: StepKey
    due: int


_INSTANCE_COLS = ("id, workflow, status, params, output, error, generation, lease_owner, "
                  "lease_expiry, paused_at, code_version, created_at, updated_at, started_at, ended_at, "
                  "error_traceback, binding_id, rollback")
_STEP_COLS = ("kind, name, count, status, attempts, config, result, error, event_type, duration_ms, "
              "started_at, ended_at, rollback")


#: The name of the engine's set of migrations in sqlite-utils' table of applied ones.
MIGRATION_SET = "dynwf.engine"


def _migration_files() -> list[Any]:
    folder = resources.files("emulator.engine") / "migrations"
    return sorted((e for e in folder.iterdir() if e.name.endswith(".sql")), key=lambda e: e.name)


def _migrations() -> "Migrations":
    from sqlite_utils.migrations import Migrations
    migrations = Migrations(MIGRATION_SET)
    for entry in _migration_files():
        migrations(name=entry.name)(_sql_migration(entry.read_text()))
    return migrations


def _all_applied(conn: sqlite3.Connection) -> bool:
    """Whether sqlite-utils' table of applied migrations already holds every file (read only)."""
    try:
        rows = conn.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ?",
                            (MIGRATION_SET,)).fetchall()
    except sqlite3.OperationalError:   # no such table: a new file
        return False
    applied = {name for (name,) in rows}
    return all(entry.name in applied for entry in _migration_files())


def _sql_migration(script: str):
    def apply(db: "sqlite_utils.Database") -> None:
        for statement in _statements(script):
            db.execute(statement)
    return apply


def _statements(script: str) -> Iterator[str]:
    buffer = ""
    for line in script.splitlines(keepends=True):
        if not buffer and line.lstrip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()


def instance_key(binding_id: str, workflow: str) -> str:
    """The engine's key of an instance created as ``binding_id`` while another workflow's
    instance already holds that key: ids have no dots, so this is never a binding's id."""
    return f"{binding_id}.{workflow}"


class Store:
    """One connection to the engine's database file (SQLite; ``store_postgres.PostgresStore``
    is the other implementation: it shares every statement below except where the dialects
    differ, which it overrides). Open either by URL with ``stores.open_store``."""

    #: where the two dialects differ inside a shared statement
    PREFIX_SQL = "id >= ? AND id < ?"
    TENANT_SQL = "CAST(json_extract(params, '$.__dispatcherMetadata.tenantId') AS TEXT) = ?"
    SUFFIX_SQL = "substr(binding_id, -?) = ?"
    #: row locks: none on SQLite, where ``BEGIN IMMEDIATE`` already serialises every writer
    CLAIM_LOCK = ""
    OWNED_LOCK = ""
    #: whether group commits run in a worker thread (engine/writes.py): not for a local file
    OFFLOAD_COMMITS = False
    #: what names the database in messages (a URL without its password, for PostgreSQL)
    url: str

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.url = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                    timeout=BUSY_TIMEOUT_MS / 1000)
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def _migrate(self) -> None:
        if _all_applied(self.conn):
            return
        import sqlite_utils
        db = sqlite_utils.Database(self.conn)
        migrations = _migrations()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            migrations.apply(db)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def write(self) -> Iterator["Store"]:
        """One immediate transaction; everything inside commits together or not at all."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def savepoint(self, name: str = "op") -> Iterator[None]:
        """A nested unit inside ``write()``: undone alone if it raises."""
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {name}")
            self.conn.execute(f"RELEASE {name}")
            raise
        self.conn.execute(f"RELEASE {name}")

    def lease_clock_ms(self, real_ms: int) -> int:
        """Now on the clock lease expiries are kept in: the engine's wall clock here (one
        machine); PostgreSQL keeps them on the database server's clock (docs/reliability.md)."""
        return real_ms

    def changed(self, instance_id: str, what: str) -> None:
        """Called after a create, event, pause, resume, terminate, restart or delete of
        ``instance_id`` committed (and by a stopping engine with ``"released"`` once it handed its
        leases back): the hook for waking engines on other hosts. A no-op on SQLite, where
        engines share one file and poll ``data_version``."""

    def listen(self, on_change: Callable[[str, str], None],
               on_state: Callable[[bool, str | None], None]) -> Any:
        """Hear the changes other processes announce through :meth:`changed` (``on_change(
        instance_id, what)``, called from another thread) and whether they can be heard now
        (``on_state(listening, reason)``); an object with ``close()``, or None when this store
        has no such channel (SQLite: engines poll ``data_version``)."""
        return None

    def data_version(self) -> int:
        """Changes whenever another connection commits (cheap cross-process change detection)."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    # ---- instances -------------------------------------------------------------------------

    def insert_instance_txn(self, id: str, workflow: str, params: str, now: int,
                            code_version: str | None = None, scope: str | None = None) -> str | None:
        """Insert a queued instance of ``workflow`` created as ``id``; its key, or None when the
        workflow already has an instance ``id``. The key is ``id`` unless another workflow's
        instance holds it, then ``<id>.<workflow>`` (migration 0008)."""
        if self.find_in_workflow(workflow, id) is not None:
            return None
        key = self.key_for(workflow, id)
        cursor = self.conn.execute(
            "INSERT INTO instances (id, workflow, status, params, code_version, created_at, "
            "updated_at, scope, binding_id) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (key, workflow, params, code_version, now, now, scope, id))
        return key if cursor.rowcount == 1 else None

    def get_instance(self, id: str) -> InstanceRow:
        row = self.conn.execute(f"SELECT {_INSTANCE_COLS} FROM instances WHERE id = ?",
                                (id,)).fetchone()
        if row is None:
            raise InstanceNotFoundError(f"Instance '{id}' does not exist", instance_id=id,
                                        hint="dynwf instances list")
        return InstanceRow(*row)

    def find_instance(self, id: str) -> InstanceRow | None:
        row = self.conn.execute(f"SELECT {_INSTANCE_COLS} FROM instances WHERE id = ?",
                                (id,)).fetchone()
        return InstanceRow(*row) if row else None

    def lock_instance_txn(self, id: str, *, skip_locked: bool = False) -> InstanceRow | None:
        """The instance's row, locked until the transaction ends (PostgreSQL: ``FOR UPDATE``;
        SQLite's ``BEGIN IMMEDIATE`` already holds the whole file). Whoever decides from the row's
        status and its steps together (a lifetime that hibernates, a control operation, a timer
        that fires) reads it this way, so two such decisions never interleave: one of them sees
        the other's commit (else an event arriving while its lifetime hibernates on another host
        could leave the instance ``waiting`` with its wait already resolved). ``skip_locked``:
        None instead of waiting when another transaction holds the row."""
        lock = (self.CLAIM_LOCK if skip_locked else self.OWNED_LOCK)
        row = self.conn.execute(f"SELECT {_INSTANCE_COLS} FROM instances WHERE id = ?{lock}",
                                (id,)).fetchone()
        return InstanceRow(*row) if row else None

    def find_in_workflow(self, workflow: str, binding_id: str) -> InstanceRow | None:
        """The instance ``workflow``'s binding knows as ``binding_id``."""
        row = self.conn.execute(f"SELECT {_INSTANCE_COLS} FROM instances WHERE workflow = ? "
                                "AND binding_id = ?", (workflow, binding_id)).fetchone()
        return InstanceRow(*row) if row else None

    def key_for(self, workflow: str, binding_id: str) -> str:
        """The engine's key of ``workflow``'s instance ``binding_id``: its row's, or the one it
        gets when created now (``binding_id`` itself unless another workflow's instance holds
        it)."""
        row = self.find_in_workflow(workflow, binding_id)
        if row is not None:
            return row.id
        taken = self.find_instance(binding_id)
        return binding_id if taken is None else instance_key(binding_id, workflow)

    def instances_known_as(self, binding_id: str) -> list[InstanceRow]:
        """Every workflow's instance created as ``binding_id``, oldest first."""
        rows = self.conn.execute(f"SELECT {_INSTANCE_COLS} FROM instances WHERE binding_id = ? "
                                 "ORDER BY seq", (binding_id,))
        return [InstanceRow(*r) for r in rows]

    def list_instances(self, *, workflow: str | None = None, status: str | None = None,
                       prefix: str | None = None, tenant: str | None = None,
                       limit: int = 1000) -> list[InstanceRow]:
        """Newest first. ``tenant`` matches the ``tenantId`` of a dispatcher envelope's metadata
        (compared as text, so a numeric tenant id matches its digits)."""
        where, args = [], []
        if workflow:
            where.append("workflow = ?")
            args.append(workflow)
        if status:
            where.append("status = ?")
            args.append(status)
        if prefix:
            where.append(self.PREFIX_SQL)
            args += [prefix, prefix + "\U0010ffff"]
        if tenant is not None:
            where.append(self.TENANT_SQL)
            args.append(tenant)
        sql = f"SELECT {_INSTANCE_COLS} FROM instances"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        return [InstanceRow(*r) for r in self.conn.execute(sql, (*args, limit))]

    def instances_ending_with(self, suffix: str, *, limit: int = 100) -> list[InstanceRow]:
        """Instances created as an id that ends with ``suffix`` (a scan: ids are matched at the
        end, where no index helps; fine for the id lookups of the command line), oldest first."""
        rows = self.conn.execute(
            f"SELECT {_INSTANCE_COLS} FROM instances WHERE length(binding_id) > ? "
            f"AND {self.SUFFIX_SQL} ORDER BY seq LIMIT ?",
            (len(suffix), len(suffix), suffix, limit))
        return [InstanceRow(*r) for r in rows]

    def ping(self) -> None:
        """The cheapest round trip to the database (``dynwf serve``'s readiness probe)."""
        self.conn.execute("SELECT 1").fetchone()

    def count_by_status(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT status, count(*) FROM instances GROUP BY status"))

    def set_status_txn(self, id: str, old: str, new: str, now: int, **fields: Any) -> None:
        """The one guarded status writer: moves ``old -> new`` or raises InvalidTransitionError."""
        if not states.can_move(old, new):
            raise InvalidTransitionError(f"Instance '{id}' cannot move from {old} to {new}",
                                         instance_id=id)
        sets = ", ".join(f"{name} = ?" for name in fields)
        guard, guard_args = _status_guard(old)
        cursor = self.conn.execute(
            f"UPDATE instances SET status = ?, updated_at = ?{', ' + sets if sets else ''} "
            f"WHERE id = ? AND {guard}", (new, now, *fields.values(), id, *guard_args))
        if cursor.rowcount != 1:
            raise InvalidTransitionError(
                f"Instance '{id}' is no longer {old}; cannot move it to {new}", instance_id=id)

    def owned_txn(self, id: str, owner: str, generation: int) -> bool:
        """True when ``owner`` still holds the lease of this generation of a live instance.
        Inside the writer's transaction, so the answer holds until it commits."""
        return self.conn.execute(
            "SELECT 1 FROM instances WHERE id = ? AND lease_owner = ? AND generation = ? "
            f"AND status IN ('running', 'waitingForPause'){self.OWNED_LOCK}",
            (id, owner, generation)).fetchone() is not None

    def claim_txn(self, owner: str, now: int, real_now: int, lease_until: int, limit: int,
                  only: Iterable[str] | None = None, *,
                  taken_over: list[tuple[str, str]] | None = None) -> list[InstanceRow]:
        """Lease up to ``limit`` runnable instances: queued ones, and live ones whose lease expired
        (their engine died). Returns them with status ``running``; ``taken_over`` gets (id,
        previous owner) of each claimed from another engine's expired lease. ``real_now`` and
        ``lease_until`` are the engine's wall clock; the store may judge leases on its own clock
        (``_lease_window_txn``)."""
        lease_now, lease_until = self._lease_window_txn(real_now, lease_until)
        # the leading status condition matches the partial index instances_active, so a claim
        # is an index search, not a scan of every instance (7 ms -> 0.2 ms at 50,000 rows)
        sql = (f"SELECT {_INSTANCE_COLS} FROM instances WHERE "
               "status IN ('queued', 'running', 'waitingForPause') AND "
               "((status = 'queued' AND (lease_owner IS NULL OR lease_expiry < ?)) OR "
               " (status IN ('running', 'waitingForPause') AND lease_expiry < ?))")
        args: list[Any] = [lease_now, lease_now]
        if only is not None:
            ids = list(only)
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            args += ids
        sql += " ORDER BY seq LIMIT ?" + self.CLAIM_LOCK
        rows = [InstanceRow(*r) for r in self.conn.execute(sql, (*args, limit))]
        claimed = []
        for row in rows:
            if taken_over is not None and row.lease_owner not in (None, owner):
                taken_over.append((row.id, row.lease_owner))
            if row.status == states.QUEUED:   # a status change: through the one guarded writer
                first = {"started_at": now} if row.started_at is None else {}
                self.set_status_txn(row.id, row.status, states.RUNNING, now, lease_owner=owner,
                                    lease_expiry=lease_until, **first)
                row.status = states.RUNNING
            else:                             # a lease taken over: the status stays as it is
                self.conn.execute(
                    "UPDATE instances SET lease_owner = ?, lease_expiry = ?, updated_at = ? "
                    "WHERE id = ? AND status = ?", (owner, lease_until, now, row.id, row.status))
            row.lease_owner, row.lease_expiry = owner, lease_until
            claimed.append(row)
        return claimed

    def renew_leases_txn(self, owner: str, real_now: int, lease_until: int) -> None:
        """Extend ``owner``'s leases to ``lease_until`` (``real_now`` plus the lease's length).
        A row another transaction holds (this engine's own group commit, most often) is left for
        the next renewal, a third of a lease later: waiting for it while holding the rows already
        renewed is how two transactions deadlock on PostgreSQL."""
        _, lease_until = self._lease_window_txn(real_now, lease_until)
        self.conn.execute("UPDATE instances SET lease_expiry = ? WHERE id IN (SELECT id FROM "
                          f"instances WHERE lease_owner = ?{self.CLAIM_LOCK})",
                          (lease_until, owner))

    def _lease_window_txn(self, real_now: int, lease_until: int) -> tuple[int, int]:
        """(now, a lease's expiry) on the clock leases are kept in: the engine's own here."""
        return real_now, lease_until

    def next_lease_expiry(self) -> int | None:
        row = self.conn.execute(
            "SELECT min(lease_expiry) FROM instances WHERE status IN "
            "('queued', 'running', 'waitingForPause') AND lease_owner IS NOT NULL").fetchone()
        return row[0]

    def has_unleased_work(self) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM instances WHERE status = 'queued' AND lease_owner IS NULL LIMIT 1"
        ).fetchone() is not None

    def release_txn(self, id: str, owner: str) -> None:
        self.conn.execute("UPDATE instances SET lease_owner = NULL, lease_expiry = NULL "
                          "WHERE id = ? AND lease_owner = ?", (id, owner))

    def release_all_txn(self, owner: str) -> None:
        self.conn.execute("UPDATE instances SET lease_owner = NULL, lease_expiry = NULL "
                          "WHERE lease_owner = ?", (owner,))

    def finish_txn(self, row_id: str, old: str, new: str, now: int, *, output: str | None = None,
                   error: str | None = None, error_traceback: str | None = None,
                   **fields: Any) -> None:
        self.set_status_txn(row_id, old, new, now, output=output, error=error,
                            error_traceback=error_traceback, ended_at=now,
                            lease_owner=None, lease_expiry=None, **fields)
        self.conn.execute("DELETE FROM timers WHERE instance_id = ?", (row_id,))

    def reset_txn(self, id: str, old: str, now: int, *, from_seq: int | None = None) -> None:
        """restart(): run the instance again under a new generation, so writers of the old run
        are refused. Without ``from_seq``, erase every step, attempt, timer, buffered event and
        log line; with it, only the step first reached at ``from_seq``, the steps reached after
        it, and what belongs to them (attempts, timers, log lines), while buffered events and the
        run's own log lines go in both forms (docs/semantics.md §4.6).

        The instance reads ``running`` at once, as the platform reports a restarted instance,
        with an expired lease (0) so the next engine to look claims it as it claims a run whose
        engine died. Guarded like a status change: from a status in ``states.RESTART_FROM``,
        and only if the row still holds ``old`` (``old`` is what the caller read; ``unknown``
        matches any status this version does not know)."""
        if old not in states.RESTART_FROM:
            raise InvalidTransitionError(f"Instance '{id}' cannot be restarted from {old}",
                                         instance_id=id)
        guard, args = _status_guard(old)
        cursor = self.conn.execute(
            "UPDATE instances SET status = 'running', output = NULL, error = NULL, "
            "error_traceback = NULL, rollback = NULL, paused_at = NULL, "
            "generation = generation + 1, lease_owner = NULL, lease_expiry = 0, "
            f"updated_at = ?, started_at = ?, ended_at = NULL WHERE id = ? AND {guard}",
            (now, now, id, *args))
        if cursor.rowcount != 1:
            raise InvalidTransitionError(
                f"Instance '{id}' is no longer {old}; cannot restart it", instance_id=id)
        if from_seq is None:
            for table in ("steps", "attempts", "timers", "events", "logs"):
                self.conn.execute(f"DELETE FROM {table} WHERE instance_id = ?", (id,))
            return
        discarded = ("(step_kind, step_name, step_count) IN (SELECT kind, name, count FROM steps "
                     "WHERE instance_id = ? AND seq >= ?)")
        for table in ("attempts", "timers"):
            self.conn.execute(f"DELETE FROM {table} WHERE instance_id = ? AND {discarded}",
                              (id, id, from_seq))
        self.conn.execute(f"DELETE FROM logs WHERE instance_id = ? AND (step_kind IS NULL OR "
                          f"{discarded})", (id, id, from_seq))
        self.conn.execute("DELETE FROM events WHERE instance_id = ?", (id,))
        self.conn.execute("DELETE FROM steps WHERE instance_id = ? AND seq >= ?", (id, from_seq))

    def steps_before(self, instance_id: str, from_seq: int) -> list[StepRow]:
        """The steps first reached before the one at ``from_seq``, in the order reached: what a
        restart from a step keeps and what a rerun from it copies."""
        rows = self.conn.execute(f"SELECT {_STEP_COLS} FROM steps WHERE instance_id = ? AND "
                                 "seq < ? ORDER BY seq", (instance_id, from_seq))
        return [StepRow(*r) for r in rows]

    def insert_step_txn(self, instance_id: str, step: StepRow) -> None:
        """A step row written whole (a rerun's copy, an imported history), after the others."""
        self.conn.execute(
            "INSERT INTO steps (instance_id, kind, name, count, status, attempts, config, result, "
            "error, event_type, duration_ms, started_at, ended_at, rollback) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (instance_id, step.kind, step.name, step.count, step.status, step.attempts,
             step.config, step.result, step.error, step.event_type, step.duration_ms,
             step.started_at, step.ended_at, step.rollback))

    def insert_copied_instance_txn(self, row: InstanceRow, scope: str | None, *,
                                   rerun_of: str | None = None,
                                   rerun_from: str | None = None) -> bool:
        """An instance row written whole (a rerun, an imported history); False when its key or
        its workflow's id is taken."""
        if self.find_instance(row.id) is not None or \
                self.find_in_workflow(row.workflow, row.known_as) is not None:
            return False
        self.conn.execute(
            "INSERT INTO instances (id, workflow, status, params, output, error, generation, "
            "paused_at, code_version, created_at, updated_at, started_at, ended_at, "
            "error_traceback, binding_id, scope, rerun_of, rerun_from) "
            "VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.id, row.workflow, row.status, row.params, row.output, row.error, row.paused_at,
             row.code_version, row.created_at, row.updated_at, row.started_at, row.ended_at,
             row.error_traceback, row.known_as, scope, rerun_of, rerun_from))
        return True

    def rerun_link(self, instance_id: str) -> tuple[str | None, str | None]:
        """``(rerun_of, rerun_from JSON)`` of an instance: where a rerun came from."""
        row = self.conn.execute("SELECT rerun_of, rerun_from FROM instances WHERE id = ?",
                                (instance_id,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def reruns_of(self, instance_id: str) -> list[tuple[str, str | None, str]]:
        """``(key, rerun_from JSON, status)`` of each rerun made from the instance, oldest first."""
        return list(self.conn.execute("SELECT id, rerun_from, status FROM instances WHERE "
                                      "rerun_of = ? ORDER BY seq", (instance_id,)))

    def scope_of(self, instance_id: str) -> str | None:
        row = self.conn.execute("SELECT scope FROM instances WHERE id = ?",
                                (instance_id,)).fetchone()
        return row[0] if row else None

    def buffered_event_rows(self, instance_id: str) -> list[tuple[str, str, int]]:
        """``(type, payload JSON, received_at)`` of each buffered event, oldest first."""
        return list(self.conn.execute("SELECT type, payload, received_at FROM events WHERE "
                                      "instance_id = ? ORDER BY seq", (instance_id,)))

    def step_seq(self, instance_id: str, key: StepKey) -> int | None:
        """Where step ``key`` stands in the order the instance first reached its steps."""
        row = self.conn.execute("SELECT seq FROM steps WHERE instance_id = ? AND kind = ? AND "
                                "name = ? AND count = ?", (instance_id, *key)).fetchone()
        return row[0] if row else None

    def delete_instance_txn(self, id: str) -> bool:
        """Erase the instance and everything stored about it; False when there was no such
        instance. A lifetime still running it loses its lease check with the row and writes
        nothing more."""
        for table in ("steps", "attempts", "timers", "events", "logs"):
            self.conn.execute(f"DELETE FROM {table} WHERE instance_id = ?", (id,))
        return self.conn.execute("DELETE FROM instances WHERE id = ?", (id,)).rowcount == 1

    def wake_timers_txn(self, id: str, now: int) -> int:
        """End the instance's sleeps and retry back-offs now (not its event timeouts)."""
        return self.conn.execute("UPDATE timers SET due = ? WHERE instance_id = ? AND due > ? AND "
                                 "kind IN ('sleep', 'retry')", (now, id, now)).rowcount

    def set_code_version_txn(self, id: str, version: str) -> None:
        """Record the code an instance started on (once: later runs keep the first)."""
        self.conn.execute("UPDATE instances SET code_version = ? WHERE id = ? AND code_version IS NULL",
                          (version, id))

    def shift_timers_txn(self, id: str, by_ms: int) -> None:
        self.conn.execute("UPDATE timers SET due = due + ? WHERE instance_id = ?", (by_ms, id))

    # ---- steps -----------------------------------------------------------------------------

    def load_steps(self, instance_id: str) -> dict[StepKey, StepRow]:
        rows = self.conn.execute(f"SELECT {_STEP_COLS} FROM steps WHERE instance_id = ? ORDER BY seq",
                                 (instance_id,))
        return {(r[0], r[1], r[2]): StepRow(*r) for r in rows}

    def has_rollback_handlers(self, instance_id: str) -> bool:
        """Whether any do step of the instance registered a rollback handler."""
        return self.conn.execute(
            "SELECT 1 FROM steps WHERE instance_id = ? AND kind = 'do' AND rollback IS NOT NULL "
            "LIMIT 1", (instance_id,)).fetchone() is not None

    def delete_timers_txn(self, id: str) -> None:
        self.conn.execute("DELETE FROM timers WHERE instance_id = ?", (id,))

    def unlease_txn(self, id: str, now: int) -> None:
        """Clear an instance's lease and pause time, its status unchanged (a queued instance
        handed to whichever engine claims it next)."""
        self.conn.execute("UPDATE instances SET lease_owner = NULL, lease_expiry = NULL, "
                          "paused_at = NULL, updated_at = ? WHERE id = ?", (now, id))

    def set_rollback_txn(self, id: str, rollback: str | None, now: int) -> None:
        """Record the instance's rollback phase (JSON; see 0005_rollbacks.sql)."""
        self.conn.execute("UPDATE instances SET rollback = ?, updated_at = ? WHERE id = ?",
                          (rollback, now, id))

    def count_done_steps(self, instance_id: str) -> int:
        return self.conn.execute("SELECT count(*) FROM steps WHERE instance_id = ? AND status = 'done'",
                                 (instance_id,)).fetchone()[0]

    def list_steps(self, instance_id: str) -> list[StepRow]:
        rows = self.conn.execute(f"SELECT {_STEP_COLS} FROM steps WHERE instance_id = ? "
                                 "ORDER BY seq", (instance_id,))
        return [StepRow(*r) for r in rows]

    def get_step(self, instance_id: str, key: StepKey) -> StepRow | None:
        row = self.conn.execute(
            f"SELECT {_STEP_COLS} FROM steps WHERE instance_id = ? AND kind = ? AND name = ? "
            "AND count = ?", (instance_id, *key)).fetchone()
        return StepRow(*row) if row else None

    def put_step_txn(self, instance_id: str, key: StepKey, status: str, now: int, *,
                     attempts: int = 0, config: str | None = None, result: str | None = None,
                     error: str | None = None, event_type: str | None = None,
                     duration_ms: int | None = None, ended: bool = False,
                     rollback: str | None = None) -> None:
        """Create or update one step's row (the step's whole state is rewritten each time; its
        config and rollback config are kept from the first attempt)."""
        ended_at = now if ended else None
        self.conn.execute(
            "INSERT INTO steps (instance_id, kind, name, count, status, attempts, config, result, "
            "error, event_type, duration_ms, started_at, ended_at, rollback) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (instance_id, kind, name, count) DO UPDATE SET status = excluded.status, "
            "attempts = excluded.attempts, config = coalesce(excluded.config, steps.config), "
            "result = excluded.result, error = excluded.error, "
            "event_type = coalesce(excluded.event_type, steps.event_type), "
            "duration_ms = coalesce(steps.duration_ms, excluded.duration_ms), "
            "ended_at = excluded.ended_at, "
            "rollback = coalesce(steps.rollback, excluded.rollback)",
            (instance_id, *key, status, attempts, config, result, error, event_type, duration_ms,
             now, ended_at, rollback))

    def add_attempt_txn(self, instance_id: str, key: StepKey, attempt: int, error: str,
                        now: int) -> None:
        """Keep a failed attempt's error (JSON); a second outcome for the same attempt (one cut off,
        then settled by a replay) replaces the first."""
        self.conn.execute(
            "INSERT INTO attempts (instance_id, step_kind, step_name, step_count, attempt, error, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (instance_id, step_kind, step_name, step_count, "
            "attempt) DO UPDATE SET error = excluded.error, at = excluded.at",
            (instance_id, *key, attempt, error, now))

    def list_attempts(self, instance_id: str) -> dict[StepKey, list[dict[str, Any]]]:
        """The failed attempts of each step of the instance, in attempt order:
        ``{"attempt", "error", "at"}`` with ``error`` parsed."""
        rows = self.conn.execute(
            "SELECT step_kind, step_name, step_count, attempt, error, at FROM attempts "
            "WHERE instance_id = ? ORDER BY step_kind, step_name, step_count, attempt",
            (instance_id,))
        attempts: dict[StepKey, list[dict[str, Any]]] = {}
        for kind, name, count, attempt, error, at in rows:
            attempts.setdefault((kind, name, count), []).append(
                {"attempt": attempt, "error": json.loads(error), "at": at})
        return attempts

    def resolve_step_txn(self, instance_id: str, key: StepKey, expect: str, status: str, now: int,
                         *, result: str | None = None, error: str | None = None) -> bool:
        """Move a step out of a waiting state (``expect``) exactly once; False if it already left."""
        cursor = self.conn.execute(
            "UPDATE steps SET status = ?, result = ?, error = ?, ended_at = ? WHERE instance_id = ? "
            "AND kind = ? AND name = ? AND count = ? AND status = ?",
            (status, result, error, now, instance_id, *key, expect))
        return cursor.rowcount == 1

    def oldest_waiter_txn(self, instance_id: str, event_type: str) -> StepKey | None:
        row = self.conn.execute(
            "SELECT kind, name, count FROM steps WHERE instance_id = ? AND kind = 'wait' AND "
            "status = 'waiting' AND event_type = ? ORDER BY seq LIMIT 1",
            (instance_id, event_type)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    # ---- timers ----------------------------------------------------------------------------

    def add_timer_txn(self, instance_id: str, kind: str, step: StepKey, due: int) -> None:
        self.conn.execute("INSERT INTO timers (instance_id, kind, step_kind, step_name, step_count, "
                          "due) VALUES (?, ?, ?, ?, ?, ?)", (instance_id, kind, *step, due))

    def delete_step_timers_txn(self, instance_id: str, step: StepKey) -> None:
        self.conn.execute("DELETE FROM timers WHERE instance_id = ? AND step_kind = ? AND "
                          "step_name = ? AND step_count = ?", (instance_id, *step))

    def delete_timer_txn(self, timer_id: int) -> bool:
        return self.conn.execute("DELETE FROM timers WHERE id = ?", (timer_id,)).rowcount == 1

    def due_timers(self, now: int, limit: int = 500) -> list[TimerRow]:
        """Timers due at ``now`` whose instance is not paused (a paused instance's clock stops)."""
        rows = self.conn.execute(
            "SELECT t.id, t.instance_id, t.kind, t.step_kind, t.step_name, t.step_count, t.due "
            "FROM timers t JOIN instances i ON i.id = t.instance_id "
            "WHERE t.due <= ? AND i.status != 'paused' ORDER BY t.due LIMIT ?", (now, limit))
        return [TimerRow(r[0], r[1], r[2], (r[3], r[4], r[5]), r[6]) for r in rows]

    def next_timer_due(self, kinds: Iterable[str] | None = None) -> int | None:
        sql = ("SELECT min(t.due) FROM timers t JOIN instances i ON i.id = t.instance_id "
               "WHERE i.status != 'paused'")
        args: list[str] = []
        if kinds is not None:
            args = list(kinds)
            sql += f" AND t.kind IN ({','.join('?' * len(args))})"
        return self.conn.execute(sql, args).fetchone()[0]

    def next_timers(self, kinds: Iterable[str], limit: int = 50) -> list[TimerRow]:
        """The earliest timers of ``kinds`` whose instance is not paused, soonest first."""
        args = list(kinds)
        rows = self.conn.execute(
            "SELECT t.id, t.instance_id, t.kind, t.step_kind, t.step_name, t.step_count, t.due "
            "FROM timers t JOIN instances i ON i.id = t.instance_id WHERE i.status != 'paused' "
            f"AND t.kind IN ({','.join('?' * len(args))}) ORDER BY t.due LIMIT ?", (*args, limit))
        return [TimerRow(r[0], r[1], r[2], (r[3], r[4], r[5]), r[6]) for r in rows]

    def timers_of(self, instance_id: str) -> list[TimerRow]:
        rows = self.conn.execute(
            "SELECT id, instance_id, kind, step_kind, step_name, step_count, due FROM timers "
            "WHERE instance_id = ? ORDER BY due", (instance_id,))
        return [TimerRow(r[0], r[1], r[2], (r[3], r[4], r[5]), r[6]) for r in rows]

    # ---- events ----------------------------------------------------------------------------

    def buffer_event_txn(self, instance_id: str, type: str, payload: str, now: int) -> None:
        self.conn.execute("INSERT INTO events (instance_id, type, payload, received_at) "
                          "VALUES (?, ?, ?, ?)", (instance_id, type, payload, now))

    def take_event_txn(self, instance_id: str, type: str) -> tuple[str, int] | None:
        """Remove and return the oldest buffered event of ``type`` as (payload JSON, received_at)."""
        row = self.conn.execute("SELECT seq, payload, received_at FROM events WHERE instance_id = ? "
                                "AND type = ? ORDER BY seq LIMIT 1", (instance_id, type)).fetchone()
        if row is None:
            return None
        self.conn.execute("DELETE FROM events WHERE seq = ?", (row[0],))
        return row[1], row[2]

    def buffered_events(self, instance_id: str) -> dict[str, int]:
        """How many events of each type wait, buffered, for a ``wait_for_event`` to ask."""
        return dict(self.conn.execute("SELECT type, count(*) FROM events WHERE instance_id = ? "
                                      "GROUP BY type ORDER BY min(seq)", (instance_id,)))

    # ---- logs ------------------------------------------------------------------------------

    def add_log_txn(self, instance_id: str, step: StepKey | None, level: str, message: str,
                    now: int) -> int | None:
        """Append a line; returns its ``seq`` (None when the instance no longer exists)."""
        kind, name, count = step if step else (None, None, None)
        # only while the instance exists: a deleted instance's run that is still winding down
        # must not leave lines behind
        cursor = self.conn.execute(
            "INSERT INTO logs (instance_id, step_kind, step_name, step_count, level, message, at) "
            "SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM instances WHERE id = ?) "
            "RETURNING seq", (instance_id, kind, name, count, level, message, now, instance_id))
        row = cursor.fetchone()
        return row[0] if row else None

    def rewrite_log_txn(self, seq: int, message: str) -> None:
        """Change the text of line ``seq`` (a log quota's marker, once it knows what it dropped)."""
        self.conn.execute("UPDATE logs SET message = ? WHERE seq = ?", (message, seq))

    def tail_logs(self, after_seq: int | None, scope: str | None = None,
                  limit: int = 1000) -> list[dict[str, Any]]:
        """Log lines of every instance (or of one tenant scope) after ``after_seq``, oldest
        first, with their instance's id and params (for the tenant's name): ``dynwf logs``."""
        sql = ("SELECT l.instance_id, i.params, l.step_kind, l.step_name, l.step_count, l.level, "
               "l.message, l.at, l.seq FROM logs l JOIN instances i ON i.id = l.instance_id "
               "WHERE l.seq > ?")
        args: list[Any] = [after_seq if after_seq is not None else -1]
        if scope is not None:
            sql += " AND i.scope = ?"
            args.append(scope)
        rows = self.conn.execute(sql + " ORDER BY l.seq LIMIT ?", (*args, limit))
        return [{"instance_id": r[0], "params": r[1], "step": (r[2], r[3], r[4]) if r[2] else None,
                 "level": r[5], "message": r[6], "at": r[7], "seq": r[8]} for r in rows]

    def last_log_seq(self) -> int:
        return self.conn.execute("SELECT coalesce(max(seq), 0) FROM logs").fetchone()[0]

    def list_logs(self, instance_id: str, after_seq: int | None = None) -> list[dict[str, Any]]:
        """The instance's log lines in order; with ``after_seq``, only those written after the
        line of that ``seq`` (how ``logs --follow`` asks for new lines only)."""
        rows = self.conn.execute("SELECT step_kind, step_name, step_count, level, message, at, seq "
                                 "FROM logs WHERE instance_id = ? AND seq > ? ORDER BY seq",
                                 (instance_id, after_seq if after_seq is not None else -1))
        return [{"step": (r[0], r[1], r[2]) if r[0] else None, "level": r[3], "message": r[4],
                 "at": r[5], "seq": r[6]} for r in rows]


def _status_guard(old: str) -> tuple[str, list[str]]:
    """The WHERE condition that the row still holds ``old``; ``unknown`` stands for any status
    this version does not know, so it matches every value outside the known ones."""
    if old != states.UNKNOWN:
        return "status = ?", [old]
    known = [status for status in states.ALL if status != states.UNKNOWN]
    return f"status NOT IN ({', '.join('?' * len(known))})", known

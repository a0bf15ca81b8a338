"""The engine's store on PostgreSQL, for engines on many hosts sharing one database.

It is :class:`~emulator.engine.store.Store` with another connection underneath: every statement
is the SQLite store's, written once (``?`` placeholders become ``%s`` here), except where the
dialects must differ, which this class states as the few fragments and methods it overrides.

Chosen for many hosts, where SQLite's one writer lock no longer serialises anything:

- **Transactions** run on a connection borrowed from a pool for the whole ``write()`` block
  (``READ COMMITTED``); a statement outside one borrows a connection for itself (autocommit). The
  pool checks a connection before lending it, so one whose backend was killed is replaced.
- **Claims** lock the rows they take with ``FOR UPDATE SKIP LOCKED``: two engines claiming at
  once take different instances and never wait for each other.
- **Fencing**: ``owned_txn`` reads the lease with ``FOR UPDATE``, so the row stays locked until
  the group commit's transaction ends; a claim that takes the lease over, a restart or a
  terminate waits for it, and a commit that comes after them sees the new owner or generation
  and writes nothing.
- **Lease expiry** is kept and judged on the database server's clock (``clock_timestamp()``),
  never a host's: a host whose clock is off neither steals leases nor loses its own. The engine
  still passes its wall clock; only the lease's length is taken from it. Timers stay on the
  engine's clock (the virtual clock in tests).
- **Wake-ups across hosts**: :meth:`PostgresStore.changed` sends ``pg_notify`` on the schema's
  channel and :meth:`PostgresStore.listen` hears the other hosts' (``engine/wakeups.py``).
- **Migrations** (``migrations_postgres/NNNN_*.sql``, numbered as SQLite's) run under a
  session advisory lock, each in its own transaction, so hosts starting together apply each once.
"""

from __future__ import annotations

import os
import threading
import zlib
from contextlib import contextmanager
from importlib import resources
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from emulator.engine import wakeups
from emulator.engine.store import Store
from emulator.errors import DatabaseUnavailableError, DatabaseUrlError

#: the schema dynwf's tables live in unless the URL (``?schema=``) or this variable names another
SCHEMA_ENV = "DYNWF_DATABASE_SCHEMA"
DEFAULT_SCHEMA = "dynwf"
#: a server that does not answer within this is reported unreachable (the CLI must not hang)
CONNECT_TIMEOUT_S = 5
#: connections per store: the engine's loop, the group commit's worker and a reader at once
POOL_MAX = 4
#: how the store's connections name themselves in pg_stat_activity, unless the URL's
#: ``application_name`` or the store's caller names them (``dynwf serve`` names each host)
APPLICATION_NAME = "dynwf"
_DB_NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"


def redact(url: str) -> str:
    """``url`` with its password replaced, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def split_url(url: str) -> tuple[str, str]:
    """(the libpq connection URL, dynwf's schema) of a ``postgresql://`` URL: ``?schema=`` is
    dynwf's and is taken out; then :data:`SCHEMA_ENV`; then :data:`DEFAULT_SCHEMA`."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    schema = schemas[-1] if schemas else os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA
    if not schema or len(schema) > 63 or "\x00" in schema:
        raise DatabaseUrlError(f"schema name {schema!r} in {redact(url)} is not a PostgreSQL name",
                               hint="use ?schema=NAME with 1-63 characters")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


class _Result:
    """A statement's rows, fetched before its connection goes back to the pool."""

    __slots__ = ("rows", "rowcount")

    def __init__(self, rows: list[tuple], rowcount: int) -> None:
        self.rows, self.rowcount = rows, rowcount

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple]:
        return self.rows

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.rows)


class _Connection:
    """What the shared statements call ``self.conn``: ``execute(sql, args)`` on the current
    thread's transaction when it has one, else on a connection borrowed for that statement."""

    def __init__(self, pool: ConnectionPool, url: str) -> None:
        self.pool = pool
        self.url = url
        self._local = threading.local()

    @property
    def current(self) -> psycopg.Connection | None:
        return getattr(self._local, "conn", None)

    @current.setter
    def current(self, conn: psycopg.Connection | None) -> None:
        self._local.conn = conn

    def execute(self, statement: str, args: Any = ()) -> _Result:
        statement = _placeholders(statement)
        conn = self.current
        try:
            if conn is not None:
                return _run(conn, statement, args)
            with self.pool.connection() as conn:
                return _run(conn, statement, args)
        except _SERVER_REFUSED:
            raise   # a deadlock or serialization failure: the server is there
        except psycopg.OperationalError as exc:
            raise _unavailable(self.url, exc) from exc


def _run(conn: psycopg.Connection, statement: str, args: Any) -> _Result:
    cursor = conn.execute(statement, tuple(args))
    rows = cursor.fetchall() if cursor.description is not None else []
    return _Result(rows, cursor.rowcount)


def _placeholders(statement: str) -> str:
    # the shared statements hold no literal '%' or '?' (only placeholders)
    return statement.replace("%", "%%").replace("?", "%s")


#: OperationalErrors that the server answered (class 40: a deadlock, a serialization failure):
#: the database is there, so they propagate as themselves, not as ``database.unavailable``
_SERVER_REFUSED = (psycopg.errors.TransactionRollback, psycopg.errors.DeadlockDetected,
                   psycopg.errors.SerializationFailure)


def _unavailable(url: str, exc: BaseException) -> DatabaseUnavailableError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseUnavailableError(
        f"PostgreSQL at {redact(url)} is unavailable: {detail}",
        hint="check the server is running and the URL (--database / DYNWF_DATABASE_URL)")


class PostgresStore(Store):
    """The engine's store in one schema of a PostgreSQL database (see the module's note)."""

    PREFIX_SQL = 'id COLLATE "C" >= ? AND id COLLATE "C" < ?'
    TENANT_SQL = "(params::jsonb -> '__dispatcherMetadata' ->> 'tenantId') = ?"
    SUFFIX_SQL = "right(binding_id, ?) = ?"
    CLAIM_LOCK = " FOR UPDATE SKIP LOCKED"
    OWNED_LOCK = " FOR UPDATE"
    OFFLOAD_COMMITS = True

    def __init__(self, url: str, *, application_name: str | None = None) -> None:  # noqa: D107
        self.url = redact(url)
        self.path = None  # type: ignore[assignment]
        conninfo, self.schema = split_url(url)
        self._clock_offset_ms = 0
        self.channel = wakeups.channel_for(self.schema)
        self.origin = wakeups.new_origin()
        self._conninfo = conninfo
        # the URL's application_name wins (libpq's own parameter); else the caller's, else ours
        named = "application_name" in conninfo_to_dict(conninfo) or bool(os.environ.get("PGAPPNAME"))
        self._connect_kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S}
        if not named:
            self._connect_kwargs["application_name"] = application_name or APPLICATION_NAME
        try:
            # one direct connection first: an unreachable server fails here, at once, with
            # libpq's reason, instead of as a pool timeout
            with psycopg.connect(conninfo, autocommit=True,
                                 connect_timeout=CONNECT_TIMEOUT_S) as probe:
                _migrate(probe, self.schema)
        except psycopg.OperationalError as exc:
            raise _unavailable(url, exc) from exc
        schema = self.schema

        def configure(conn: psycopg.Connection) -> None:
            conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))

        self.pool = ConnectionPool(conninfo, min_size=1, max_size=POOL_MAX, open=False,
                                   kwargs={"autocommit": True, **self._connect_kwargs},
                                   configure=configure, check=ConnectionPool.check_connection,
                                   name=f"dynwf-{schema}")
        try:
            self.pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)
        except Exception as exc:
            self.pool.close()
            raise _unavailable(url, exc) from exc
        self.conn = _Connection(self.pool, self.url)  # type: ignore[assignment]

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def write(self) -> Iterator["Store"]:
        """One transaction on one pooled connection; everything inside commits together or not
        at all. A connection lost inside it raises ``database.unavailable`` (nothing written)."""
        if self.conn.current is not None:
            raise RuntimeError("write() inside write(): transactions do not nest")
        try:
            with self.pool.connection() as conn, conn.transaction():
                self.conn.current = conn
                try:
                    yield self
                finally:
                    self.conn.current = None
        except _SERVER_REFUSED:
            raise   # a deadlock or serialization failure: the server is there
        except psycopg.OperationalError as exc:
            raise _unavailable(self.url, exc) from exc

    @contextmanager
    def savepoint(self, name: str = "op") -> Iterator[None]:
        """A nested unit inside ``write()``: undone alone if it raises."""
        conn = self.conn.current
        assert conn is not None, "savepoint() outside write()"
        with conn.transaction():
            yield

    def changed(self, instance_id: str, what: str) -> None:
        """Tell every engine listening on this schema (``engine/wakeups.py``): one ``pg_notify``,
        in the caller's transaction when inside ``write()`` (then sent only if it commits), else
        on its own. Best effort: an engine that misses it sees the change at its next poll."""
        try:
            self.conn.execute("SELECT pg_notify(?, ?)", (
                self.channel, wakeups.payload(self.origin, instance_id, what)))
        except DatabaseUnavailableError:
            if self.conn.current is not None:
                raise   # the transaction it belongs to is lost anyway: say so
            # the change itself committed: the other engines will see it when they poll

    def listen(self, on_change: Callable[[str, str], None],
               on_state: Callable[[bool, str | None], None]) -> wakeups.Listener:
        """Hear the other processes' :meth:`changed` on a dedicated connection, in a thread."""
        return wakeups.Listener(self._conninfo, self._connect_kwargs, self.channel, self.origin,
                                on_change, on_state)

    def data_version(self) -> int:
        """The database's next transaction id: it moves whenever any writer commits (this
        engine's own writes included, unlike SQLite's ``data_version``: a spare poll, no more)."""
        return int(self.conn.execute(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()[0])

    # ---- leases on the database's clock ----------------------------------------------------

    def _lease_window_txn(self, real_now: int, lease_until: int) -> tuple[int, int]:
        db_now = self.conn.execute(f"SELECT {_DB_NOW_MS}").fetchone()[0]
        self._clock_offset_ms = db_now - real_now
        return db_now, db_now + (lease_until - real_now)

    def lease_clock_ms(self, real_ms: int) -> int:
        """Now on the database server's clock, as last measured against the engine's."""
        return real_ms + self._clock_offset_ms


# ---- migrations ------------------------------------------------------------------------------

def migration_scripts() -> list[tuple[str, str]]:
    """(name, SQL) of every PostgreSQL migration, in order."""
    folder = resources.files("emulator.engine") / "migrations_postgres"
    return [(entry.name, entry.read_text()) for entry in
            sorted(folder.iterdir(), key=lambda e: e.name) if entry.name.endswith(".sql")]


def _lock_key(schema: str) -> int:
    # one advisory lock per schema: two schemas in one database migrate independently
    return zlib.crc32(f"dynwf.migrations:{schema}".encode())


def _migrate(conn: psycopg.Connection, schema: str) -> list[str]:
    """Apply the pending migrations to ``schema``; the names applied here (none when another
    host did it first). Holds a session advisory lock throughout: a host that starts at the
    same moment waits, then finds everything applied."""
    ident = pgsql.Identifier(schema)
    key = _lock_key(schema)
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        conn.execute(pgsql.SQL("SET search_path TO {}").format(ident))
        conn.execute("CREATE TABLE IF NOT EXISTS dynwf_migrations (name TEXT PRIMARY KEY, "
                     "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        done = {row[0] for row in conn.execute("SELECT name FROM dynwf_migrations")}
        applied = []
        for name, script in migration_scripts():
            if name in done:
                continue
            with conn.transaction():
                conn.execute(script)  # type: ignore[arg-type]  # several statements, no parameters
                conn.execute("INSERT INTO dynwf_migrations (name) VALUES (%s)", (name,))
            applied.append(name)
        return applied
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def migrate(url: str) -> list[str]:
    """Apply pending migrations to the database at ``url``; the names this call applied."""
    conninfo, schema = split_url(url)
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            return _migrate(conn, schema)
    except psycopg.OperationalError as exc:
        raise _unavailable(url, exc) from exc

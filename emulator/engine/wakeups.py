"""Cross-host wake-ups on PostgreSQL: ``NOTIFY`` when a change commits, ``LISTEN`` in every engine.

Without them an engine learns of another host's create, event, pause or terminate at its next
poll (``Engine.poll_ms``, a quarter second), so an event sent through host A to an instance host B
runs waits that long. With them A's store sends ``pg_notify`` on the schema's channel after the
change commits (``PostgresStore.changed``), and B's engine, listening on a connection of its own,
wakes its scheduler at once: ``docs/benchmarks.md`` ("Cross-host wake-ups") has the latency.

The choice: a thread that blocks in psycopg's ``notifies()`` on a dedicated autocommit connection
and hands each notification to the engine's loop (``call_soon_threadsafe``). psycopg waits for
the server with the interpreter lock released, so the thread costs nothing while nothing
happens; an async connection would need the loop to own a second connection type for one
statement. The connection is never taken from the pool: a pooled connection would stop hearing
the moment it went back.

A dropped connection (the server restarted, the backend terminated, the network gone) is
noticed by the error it raises, or by a probe query every :data:`PROBE_S` when nothing arrives
(a silently dead network never raises). The listener then says so (``on_state(False,
reason)``: the engine polls at its full rate again and ``dynwf serve`` logs it and shows it in
``/metrics``) and reconnects with a back-off from :data:`RETRY_FIRST_S` to :data:`RETRY_MAX_S`.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from typing import Any, Callable

import psycopg
from psycopg import sql as pgsql

#: a listener with nothing to hear checks its connection this often (a dead peer never raises)
PROBE_S = 5.0
#: how long one wait for notifications lasts, so that close() is noticed within it
WAIT_S = 0.25
#: the first wait before reconnecting a dropped listener, doubled up to the second
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0
#: PostgreSQL's longest channel name (NAMEDATALEN - 1)
MAX_CHANNEL = 63


def channel_for(schema: str) -> str:
    """The schema's channel: ``dynwf.<schema>``, or a digest of it when that is too long."""
    name = f"dynwf.{schema}"
    if len(name.encode()) <= MAX_CHANNEL:
        return name
    return "dynwf." + hashlib.sha1(schema.encode()).hexdigest()


def new_origin() -> str:
    """A store's mark on its own notifications, so its engine skips what it already knows."""
    return uuid.uuid4().hex[:12]


def payload(origin: str, instance_id: str, what: str) -> str:
    return f"{origin}:{what}:{instance_id}"


def parse(text: str) -> tuple[str, str, str] | None:
    """(origin, what, instance id) of a payload; None for one that is not dynwf's."""
    parts = text.split(":", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


class Listener:
    """LISTENs on ``channel`` in a thread of its own (see the module's note)."""

    def __init__(self, conninfo: str, connect_kwargs: dict[str, Any], channel: str, origin: str,
                 on_change: Callable[[str, str], None],
                 on_state: Callable[[bool, str | None], None]) -> None:
        self.conninfo, self.connect_kwargs = conninfo, connect_kwargs
        self.channel, self.origin = channel, origin
        self.on_change, self.on_state = on_change, on_state
        self._stop = threading.Event()
        #: whether the connection listens now; how many times it was lost
        self.listening = False
        self.losses = 0
        self._thread = threading.Thread(target=self._run, name="dynwf-listen", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=WAIT_S * 4 + 1)

    def _run(self) -> None:
        delay = RETRY_FIRST_S
        while not self._stop.is_set():
            reason = self._listen()
            if self._stop.is_set():
                break
            if self.listening:
                self.losses += 1
                self.listening = False
                delay = RETRY_FIRST_S
            self._tell_state(False, reason)
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def _listen(self) -> str:
        """Listen until the connection fails or :meth:`close`; the reason it ended."""
        try:
            with psycopg.connect(self.conninfo, autocommit=True, **self.connect_kwargs) as conn:
                conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(self.channel)))
                self.listening = True
                self._tell_state(True, None)
                quiet_since = time.monotonic()
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=WAIT_S):
                        quiet_since = time.monotonic()
                        self._deliver(note.payload)
                        if self._stop.is_set():
                            break
                    if time.monotonic() - quiet_since >= PROBE_S:
                        conn.execute("SELECT 1")   # a probe: a dead peer raises here
                        quiet_since = time.monotonic()
            return "stopped"
        except Exception as exc:  # noqa: BLE001 - any failure means: not listening, reconnect
            text = str(exc).strip().splitlines()
            return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")

    def _deliver(self, text: str) -> None:
        parsed = parse(text)
        if parsed is None or parsed[0] == self.origin:
            return
        try:
            self.on_change(parsed[2], parsed[1])
        except Exception:  # noqa: BLE001 - a closed loop: the engine is stopping
            pass

    def _tell_state(self, listening: bool, reason: str | None) -> None:
        try:
            self.on_state(listening, reason)
        except Exception:  # noqa: BLE001 - a closed loop: the engine is stopping
            pass


"""Workflows for the process tests, and the helpers those tests use to drive worker processes.

A worker imports ``proc_workflows:WORKFLOWS``. Every workflow follows a *plan*: a list of steps
(plain ``do`` steps, a ``do`` step that fails on its first attempt, sleeps, an event wait), so a
test can compute each instance's step keys and output without running anything.

Every ``do`` body is a witness of the engine's promise. Before its work it asks the database,
through its own read-only connection, whether its own step row is already ``done``: running a
committed step again is the one thing a crash must never cause, and it is logged as
``VIOLATION``. Every execution is logged as ``EXEC`` when it starts and ``SPAN`` (with the
engine's owner name and wall-clock start/end in ns) when it ends, one line per ``write`` on an
``O_APPEND`` descriptor followed by ``fsync``, so the lines of several processes interleave whole
and a SIGKILL loses none that were written.

Environment of the worker: ``DYNWF_TEST_DB`` (database file), ``DYNWF_TEST_LOG`` (log file),
``DYNWF_TEST_OWNER`` (the worker's ``--owner``, recorded in every line).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from emulator.engine import WorkflowDefinition

DB_ENV, LOG_ENV, OWNER_ENV = "DYNWF_TEST_DB", "DYNWF_TEST_LOG", "DYNWF_TEST_OWNER"
EVENT_TYPE = "approve"
FINISHED = frozenset({"complete", "errored", "terminated"})
# Short constant back-off: a kill during an attempt counts as a failed attempt (docs/semantics.md §9), and
# the production default (10 s, exponential) would make every recovery take seconds. The limit
# leaves room for a few kills landing on the same step on top of the planned first failure.
RETRY = {"retries": {"limit": 10, "delay": "50 ms", "backoff": "constant"}}

# kind -> steps, in call order: ("do", name) | ("flaky", name) | ("sleep", name, duration) |
# ("wait", name). "{short}" in a duration, and the back-off of a flaky step, are short waits that
# vary with the instance's ``n`` (10-199 ms), so that across a batch some timers come due at every
# moment of an instance's way into hibernation.
PLANS: dict[str, list[tuple[str, ...]]] = {
    "chain": [("do", "load"), ("do", "transform"), ("do", "store")],
    "flaky": [("do", "prepare"), ("flaky", "charge"), ("do", "receipt")],
    "sleepy": [("do", "begin"), ("sleep", "nap", "{short} ms"),
               ("do", "tick"), ("sleep", "pause", "150 milliseconds"),
               ("do", "tick"), ("sleep", "pause", "150 milliseconds"),
               ("do", "tick"), ("do", "end")],
    "waiter": [("do", "request"), ("wait", "approval"), ("do", "apply")],
}
KINDS = tuple(PLANS)


# ---- what a test expects --------------------------------------------------------------------

def step_keys(kind: str) -> list[tuple[str, str, int]]:
    """Every step row an instance of ``kind`` commits: (row kind, name, count)."""
    counts: Counter[tuple[str, str]] = Counter()
    keys = []
    for op in PLANS[kind]:
        row_kind = "do" if op[0] in ("do", "flaky") else op[0]
        counts[(row_kind, op[1])] += 1
        keys.append((row_kind, op[1], counts[(row_kind, op[1])]))
    return keys


def do_steps(kind: str) -> list[str]:
    """The ``do`` steps of ``kind`` as the log names them (``name#count``)."""
    return [f"{name}#{count}" for row_kind, name, count in step_keys(kind) if row_kind == "do"]


def planned_failures(kind: str) -> int:
    """Executions of ``kind`` that fail on purpose (one per ``flaky`` step)."""
    return sum(1 for op in PLANS[kind] if op[0] == "flaky")


def short_ms(n: int) -> int:
    return 10 + (7 * n) % 190


def flaky_retry(n: int) -> dict[str, Any]:
    return {"retries": {"limit": 5, "delay": f"{short_ms(n)} ms", "backoff": "constant"}}


def event_payload(instance_id: str) -> dict[str, str]:
    return {"code": f"ok-{instance_id}"}


def expected_output(kind: str, n: int, instance_id: str) -> dict[str, Any]:
    value = str(n)
    for row_kind, name, count in step_keys(kind):
        value = _next_value(value, row_kind, name, count, event_payload(instance_id))
    return {"kind": kind, "value": value}


def _next_value(value: str, row_kind: str, name: str, count: int, payload: dict | None) -> str:
    if row_kind == "do":
        return f"{value}>{name}{count}"
    if row_kind == "wait":
        return f"{value}>{payload['code'] if payload else None}"
    return value


# ---- the workflows (run inside the worker) ----------------------------------------------------

class PlanWorkflow:
    def __init__(self, row: Any) -> None:
        self.kind = row.workflow

    async def run(self, event: dict[str, Any], step: Any) -> dict[str, Any]:
        instance = event["instanceId"]
        n = event["payload"]["n"]
        value = str(n)
        counts: Counter[tuple[str, str]] = Counter()
        for op in PLANS[self.kind]:
            row_kind = "do" if op[0] in ("do", "flaky") else op[0]
            counts[(row_kind, op[1])] += 1
            count = counts[(row_kind, op[1])]
            if op[0] in ("do", "flaky"):
                config = flaky_retry(n) if op[0] == "flaky" else RETRY
                value = await _do(step, instance, op[1], value, config, fail_first=op[0] == "flaky")
            elif op[0] == "sleep":
                await step.sleep(op[1], op[2].format(short=short_ms(n)))
            else:
                got = await step.wait_for_event(op[1], EVENT_TYPE, timeout="1 hour")
                value = _next_value(value, "wait", op[1], count, got["payload"])
        return {"kind": self.kind, "value": value}


WORKFLOWS = [WorkflowDefinition(kind, PlanWorkflow) for kind in KINDS]


async def _do(step: Any, instance: str, name: str, value: str, config: dict[str, Any], *,
              fail_first: bool) -> str:
    @step.do(name, config=config)
    async def body(ctx: dict[str, Any]) -> str:
        count, attempt = ctx["step"]["count"], ctx["attempt"]
        label = f"{name}#{count}"
        owner = os.environ.get(OWNER_ENV, "-")
        if _is_committed(instance, name, count):
            _append(f"VIOLATION {instance} {label} {owner}")
        start = time.time_ns()
        _append(f"EXEC {instance} {label} {attempt} {owner}")
        # a few ms of "work" so that kills land inside attempts, not only between them
        await asyncio.sleep((5 + zlib.crc32(f"{instance}/{label}".encode()) % 30) / 1000)
        if fail_first and attempt == 1:
            _append(f"SPAN {instance} {label} {owner} {start} {time.time_ns()}")
            raise RuntimeError(f"{label} fails on its first attempt")
        result = _next_value(value, "do", name, count, None)
        _append(f"SPAN {instance} {label} {owner} {start} {time.time_ns()}")
        return result
    return await body()


_reader: sqlite3.Connection | None = None


def _is_committed(instance: str, name: str, count: int) -> bool:
    global _reader
    if _reader is None:
        _reader = sqlite3.connect(f"file:{os.environ[DB_ENV]}?mode=ro", uri=True, timeout=10,
                                  isolation_level=None)
    row = _reader.execute("SELECT status FROM steps WHERE instance_id = ? AND kind = 'do' "
                          "AND name = ? AND count = ?", (instance, name, count)).fetchone()
    return row is not None and row[0] == "done"


def _append(line: str) -> None:
    fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- the test side: worker processes and the log ---------------------------------------------

def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; that value, or None at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@dataclass
class LogEntry:
    kind: str           # EXEC | SPAN | VIOLATION
    instance: str
    step: str           # name#count
    owner: str
    attempt: int | None = None
    start: int | None = None
    end: int | None = None


def read_log(path: Path) -> list[LogEntry]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "EXEC":
            entries.append(LogEntry("EXEC", parts[1], parts[2], parts[4], attempt=int(parts[3])))
        elif parts[0] == "SPAN":
            entries.append(LogEntry("SPAN", parts[1], parts[2], parts[3], start=int(parts[4]),
                                    end=int(parts[5])))
        elif parts[0] == "VIOLATION":
            entries.append(LogEntry("VIOLATION", parts[1], parts[2], parts[3]))
    return entries


class Worker:
    """One ``python -m emulator.engine.worker`` process serving ``db`` with :data:`WORKFLOWS`."""

    def __init__(self, db: Path, log: Path, owner: str, folder: Path, *, lease_ms: int = 1000,
                 poll_ms: int = 100, only: Iterable[str] | None = None) -> None:
        self.owner = owner
        self.stdout = folder / f"{owner}.out"
        self.stderr = folder / f"{owner}.err"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).parent)] + [p for p in [env.get("PYTHONPATH")] if p])
        env.update({DB_ENV: str(db), LOG_ENV: str(log), OWNER_ENV: owner})
        args = [sys.executable, "-m", "emulator.engine.worker", "--db", str(db),
                "--workflows", "proc_workflows:WORKFLOWS", "--owner", owner,
                "--lease-ms", str(lease_ms), "--poll-ms", str(poll_ms)]
        if only is not None:
            args += ["--only", ",".join(only)]
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.process = subprocess.Popen(args, stdout=out, stderr=err, env=env)

    def wait_ready(self, timeout: float = 30) -> None:
        ready = wait_until(lambda: f"worker {self.owner} ready" in self.stdout.read_text()
                           or self.process.poll() is not None, timeout)
        if not ready or self.process.poll() is not None:
            raise AssertionError(f"worker {self.owner} did not start:\n{self.output()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM (graceful: leases handed back); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker {self.owner} ignored SIGTERM:\n{self.output()}")

    def output(self) -> str:
        return f"--- stdout\n{self.stdout.read_text()}--- stderr\n{self.stderr.read_text()}"


def instance_statuses(db: Path) -> dict[str, str]:
    with _connect(db) as conn:
        return dict(conn.execute("SELECT id, status FROM instances"))


def stranded(db: Path) -> set[str]:
    """Instances ``waiting`` with nothing left that could wake them: no timer and no step still
    sleeping, waiting for an event or backing off. Every commit that leaves an instance waiting
    also leaves it such a wait, so a stranded instance is stuck for good."""
    with _connect(db) as conn:
        return {r[0] for r in conn.execute(
            "SELECT id FROM instances i WHERE status = 'waiting' "
            "AND NOT EXISTS (SELECT 1 FROM timers t WHERE t.instance_id = i.id) "
            "AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.instance_id = i.id "
            "                AND s.status IN ('sleeping', 'waiting', 'backoff'))")}


def wait_finished(db: Path, timeout: float, grace: float = 3.0) -> tuple[bool, set[str]]:
    """Poll until every instance is finished; give up early once the same instances have been
    stranded for ``grace`` seconds. Returns (all finished, stranded ids)."""
    first_seen: dict[str, float] = {}

    def settled() -> bool:
        if all(s in FINISHED for s in instance_statuses(db).values()):
            return True
        now = time.monotonic()
        stuck = stranded(db)
        for instance_id in list(first_seen):
            if instance_id not in stuck:
                del first_seen[instance_id]
        for instance_id in stuck:
            first_seen.setdefault(instance_id, now)
        return any(now - seen >= grace for seen in first_seen.values())
    wait_until(settled, timeout)
    finished = all(s in FINISHED for s in instance_statuses(db).values())
    return finished, set() if finished else stranded(db)


def stuck_report(db: Path, limit: int = 5) -> str:
    """Rows of a few unfinished instances, for a failure message."""
    lines = []
    with _connect(db) as conn:
        rows = conn.execute("SELECT id, status, lease_owner, lease_expiry FROM instances WHERE "
                            "status NOT IN ('complete', 'errored', 'terminated') ORDER BY seq "
                            "LIMIT ?", (limit,)).fetchall()
        for row in rows:
            lines.append(f"instance {row}")
            lines += [f"  step {s}" for s in conn.execute(
                "SELECT kind, name, count, status, attempts FROM steps WHERE instance_id = ? "
                "ORDER BY seq", (row[0],))]
            lines += [f"  timer {t}" for t in conn.execute(
                "SELECT kind, step_name, step_count, due FROM timers WHERE instance_id = ?",
                (row[0],))]
            lines += [f"  event {e}" for e in conn.execute(
                "SELECT type, payload FROM events WHERE instance_id = ?", (row[0],))]
    return "\n".join(lines)


def _connect(db: Path) -> closing[sqlite3.Connection]:
    """A short-lived connection, closed on exit (sqlite3's own context manager only commits)."""
    return closing(sqlite3.connect(str(db), timeout=10))

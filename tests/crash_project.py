"""A dynamic-workflows project for the ``dynwf dev`` crash tests, written into a folder by
:func:`write_project`, and the helpers those tests use to drive it.

Twenty tenants run the same plan-driven workflow (plain steps, a step that fails its first
attempt, real sleeps, an event wait), each in its own isolate, created through the dispatcher
over HTTP as a user's platform would. Every ``do`` body is a witness of the engine's promise: it
first calls ``env.WITNESS`` (an ``RpcTarget`` the dispatcher hands each tenant), which runs in the
dev process, asks the state database through its own read-only connection whether that step is
already ``done``, and appends ``VIOLATION`` if it is: a committed step must never run again. The
witness logs ``EXEC`` (with the isolate's pid) when a body starts and ``SPAN`` when it ends, one
``write`` per line on an ``O_APPEND`` descriptor, so a SIGKILL of the dev process or of an
isolate loses none that were written.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from emulator.runtime.dynamic_workflows import scoped_instance_id
from proc_workflows import instance_statuses, wait_until

LOG_ENV = "DYNWF_CRASH_LOG"
TENANTS = [f"t{index:02d}" for index in range(20)]
KINDS = ("chain", "flaky", "sleepy", "waiter")
FINISHED = frozenset({"complete", "errored", "terminated"})

# kind -> steps in call order; the same table is written into the tenants' code
PLANS: dict[str, list[list[str]]] = {
    "chain": [["do", "load"], ["do", "transform"], ["do", "store"]],
    "flaky": [["do", "prepare"], ["flaky", "charge"], ["do", "receipt"]],
    "sleepy": [["do", "begin"], ["sleep", "nap", "1 second"], ["do", "tick"],
               ["sleep", "rest", "2 seconds"], ["do", "end"]],
    "waiter": [["do", "request"], ["wait", "approval"], ["do", "apply"]],
}

WRANGLER = """{
  "name": "crash-project",
  "main": "src/entry.py",
  "compatibility_date": "2026-04-01",
  "compatibility_flags": ["python_workers"],
  "workflows": [{"name": "tenant-workflows", "binding": "WORKFLOWS",
                 "class_name": "DynamicWorkflow"}],
  "worker_loaders": [{"binding": "LOADER"}]
}
"""

DISPATCHER = '''
import os
import sqlite3
from pathlib import Path

from workers import Response, RpcTarget, WorkerEntrypoint
from dynamic_workflows import (DynamicWorkflowBinding, create_dynamic_workflow_entrypoint,
                               scoped_instance_id, wrap_workflow_binding)

ROOT = Path(__file__).resolve().parent.parent
_reader = None


STEP_DONE = ("SELECT status FROM steps WHERE instance_id = ? AND kind = 'do' AND name = ? "
             "AND count = ?")


def _committed(instance_id, name, count):
    if os.environ.get("DYNWF_DATABASE_URL", "").startswith("postgresql://"):
        return _committed_postgres(instance_id, name, count)
    global _reader
    if _reader is None:
        _reader = sqlite3.connect(f"file:{ROOT / '.dynwf' / 'state.sqlite'}?mode=ro", uri=True,
                                  timeout=10, isolation_level=None)
    row = _reader.execute(STEP_DONE, (instance_id, name, count)).fetchone()
    return row is not None and row[0] == "done"


def _committed_postgres(instance_id, name, count):
    """The same question of the hosts' shared PostgreSQL schema, on a connection of the
    witness's own (named apart from the host's, so cutting the host's connections spares it)."""
    global _reader
    import psycopg
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
    for _ in range(20):
        try:
            if _reader is None or _reader.closed:
                parts = urlsplit(os.environ["DYNWF_DATABASE_URL"])
                query = dict(parse_qsl(parts.query))
                schema = query.pop("schema", "dynwf")
                query["application_name"] = "crash-witness"
                _reader = psycopg.connect(urlunsplit(parts._replace(query=urlencode(query))),
                                          autocommit=True, options=f"-c search_path={schema}")
            row = _reader.execute(STEP_DONE.replace("?", "%s"), (instance_id, name, count)).fetchone()
            return row is not None and row[0] == "done"
        except psycopg.OperationalError:
            _reader = None
    raise RuntimeError("the witness cannot read the database")


def _append(line):
    fd = os.open(os.environ["DYNWF_CRASH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


class Witness(RpcTarget):
    """Runs in the dev process: what a tenant's step body reports when it starts and ends."""

    def __init__(self, tenant_id):
        self.tenant_id = tenant_id

    def begin(self, instance_id, name, count, attempt, pid):
        real = scoped_instance_id({"tenantId": self.tenant_id}, instance_id)
        if _committed(real, name, count):
            _append(f"VIOLATION {real} {name}#{count} {pid}")
        _append(f"EXEC {real} {name}#{count} {attempt} {pid} {os.getpid()}")

    def end(self, instance_id, name, count, pid):
        real = scoped_instance_id({"tenantId": self.tenant_id}, instance_id)
        _append(f"SPAN {real} {name}#{count} {pid}")


def load_tenant(env, tenant_id):
    folder = ROOT / "tenants" / tenant_id

    async def code():
        return {"compatibility_date": "2026-04-01", "main_module": "index.py",
                "modules": {"index.py": (folder / "index.py").read_text()},
                "env": {"WORKFLOWS": wrap_workflow_binding({"tenantId": tenant_id}),
                        "WITNESS": Witness(tenant_id)},
                "global_outbound": None}
    return env.LOADER.get(tenant_id, code)


DynamicWorkflow = create_dynamic_workflow_entrypoint(
    lambda ctx: load_tenant(ctx.env, ctx.metadata["tenantId"]).get_entrypoint("TenantWorkflow"))


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        tenant_id = request.headers.get("x-tenant-id")
        if not tenant_id or not (ROOT / "tenants" / tenant_id / "index.py").is_file():
            return Response.json({"error": "unknown tenant"}, status=404)
        return await load_tenant(self.env, tenant_id).get_entrypoint().fetch(request)
'''

TENANT = '''
import asyncio
import os

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint

PLANS = __PLANS__
# A kill during an attempt is a failed attempt: a short constant back-off and room for several
# kills landing on one step, on top of the planned first failure.
RETRY = {"retries": {"limit": 10, "delay": "50 ms", "backoff": "constant"}}


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        me, kind, n = event["instanceId"], event["payload"]["kind"], event["payload"]["n"]
        witness = self.env.WITNESS
        value = str(n)
        for op in PLANS[kind]:
            if op[0] == "sleep":
                await step.sleep(op[1], op[2])
            elif op[0] == "wait":
                got = await step.wait_for_event(op[1], "approve", timeout="1 hour")
                value = f"{value}>{got['payload']['code']}"
            else:
                value = await self.do(step, witness, me, n, op[1], value, op[0] == "flaky")
        return {"kind": kind, "value": value}

    async def do(self, step, witness, me, n, name, value, fails_first):
        @step.do(name, config=RETRY)
        async def body(ctx):
            count, attempt, pid = ctx["step"]["count"], ctx["attempt"], os.getpid()
            await witness.begin(me, name, count, attempt, pid)
            await asyncio.sleep((5 + (n * 7 + len(name)) % 30) / 1000)   # some work, so kills land in it
            await witness.end(me, name, count, pid)
            if fails_first and attempt == 1:
                raise RuntimeError(f"{name} fails on its first attempt")
            return f"{value}>{name}"
        return await body()


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        body = await request.json()
        if request.url.endswith("/event"):
            instance = await self.env.WORKFLOWS.get(body["id"])
            await instance.send_event({"type": "approve", "payload": {"code": body["code"]}})
            return Response.json({"sent": body["id"]})
        try:
            instance = await self.env.WORKFLOWS.create({"id": body["id"], "params": body["params"]})
        except Exception as exc:
            if "already exists" not in str(exc):
                raise
            return Response.json({"id": body["id"], "existing": True})
        return Response.json({"id": instance.id})
'''


def write_project(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "wrangler.jsonc").write_text(WRANGLER)
    (root / "src" / "entry.py").write_text(DISPATCHER)
    tenant_code = TENANT.replace("__PLANS__", json.dumps(PLANS))
    for tenant in TENANTS:
        (root / "tenants" / tenant).mkdir(parents=True)
        (root / "tenants" / tenant / "index.py").write_text(tenant_code)
    return root


# ---- what a test expects -----------------------------------------------------------------------

@dataclass(frozen=True)
class Planned:
    """One instance the test creates: tenant-facing id, tenant, kind and its number."""

    id: str
    tenant: str
    kind: str
    n: int

    @property
    def body(self) -> dict[str, Any]:
        return {"id": self.id, "params": {"kind": self.kind, "n": self.n}}

    @property
    def code(self) -> str:
        return f"ok-{self.id}"

    def expected_output(self) -> dict[str, Any]:
        value = str(self.n)
        for op in PLANS[self.kind]:
            if op[0] in ("do", "flaky"):
                value = f"{value}>{op[1]}"
            elif op[0] == "wait":
                value = f"{value}>{self.code}"
        return {"kind": self.kind, "value": value}

    def step_rows(self) -> Counter[tuple[str, str, int]]:
        rows: Counter[tuple[str, str, int]] = Counter()
        for op in PLANS[self.kind]:
            kind = "do" if op[0] in ("do", "flaky") else op[0]
            rows[(kind, op[1], 1)] += 1
        return rows

    def do_steps(self) -> set[str]:
        return {f"{op[1]}#1" for op in PLANS[self.kind] if op[0] in ("do", "flaky")}

    @property
    def planned_failures(self) -> int:
        return sum(1 for op in PLANS[self.kind] if op[0] == "flaky")


def plan(count: int) -> list[Planned]:
    """``count`` instances over the tenants and kinds, interleaved."""
    return [Planned(f"{TENANTS[i % len(TENANTS)]}-i{i:03d}", TENANTS[i % len(TENANTS)],
                    KINDS[(i // len(TENANTS)) % len(KINDS)], i) for i in range(count)]


# ---- the log ----------------------------------------------------------------------------------

@dataclass
class Log:
    path: Path
    violations: list[str] = field(default_factory=list)
    execs: Counter[tuple[str, str]] = field(default_factory=Counter)   # (instance, step) -> runs
    spans: Counter[tuple[str, str]] = field(default_factory=Counter)
    pids: list[int] = field(default_factory=list)                       # isolate pid of each EXEC
    ended: Counter[int] = field(default_factory=Counter)                # SPANs per isolate pid

    @classmethod
    def read(cls, path: Path) -> "Log":
        log = cls(path)
        if not path.exists():
            return log
        for line in path.read_text().splitlines():
            parts = line.split()
            if parts and parts[0] == "VIOLATION":
                log.violations.append(line)
            elif parts and parts[0] == "EXEC":
                log.execs[(parts[1], parts[2])] += 1
                log.pids.append(int(parts[4]))
            elif parts and parts[0] == "SPAN":
                log.spans[(parts[1], parts[2])] += 1
                log.ended[int(parts[3])] += 1
        return log


def exec_count(path: Path) -> int:
    return path.read_bytes().count(b"EXEC ") if path.exists() else 0


# ---- the client ------------------------------------------------------------------------------

class Client:
    """Creates instances and sends events through the dispatcher of whichever dev server is
    current, retrying what a kill interrupted (a request whose answer was lost may have been
    applied: creating the same id again answers ``existing``)."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.created: dict[str, str] = {}        # id -> the id answered, or "existing"
        self.sent: set[str] = set()
        self.retried = 0                          # requests that needed another try
        self.lock = threading.Lock()

    def post(self, planned: Planned, path: str, body: dict[str, Any], deadline: float) -> Any:
        tries = 0
        while True:
            url = self.url
            if url is not None:
                request = urllib.request.Request(
                    url + path, data=json.dumps(body).encode(), method="POST",
                    headers={"content-type": "application/json", "x-tenant-id": planned.tenant})
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        return json.loads(response.read())
                except urllib.error.HTTPError as exc:
                    answer = exc.read()
                    if exc.code != 500 or b"isolate." not in answer:
                        raise AssertionError(f"{path} {body}: {exc.code} {answer[:300]!r}")
                except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                        TimeoutError):
                    pass                      # the server was killed under the request or its answer
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} {body}: no server answered before the deadline")
            tries += 1
            if tries == 1:
                with self.lock:
                    self.retried += 1
            time.sleep(0.05)                  # the pause before retrying against a restarted server

    def create(self, planned: Planned, deadline: float) -> None:
        answer = self.post(planned, "/create", planned.body, deadline)
        with self.lock:
            self.created[planned.id] = "existing" if answer.get("existing") else answer["id"]

    def send_event(self, planned: Planned, deadline: float) -> None:
        """Send the instance its event once its create has been answered."""
        if not wait_until(lambda: planned.id in self.created, deadline - time.monotonic()):
            raise AssertionError(f"{planned.id} was never created")
        self.post(planned, "/event", {"id": planned.id, "code": planned.code}, deadline)
        with self.lock:
            self.sent.add(planned.id)


def in_background(jobs: list[Callable[[], None]], workers: int = 8) -> Callable[[float], None]:
    """Run ``jobs`` on a thread pool; the returned function waits for them (re-raising)."""
    pool = ThreadPoolExecutor(workers)
    futures = [pool.submit(job) for job in jobs]

    def wait(timeout: float) -> None:
        try:
            for future in futures:
                future.result(timeout=timeout)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return wait


# ---- the database -----------------------------------------------------------------------------

def connect(db: Path) -> closing[sqlite3.Connection]:
    return closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10))


def statuses(db: Path) -> dict[str, str]:
    """Each instance's status; none before the first server has made the database."""
    return instance_statuses(db) if db.exists() else {}


def check_nothing_lost(rows: dict[str, tuple], steps: Counter, timers: int, log_path: Path,
                       planned: list[Planned], client: Client) -> str:
    """What every crash test checks at its end, from the store's instances (id -> status, output,
    error), step rows (instance, kind, name, count, status) and timer count; its figures as text."""
    log = Log.read(log_path)
    assert not log.violations, f"committed steps executed again: {log.violations[:10]}"
    assert set(client.created) == {item.id for item in planned}
    assert all(answer in (item_id, "existing") for item_id, answer in client.created.items())
    real = {item.id: scoped_instance_id({"tenantId": item.tenant}, item.id) for item in planned}
    assert set(rows) == set(real.values()), "instances missing or unexpected"
    for item in planned:
        status, output, error = rows[real[item.id]]
        assert (status, output and json.loads(output)) == ("complete", item.expected_output()), \
            (item, error)
    expected = Counter((real[item.id], *key, "done") for item in planned
                       for key, n in item.step_rows().items() for _ in range(n))
    assert steps == expected, (f"missing: {list((expected - steps).items())[:10]} "
                               f"unexpected: {list((steps - expected).items())[:10]}")
    assert timers == 0
    wanted = {(real[item.id], step) for item in planned for step in item.do_steps()}
    assert set(log.execs) == wanted, "a step body never ran, or an unknown one did"
    runs = sum(log.execs.values())
    planned_failures = sum(item.planned_failures for item in planned)
    cut_off = sum(max(0, log.execs[k] - log.spans[k]) for k in log.execs)
    return (f"{runs} step-body executions of {len(wanted)} steps: {runs - len(wanted)} repeats = "
            f"{planned_failures} planned first-attempt failures + "
            f"{runs - len(wanted) - planned_failures} after kills ({cut_off} cut off mid-body); "
            f"0 committed steps run again, 0 lost")

"""Load on ``dynwf dev``: many HTTP clients creating instances through the dispatcher at once.

The load test starts a real ``dynwf dev`` process on a project whose tenants create one quick
3-step instance per request, and runs ``CLIENTS`` concurrent keep-alive clients against it for
``DYNWF_LOAD_SECONDS`` (default 30; a longer soak uses the same variable). Every response is
recorded: a 2xx names the instance it created; a 503 ``dev.overloaded`` with ``Retry-After`` is
explicit back-pressure, after which the client waits as told and retries the *same* id (the
refusal must have created nothing, or the retry would fail with ``instance.already_exists``);
anything else, and any connection error, is a failure. Afterwards every 2xx instance must
complete, and the database must hold exactly the 2xx ids: nothing lost, nothing duplicated,
nothing made by a refused request. The memory of the server and its isolates is sampled every
second and must stay bounded. Speed is printed, never asserted.

The 503 path itself is proven deterministically, without a server process, by a dispatcher that
blocks until the test lets it go.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from dev_harness import copy_hello, descendants, start

CLIENTS = 200
#: long enough to pass the memory warm-up and see the flat part after it (see GROWTH_MB)
SECONDS = float(os.environ.get("DYNWF_LOAD_SECONDS", "60"))
TENANTS = ("t0", "t1", "t2", "t3")
#: Limits below the client count (128 requests held at once for 200 clients), so the run
#: exercises refusals and retries under real load; the defaults (256 + 256) never refuse 200.
SERVER_LIMITS = ("--max-inflight", "64", "--max-queued", "64")
REQUEST_TIMEOUT_S = 60.0     # a request unanswered this long is a stall, counted as a failure
DRAIN_TIMEOUT_S = 120.0      # every created instance complete within this after the load stops

TENANT_CODE = '''\
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        n = event["payload"]["n"]

        @step.do("first")
        async def first():
            return n

        @step.do("second")
        async def second(first):
            return first + 1

        @step.do("third")
        async def third(second):
            return second + 1

        return await third()


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        body = await request.json()
        instance = await self.env.WORKFLOWS.create({"id": body["id"], "params": body})
        return Response.json({"id": instance.id})
'''


def load_project(tmp_path: Path) -> Path:
    """The hello dispatcher with tenants whose ``fetch`` creates a 3-step instance with the
    id the client chose."""
    project = copy_hello(tmp_path)
    shutil.rmtree(project / "tenants")
    for tenant in TENANTS:
        folder = project / "tenants" / tenant
        folder.mkdir(parents=True)
        (folder / "index.py").write_text(TENANT_CODE, encoding="utf-8")
    return project


# ---- the clients --------------------------------------------------------------------------------

@dataclass
class LoadResult:
    """What every client saw, keyed by the tenant-visible instance id."""

    created: dict[str, str] = field(default_factory=dict)          # id -> tenant
    refused: int = 0                                               # 503 dev.overloaded answers
    failures: list[tuple[str, int, str]] = field(default_factory=list)   # id, status, body
    connection_errors: list[tuple[str, str]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)        # every answered request
    health_ms: list[float] = field(default_factory=list)           # /__dynwf/health meanwhile
    requests: int = 0
    seconds: float = 0.0


class _Connection:
    """One keep-alive HTTP/1.1 connection over asyncio streams (the standard library has no
    asynchronous HTTP client, and 200 threads would spend the CPU the server needs)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes) -> tuple[int, dict[str, str], bytes]:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}",
                *(f"{name}: {value}" for name, value in headers.items())]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        answer: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            answer[name.strip().lower()] = value.strip()
        if "content-length" in answer:
            content = await self.reader.readexactly(int(answer["content-length"]))
        elif answer.get("transfer-encoding", "").lower() == "chunked":
            content = await self._chunks()
        else:
            content = await self.reader.read()
        return status, answer, content

    async def _chunks(self) -> bytes:
        parts = []
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()
        await self.reader.readline()
        return b"".join(parts)

    def close(self) -> None:
        self.writer.close()


def _overload_delay(status: int, headers: dict[str, str], content: bytes) -> float | None:
    """The seconds to wait when the answer is explicit back-pressure, else None."""
    if status != 503 or "retry-after" not in headers:
        return None
    try:
        code = json.loads(content)["error"]["code"]
        delay = float(headers["retry-after"])
    except (ValueError, KeyError, TypeError):
        return None
    return delay if code == "dev.overloaded" else None


async def _client(index: int, port: int, stop_at: float, result: LoadResult) -> None:
    """Create ``c<index>-<n>`` for n = 0, 1, ... until ``stop_at``; after back-pressure, wait as
    told and retry the same id."""
    tenant = TENANTS[index % len(TENANTS)]
    headers = {"content-type": "application/json", "x-tenant-id": tenant}
    connection: _Connection | None = None
    n = 0
    while time.monotonic() < stop_at:
        instance = f"c{index}-{n}"
        body = json.dumps({"id": instance, "n": n}).encode()
        try:
            connection = connection or await _Connection.open("127.0.0.1", port)
            started = time.perf_counter()
            status, answer, content = await asyncio.wait_for(
                connection.request("POST", "/", headers, body), REQUEST_TIMEOUT_S)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            result.connection_errors.append((instance, repr(exc)))
            if connection is not None:
                connection.close()
            connection, n = None, n + 1
            continue
        result.requests += 1
        result.latencies_ms.append((time.perf_counter() - started) * 1000)
        if answer.get("connection", "").lower() == "close":
            connection.close()
            connection = None
        delay = _overload_delay(status, answer, content)
        if delay is not None:
            result.refused += 1
            await asyncio.sleep(min(delay, max(0.0, stop_at - time.monotonic())))
            continue                                   # the same id again
        if 200 <= status < 300 and _answered_id(content) == instance:
            result.created[instance] = tenant
        else:
            result.failures.append((instance, status, content[:300].decode("utf-8", "replace")))
        n += 1
    if connection is not None:
        connection.close()


def _answered_id(content: bytes) -> str | None:
    try:
        return json.loads(content).get("id")
    except (ValueError, AttributeError):
        return None


async def _probe_health(port: int, stop_at: float, result: LoadResult) -> None:
    """``GET /__dynwf/health`` twice a second: the emulator's own routes are never refused and
    must keep answering while the dispatcher is saturated."""
    connection = await _Connection.open("127.0.0.1", port)
    try:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            status, _, content = await asyncio.wait_for(
                connection.request("GET", "/__dynwf/health", {}, b""), REQUEST_TIMEOUT_S)
            result.health_ms.append((time.perf_counter() - started) * 1000)
            if status != 200:
                result.failures.append(("health", status, content[:300].decode("utf-8", "replace")))
            await asyncio.sleep(0.5)
    finally:
        connection.close()


async def _load(port: int, clients: int, seconds: float) -> LoadResult:
    result = LoadResult()
    started = time.monotonic()
    stop_at = started + seconds
    await asyncio.gather(_probe_health(port, stop_at, result),
                         *(_client(i, port, stop_at, result) for i in range(clients)))
    result.seconds = time.monotonic() - started
    return result


# ---- memory -------------------------------------------------------------------------------------

def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0                  # gone between listing and reading, or a zombie


@dataclass(frozen=True)
class Sample:
    at_s: float
    server_kb: int          # the dev process alone
    tree_kb: int            # with its descendants (zygote, isolates); shared pages count twice
    queued: int             # instances created and not yet claimed by the engine
    running: int


class Sampler:
    """Every second, on a thread of its own: the RSS of the server and of its process tree, and
    the engine's backlog (read from the database, read-only)."""

    def __init__(self, pid: int, database: Path, every_s: float = 1.0) -> None:
        self.pid, self.database, self.every_s = pid, database, every_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                counts = _counts(self.database)
            except sqlite3.Error:       # a busy moment of the writer; the next sample counts
                counts = {}
            self.samples.append(Sample(time.monotonic() - self._started, _rss_kb(self.pid),
                                       sum(_rss_kb(pid) for pid in {self.pid, *descendants(self.pid)}),
                                       counts.get("queued", 0), counts.get("running", 0)))
            if self._stop.wait(self.every_s):
                return


# ---- the database -------------------------------------------------------------------------------

def _read_only(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)


def _counts(database: Path) -> dict[str, int]:
    with _read_only(database) as db:
        return dict(db.execute("SELECT status, count(*) FROM instances GROUP BY status"))


def _wait_drained(database: Path, timeout: float) -> dict[str, int]:
    """Poll until no instance is queued or running; the counts by status at that moment."""
    deadline = time.monotonic() + timeout
    while True:
        counts = _counts(database)
        if not any(counts.get(s) for s in ("queued", "running", "waitingForPause")):
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"instances still active {timeout:.0f}s after the load: {counts}")
        time.sleep(0.25)


def _instances(database: Path) -> dict[str, str]:
    """Every instance's tenant-visible id (the real one less its tenant prefix) -> status."""
    with _read_only(database) as db:
        rows = db.execute("SELECT id, status FROM instances").fetchall()
    return {real.split("-", 1)[1]: status for real, status in rows}


# ---- the test -----------------------------------------------------------------------------------

def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def test_concurrent_clients_lose_nothing_and_memory_stays_bounded(tmp_path, servers):
    project = load_project(tmp_path)
    database = project / ".dynwf" / "state.sqlite"
    dev = start(servers, project, "--no-reload", *SERVER_LIMITS)
    with Sampler(dev.proc.pid, database) as sampler:
        result = asyncio.run(_load(dev.port, CLIENTS, SECONDS))
        drain_started = time.monotonic()
        counts = _wait_drained(database, DRAIN_TIMEOUT_S)
        drained_s = time.monotonic() - drain_started
    stored = _instances(database)
    _report(result, sampler.samples, counts, drained_s)

    assert not result.connection_errors, result.connection_errors[:5]
    assert not result.failures, result.failures[:5]
    assert result.created and result.health_ms, "no request succeeded"
    assert result.refused, "the load never went over the limits, so back-pressure went untested"
    assert set(stored) == set(result.created), (
        f"lost: {sorted(set(result.created) - set(stored))[:10]}; "
        f"not answered with a 2xx: {sorted(set(stored) - set(result.created))[:10]}")
    not_complete = {i: s for i, s in stored.items() if s != "complete"}
    assert not not_complete, list(not_complete.items())[:10]
    _assert_memory_bounded(sampler.samples)
    assert dev.stop() == 0, "".join(dev.stderr[-20:])


#: Memory bounds, from measurement on a 2-core machine (server alone / with its isolates, MB).
#: The server's memory warms up with the instances it has run, then stays flat: at the first
#: calibration (~300 instances/s) it reached 64-77 / 247-271 within 10-20 s and stayed there
#: (70 / 257 after a 120 s soak). Since the engine got faster (~950 instances/s) the same
#: warm-up takes ~30 s: 51 -> 122 / 281 at ~27,000 instances, then 122-128 / 281-288 for the
#: next 30 s (``DYNWF_LOAD_SECONDS=60``); Python's traced allocations (tracemalloc) stay within
#: 4 MB across it, so the warm-up is the allocator's and SQLite's working set, not objects kept.
#: A 30 s run therefore ends inside the warm-up and cannot tell it from a leak; the 60 s run
#: compares the last third with the first, past the warm-up. 32 MB of the server's and 64 MB
#: of the tree's above the first third's peak holds however slowly a machine warms up, while
#: a leak of 5 KB per request at ~950 requests/s (95 MB in 20 s) fails it. The ceilings are
#: about 2x the highest peaks measured: a blow-up, not a drift.
GROWTH_MB = {"server": 32, "server and isolates": 64}
CEILING_MB = {"server": 256, "server and isolates": 1024}


def _assert_memory_bounded(samples: list[Sample]) -> None:
    span = samples[-1].at_s
    first = [s for s in samples if s.at_s <= span / 3]
    last = [s for s in samples if s.at_s >= span * 2 / 3]
    measures = {"server": lambda s: s.server_kb, "server and isolates": lambda s: s.tree_kb}
    for name, of in measures.items():
        early, late = max(map(of, first)) / 1024, max(map(of, last)) / 1024
        assert late <= early + GROWTH_MB[name], (
            f"{name}: RSS grew from a peak of {early:.0f} MB in the first third of the run to "
            f"{late:.0f} MB in the last")
        peak = max(map(of, samples)) / 1024
        assert peak <= CEILING_MB[name], f"{name}: RSS reached {peak:.0f} MB"


def _report(result: LoadResult, samples: list[Sample], counts: dict[str, int],
            drained_s: float) -> None:
    lat, health = result.latencies_ms, result.health_ms
    print(f"\nload: {CLIENTS} clients for {result.seconds:.1f}s ({' '.join(SERVER_LIMITS)}): "
          f"{result.requests} requests ({result.requests / result.seconds:.0f}/s), "
          f"{len(result.created)} created ({len(result.created) / result.seconds:.0f}/s), "
          f"{result.refused} refused (503), {len(result.failures)} failed, "
          f"{len(result.connection_errors)} connection errors")
    if lat:
        print(f"latency ms: p50 {_percentile(lat, 0.5):.1f}, p99 {_percentile(lat, 0.99):.1f}, "
              f"max {max(lat):.1f}; /__dynwf/health meanwhile: p50 "
              f"{_percentile(health, 0.5):.1f}, max {max(health, default=0):.1f}")
    print(f"drained in {drained_s:.1f}s after the load: {counts}; engine backlog during the "
          f"load: queued max {max(s.queued for s in samples)}, running max "
          f"{max(s.running for s in samples)}")
    server = [s.server_kb // 1024 for s in samples]
    tree = [s.tree_kb // 1024 for s in samples]
    print(f"RSS MB server: start {server[0]}, peak {max(server)}, end {server[-1]}; "
          f"with isolates: start {tree[0]}, peak {max(tree)}, end {tree[-1]}")
    print("RSS MB every second (server/with isolates): "
          + " ".join(f"{a}/{b}" for a, b in zip(server, tree)))


# ---- back-pressure, deterministically -----------------------------------------------------------

class _HeldHost:
    """A host whose dispatcher holds every request until ``release`` is set (or raises for a
    request whose ``x-id`` is in ``failing``)."""

    def __init__(self, failing: tuple[str, ...] = ()) -> None:
        self.release = asyncio.Event()
        self.fetched: list[str] = []
        self.failing = failing

    async def fetch(self, request):
        from emulator.runtime.workers import Response
        seen = request.headers.get("x-id")
        self.fetched.append(seen)
        if seen in self.failing:
            raise RuntimeError(f"{seen} fails")
        await self.release.wait()
        return Response.json({"id": seen})


async def _asgi_post(app, request_id: str) -> tuple[int, dict[str, str], bytes]:
    """One POST through an ASGI app, no sockets: (status, headers, body)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/", "raw_path": b"/",
             "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8787),
             "client": ("127.0.0.1", 50000),
             "headers": [(b"host", b"127.0.0.1:8787"), (b"x-tenant-id", b"t0"),
                         (b"x-id", request_id.encode()), (b"content-type", b"application/json")]}
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    headers = {name.decode(): value.decode() for name, value in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


async def _until(condition, rounds: int = 1000) -> None:
    """Let the loop run until ``condition()`` (no I/O is involved, so a bounded number of
    rounds suffices; no clock)."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def test_beyond_the_limit_and_the_queue_a_request_is_refused_at_once_with_503():
    from emulator.server.app import Admission, Dispatch

    async def scenario():
        host, records = _HeldHost(), []
        admission = Admission(limit=2, queue=1)
        app = Dispatch(host, records.append, admission)
        held = [asyncio.create_task(_asgi_post(app, name)) for name in ("a", "b", "c")]
        await _until(lambda: host.fetched == ["a", "b"] and admission.waiting == 1)

        status, headers, body = await _asgi_post(app, "d")     # answered while all are held
        assert status == 503 and headers["retry-after"] == "1"
        error = json.loads(body)["error"]
        assert error["code"] == "dev.overloaded"
        assert "2 requests running, 1 waiting" in error["message"]
        assert "--max-inflight" in error["hint"]
        assert host.fetched == ["a", "b"]                      # the dispatcher never saw it
        assert (records[-1].status, records[-1].error["code"]) == (503, "dev.overloaded")
        assert records[-1].tenant == "t0" and len(records) == 1

        host.release.set()
        answers = await asyncio.gather(*held)
        assert [(s, json.loads(b)["id"]) for s, _, b in answers] == [
            (200, "a"), (200, "b"), (200, "c")]                 # the queued one ran too
        assert host.fetched == ["a", "b", "c"]
        assert admission.to_dict() == {"running": 0, "waiting": 0, "refused": 1,
                                       "max_inflight": 2, "max_queued": 1}
        assert sorted(r.status for r in records) == [200, 200, 200, 503]
        assert (await _asgi_post(app, "e"))[0] == 200          # room again

    asyncio.run(scenario())


def test_a_failing_or_abandoned_request_gives_its_place_back():
    from emulator.server.app import Admission, Dispatch

    async def scenario():
        host = _HeldHost(failing=("boom",))
        admission = Admission(limit=1, queue=1)
        app = Dispatch(host, None, admission)
        status, _, body = await _asgi_post(app, "boom")
        assert status == 500 and json.loads(body)["error"]["code"] == "worker.exception"
        assert admission.running == 0

        first = asyncio.create_task(_asgi_post(app, "first"))
        queued = asyncio.create_task(_asgi_post(app, "gone"))
        await _until(lambda: admission.running == 1 and admission.waiting == 1)
        queued.cancel()                                        # its client went away
        await _until(lambda: admission.waiting == 0)
        host.release.set()
        assert (await asyncio.gather(first, _asgi_post(app, "next")))[1][0] == 200
        assert admission.to_dict()["refused"] == 0 and host.fetched == ["boom", "first", "next"]

    asyncio.run(scenario())


def test_the_limits_are_options_of_dynwf_dev():
    from typer.testing import CliRunner

    from dynwf_cli.app import app
    runner = CliRunner()
    shown = runner.invoke(app, ["dev", "--help"])
    assert shown.exit_code == 0
    assert "--max-inflight" in shown.stdout and "--max-queued" in shown.stdout
    assert "dev.overloaded" in shown.stdout
    refused = runner.invoke(app, ["dev", "--max-inflight", "0"])
    assert refused.exit_code == 2

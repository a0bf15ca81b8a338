"""``dynwf serve`` hosts on one PostgreSQL schema: ``python -m benchmarks.cluster [--hosts 1,2,4]
[--seconds S] [--no-peers] [URL]``, or ``python -m benchmarks --only cluster``.

For each number of hosts, real ``dynwf serve`` processes on the schema ``dynwf_bench_cluster``
(dropped first) run a project whose two workflows are in its main module (no isolate in the
path: the engine, its store and the database are what is measured):

- **steps/s**: 20-step workflows, topped up so that 100 per host are always in flight, for
  ``--seconds``; steps committed per second over all hosts, and per host;
- **workflows/s**: 3-step workflows, 200 per host in flight, completed per second;
- **create to complete across hosts**: one instance at a time created by this process (a
  control client on another connection, as another host's dispatcher would) and run by
  whichever host claims it first after the wake-up; the instance's own created and ended
  times (each host writes the real clock), median and 99th percentile;
- **CPU**: each serve process's user + system seconds over the window (``/proc``), the
  PostgreSQL server's backends together, and this load generator; on 2 cores the sum is the
  bound.

- **an event across hosts**: engine B runs an instance (a step body in flight keeps its lifetime
  on B) whose other branch waits for an event; engine A, another process's store on its own
  connections, sends the event; the time from A's ``send_event`` call to B's commit of the step
  after the wait, through NOTIFY/LISTEN (``engine/wakeups.py``), median and 99th percentile
  over 200 instances (two engines in this process, each with its own store and listener).

DBOS (its native PostgreSQL backend, in its own virtual environment, see ``peers/``) runs the
same 3-step workflow with 16 client threads in the same invocation, when it can be installed.
Targets, per host: >= 2,000 steps/s with 100 in flight, >= 500 workflows/s, >= 5x DBOS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "dynwf_bench_cluster"
DYNWF = Path(sys.executable).with_name("dynwf")
TARGETS = {"steps_per_s_per_host": 2_000, "workflows_per_s_per_host": 500, "dbos_ratio": 5.0}
STEPS = 20
STEPS_IN_FLIGHT = 100
WORKFLOWS_IN_FLIGHT = 200

WRANGLER = """{
  "name": "cluster-bench",
  "main": "src/entry.py",
  "compatibility_date": "2026-04-01",
  "compatibility_flags": ["python_workers"],
  "workflows": [{"name": "three", "binding": "THREE", "class_name": "Three"},
                {"name": "many", "binding": "MANY", "class_name": "Many"}]
}
"""

ENTRY = '''
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class Three(WorkflowEntrypoint):
    async def run(self, event, step):
        value = 0
        for name in ("a", "b", "c"):
            @step.do(name)
            async def add():
                return value + 1
            value = await add()
        return value


class Many(WorkflowEntrypoint):
    async def run(self, event, step):
        total = 0
        for index in range(__STEPS__):
            @step.do(f"s{index}")
            async def one():
                return index
            total += await one()
        return total


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return Response("cluster bench")
'''


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> set[int]:
    found, stack = {pid}, [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    stack.append(child)
    return found


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


class Cpu:
    """CPU seconds of the serve processes (with their children), PostgreSQL and this process."""

    def __init__(self, hosts: list[subprocess.Popen]) -> None:
        self.hosts = hosts
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:
        sample = {f"host{i}": sum(_cpu_s(p) for p in _tree(h.pid)) for i, h in enumerate(self.hosts)}
        sample["postgres"] = sum(_cpu_s(p) for p in _postgres_pids())
        sample["load generator"] = _cpu_s(os.getpid())
        return sample

    def used(self, seconds: float) -> dict[str, float]:
        """Share of one core each used since the start (1.0 = a whole core)."""
        end = self._sample()
        return {k: round((end[k] - self.start.get(k, 0.0)) / seconds, 2) for k in end}


def _reset(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    return f"{url}{'&' if '?' in url else '?'}schema={SCHEMA}"


def _start_hosts(project: Path, url: str, count: int) -> list[subprocess.Popen]:
    hosts, ports = [], []
    for index in range(count):
        port = 18_700 + index
        env = {**os.environ, "DYNWF_DATABASE_URL": f"{url}&application_name=bench-host{index}"}
        env.pop("DYNWF_STATE_DIR", None)
        hosts.append(subprocess.Popen(
            [str(DYNWF), "serve", "--config", str(project / "wrangler.jsonc"), "--port", str(port),
             "--allow-weak-isolation"], env=env, stdout=subprocess.DEVNULL,
            stderr=open(project / f"host{index}.log", "w"), cwd=project))
        ports.append(port)
    deadline = time.monotonic() + 60
    for port in ports:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("a serve host did not become ready")
            time.sleep(0.1)
    return hosts


def _stop(hosts: list[subprocess.Popen]) -> None:
    for host in hosts:
        host.terminate()
    for host in hosts:
        try:
            host.wait(timeout=30)
        except subprocess.TimeoutExpired:
            host.kill()


def _sustain(store: Any, control: Any, conn: psycopg.Connection, workflow: str, in_flight: int,
             seconds: float, hosts: list[subprocess.Popen]) -> dict[str, Any]:
    """Keep ``in_flight`` instances of ``workflow`` unfinished for ``seconds``; what completed."""
    created = 0

    def complete() -> int:
        return conn.execute("SELECT count(*) FROM instances WHERE workflow = %s AND status = "
                            "'complete'", (workflow,)).fetchone()[0]

    def top_up(done: int) -> int:
        want = in_flight - (created - done)
        made = 0
        while want > 0:
            batch = min(want, 100)
            control.create_batch(workflow, [{} for _ in range(batch)])
            want -= batch
            made += batch
        return made

    base = complete()
    created = base
    created += top_up(base)
    time.sleep(1.0)                              # warm-up: every host claiming and committing
    created += top_up(complete())
    cpu = Cpu(hosts)
    start_done, started = complete(), time.perf_counter()
    while time.perf_counter() - started < seconds:
        time.sleep(0.02)
        created += top_up(complete())
    elapsed = time.perf_counter() - started
    finished = complete() - start_done
    return {"completed": finished, "seconds": round(elapsed, 2), "cpu": cpu.used(elapsed)}


def _latency(control: Any, conn: psycopg.Connection, samples: int) -> list[float]:
    values = []
    for _ in range(samples):
        key = control.create("three", {})
        deadline = time.monotonic() + 10
        while True:
            row = conn.execute("SELECT status, created_at, updated_at FROM instances WHERE id = %s",
                               (key,)).fetchone()
            if row[0] == "complete":
                values.append(float(row[2] - row[1]))
                break
            if time.monotonic() > deadline:
                counts = conn.execute("SELECT workflow, status, count(*) FROM instances "
                                      "GROUP BY 1, 2").fetchall()
                raise RuntimeError(f"instance {key} did not complete: {row[0]}; {counts}")
            time.sleep(0.002)
    return values


def measure(url: str, host_counts: list[int], seconds: float) -> list[dict[str, Any]]:
    from emulator.engine.control import Control
    from emulator.engine.stores import open_store
    from emulator.clock import SystemClock
    results = []
    with tempfile.TemporaryDirectory(prefix="dynwf-cluster-") as folder:
        project = Path(folder)
        (project / "src").mkdir()
        (project / "wrangler.jsonc").write_text(WRANGLER)
        (project / "src" / "entry.py").write_text(ENTRY.replace("__STEPS__", str(STEPS)))
        for count in host_counts:
            schema_url = _reset(url)
            store = open_store(schema_url, application_name="bench-load")
            control = Control(store, SystemClock())
            conn = psycopg.connect(url, autocommit=True, options=f"-c search_path={SCHEMA}")
            hosts = _start_hosts(project, schema_url, count)
            try:
                steps = _sustain(store, control, conn, "many", STEPS_IN_FLIGHT * count, seconds, hosts)
                flows = _sustain(store, control, conn, "three", WORKFLOWS_IN_FLIGHT * count,
                                 seconds, hosts)
                latency = _latency(control, conn, 50)
            except BaseException:
                for index in range(count):
                    lines = (project / f"host{index}.log").read_text().splitlines()
                    print(f"host{index}:", *[x for x in lines if '"level":"info"' not in x][-15:],
                          sep="\n  ", file=sys.stderr)
                raise
            finally:
                _stop(hosts)
                conn.close()
                store.close()
            steps_per_s = steps["completed"] * STEPS / steps["seconds"]
            flows_per_s = flows["completed"] / flows["seconds"]
            latency.sort()
            results.append({
                "hosts": count,
                "steps_per_s": round(steps_per_s), "steps_per_s_per_host": round(steps_per_s / count),
                "steps_cpu": steps["cpu"],
                "workflows_per_s": round(flows_per_s),
                "workflows_per_s_per_host": round(flows_per_s / count), "workflows_cpu": flows["cpu"],
                "latency_ms": {"median": statistics.median(latency),
                               "p99": latency[min(len(latency) - 1, int(len(latency) * 0.99))]}})
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return results


async def _event_latency(url: str, samples: int) -> dict[str, float]:
    from emulator.engine import Engine, WorkflowDefinition, progress
    from emulator.engine.stores import open_store
    release = asyncio.Event()

    class Waits:
        async def run(self, event: Any, step: Any) -> Any:
            async def hold() -> Any:
                @step.do("hold")
                async def body() -> str:
                    await release.wait()
                    return "held"
                return await body()

            async def then() -> Any:
                got = await step.wait_for_event("go", "go", timeout="1 hour")

                @step.do("after")
                async def body() -> Any:
                    return got["payload"]
                return await body()
            return await asyncio.gather(hold(), then())

    schema_url = _reset(url)
    a, b = (Engine(open_store(schema_url, application_name=f"bench-{name}"),
                   [WorkflowDefinition("waits", lambda row: Waits())], owner=name)
            for name in ("a", "b"))
    committed: dict[str, float] = {}

    def heard(event: Any) -> None:
        if event.kind == progress.STEP_COMMITTED and event.step and event.step[1] == "after":
            committed[event.instance_id] = time.perf_counter()
    b.progress.subscribe(heard)
    stop = asyncio.Event()
    serving = asyncio.get_running_loop().create_task(b.serve(stop))
    while not b.listening:
        await asyncio.sleep(0.01)
    values = []
    for n in range(samples):
        key = f"e{n}"
        await b.binding("waits").create({"id": key})
        while b.store.get_step(key, ("wait", "go", 1)) is None or key not in b.live:
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.005)
        sent = time.perf_counter()
        await asyncio.to_thread(a.control.send_event, key, "go", n)   # another host's call
        while key not in committed:
            await asyncio.sleep(0.0005)
        values.append((committed[key] - sent) * 1000)
    release.set()
    stop.set()
    await serving
    a.close()
    b.close()
    values.sort()
    return {"samples": samples, "median_ms": round(statistics.median(values), 2),
            "p99_ms": round(values[int(len(values) * 0.99) - 1], 2),
            "max_ms": round(values[-1], 2), "poll_ms_without": b.poll_ms}


async def _dbos(url: str) -> dict[str, Any]:
    from benchmarks.peers.dbos_peer import DbosSubject
    from benchmarks.peers.env import PeerUnavailable, default_dir, ensure_dbos
    database = url.rsplit("/", 1)[0] + "/dynwf_bench_dbos"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS dynwf_bench_dbos WITH (FORCE)")
        conn.execute("CREATE DATABASE dynwf_bench_dbos")
    os.environ["DYNWF_DBOS_DATABASE_URL"] = database
    try:
        subject = DbosSubject(ensure_dbos(default_dir()))
        await subject.start()
    except (PeerUnavailable, OSError, RuntimeError) as exc:
        return {"skipped": str(exc)}
    try:
        per_s = await subject.throughput(1_000)
        latency = sorted(await subject.latency(50))
        return {"version": subject.version, "workflows_per_s": round(per_s, 1),
                "latency_ms": {"median": statistics.median(latency),
                               "p99": latency[min(len(latency) - 1, int(len(latency) * 0.99))]}}
    finally:
        await subject.close()


def table(results: list[dict[str, Any]], dbos: dict[str, Any] | None,
          events: dict[str, Any] | None = None) -> str:
    lines = ["| serve hosts | steps/s (per host; target >= 2,000) | CPU, steps (cores) "
             "| 3-step workflows/s (per host; target >= 500) | CPU, workflows (cores) "
             "| create to complete across hosts, median / p99 |",
             "|---|---|---|---|---|---|"]
    for r in results:
        cpu_steps = ", ".join(f"{k} {v}" for k, v in r["steps_cpu"].items())
        cpu_flows = ", ".join(f"{k} {v}" for k, v in r["workflows_cpu"].items())
        lines.append(f"| {r['hosts']} | {r['steps_per_s']:,} ({r['steps_per_s_per_host']:,}) "
                     f"| {cpu_steps} | {r['workflows_per_s']:,} ({r['workflows_per_s_per_host']:,}) "
                     f"| {cpu_flows} | {r['latency_ms']['median']:.0f} / "
                     f"{r['latency_ms']['p99']:.0f} ms |")
    if dbos is not None:
        if dbos.get("skipped"):
            lines.append(f"\nDBOS on PostgreSQL: skipped ({dbos['skipped']})")
        else:
            best = max(r["workflows_per_s"] for r in results)
            lines.append(f"\nDBOS {dbos['version']} on PostgreSQL, 16 client threads: "
                         f"{dbos['workflows_per_s']} workflows/s, create to complete "
                         f"{dbos['latency_ms']['median']:.1f} / {dbos['latency_ms']['p99']:.1f} ms; "
                         f"dynwf's best {best} workflows/s = "
                         f"{best / dbos['workflows_per_s']:.1f}x (target >= "
                         f"{TARGETS['dbos_ratio']:.0f}x)")
    if events is not None:
        lines.append(f"\nan event sent through A to a lifetime on B, to B's commit of the next step "
                     f"({events['samples']} instances): median {events['median_ms']} ms, p99 "
                     f"{events['p99_ms']} ms, max {events['max_ms']} ms (without the push: up to "
                     f"a {events['poll_ms_without']} ms poll)")
    return "\n".join(lines)


def run(*, quick: bool = False, peers: bool = True, url: str = DEFAULT_URL) -> dict[str, Any]:
    """The figures as ``python -m benchmarks --only cluster`` reports them (an error, not a
    failure, when PostgreSQL cannot be reached)."""
    try:
        events = asyncio.run(_event_latency(url, 50 if quick else 200))
        results = measure(url, [1, 2] if quick else [1, 2, 4], 3.0 if quick else 8.0)
    except psycopg.OperationalError as exc:
        return {"error": f"PostgreSQL at {url} is unavailable: {exc}"}
    dbos = asyncio.run(_dbos(url)) if peers else None
    return {"cluster": results, "events": events, "dbos": dbos, "targets": TARGETS,
            "table": table(results, dbos, events)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", default=DEFAULT_URL)
    parser.add_argument("--hosts", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    events = asyncio.run(_event_latency(args.url, args.events))
    print(json.dumps({"event_across_hosts": events}), file=sys.stderr, flush=True)
    results = measure(args.url, [int(n) for n in args.hosts.split(",")], args.seconds)
    dbos = None if args.no_peers else asyncio.run(_dbos(args.url))
    if args.json:
        print(json.dumps({"cluster": results, "events": events, "dbos": dbos,
                          "targets": TARGETS}, indent=2))
    else:
        print(table(results, dbos, events))


if __name__ == "__main__":
    main()

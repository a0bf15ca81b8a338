"""``dynwf serve``, the production host (docs/semantics.md §7.4), as real processes: started on a
free port, polled with a deadline until ready, driven over HTTP, stopped by a signal.

What is checked is what an operator sees: the health, readiness and metrics endpoints (and
that the figures move when a workflow runs), the admin token rule, every stderr line a JSON
object, the graceful stop (exit 0, every lease handed back, another host finishes the work), and
the refusal to run tenant code with weakened isolation unless told to.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dev_harness import DYNWF, copy_hello, free_port
from dynwf_cli.app import app
from emulator.isolates.sandbox import Layers, missing_layers

QUICK = '''
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("one")
        async def one():
            return 1

        @step.do("two")
        async def two():
            return 2

        return await one() + await two()


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        instance = await self.env.WORKFLOWS.create({"params": {}})
        return Response.json({"id": instance.id})
'''

#: Each step takes STEP_S, so a SIGTERM always lands while one is in flight.
SLOW = '''
import asyncio

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        total = 0
        for index in range(3):
            @step.do(f"part-{index}")
            async def part():
                await asyncio.sleep(1.5)
                return index
            total += await part()
        return total


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        instance = await self.env.WORKFLOWS.create({"params": {}})
        return Response.json({"id": instance.id})
'''

#: One step that outlasts any test: a drain can only end by its bound or a second signal.
STUCK = SLOW.replace("range(3)", "range(1)").replace("asyncio.sleep(1.5)", "asyncio.sleep(120)")

TOKEN = "s3cret-admin-token"
#: Where this machine lacks a layer, tests that are not about isolation allow it.
WEAK = ["--allow-weak-isolation"] if missing_layers(Layers.from_environment()) else []


def project_with_tenants(tmp_path: Path) -> Path:
    project = copy_hello(tmp_path)
    for name, code in (("quick", QUICK), ("slow", SLOW), ("stuck", STUCK)):
        (project / "tenants" / name).mkdir()
        (project / "tenants" / name / "index.py").write_text(code, encoding="utf-8")
    return project


class Serve:
    """A ``dynwf serve`` process; its stderr (the JSON log) is collected line by line."""

    def __init__(self, project: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items()
                   if k not in ("DYNWF_STATE_DIR", "DYNWF_ADMIN_TOKEN", "DYNWF_WEAKEN_ISOLATION")}
        environ.update(env or {})
        self.proc = subprocess.Popen(
            [str(DYNWF), "serve", "--config", str(project / "wrangler.jsonc"),
             "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ, cwd=project)
        self.lines: list[str] = []
        self.stdout: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stderr, self.lines),
                                          daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout),
                                          daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def wait_ready(self, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.get("/readyz", allow_refused=True)
            if status == 200:
                return body
            if time.monotonic() > deadline:
                raise AssertionError("dynwf serve did not become ready:\n" + "\n".join(self.lines))
            try:  # the pause between polls, which also notices a server that died
                self.proc.wait(timeout=0.05)
                raise AssertionError("dynwf serve exited:\n" + "\n".join(self.lines))
            except subprocess.TimeoutExpired:
                pass

    def request(self, path: str, *, method: str = "GET", body: Any = None,
                headers: dict[str, str] | None = None,
                allow_refused: bool = False) -> tuple[int, bytes, dict[str, str]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"content-type": "application/json",
                                                  **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)
        except (urllib.error.URLError, ConnectionError):
            if allow_refused:
                return 0, b"", {}
            raise

    def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, raw, _ = self.request(path, **kwargs)
        return status, json.loads(raw) if raw.startswith(b"{") else raw.decode()

    def create(self, tenant: str) -> str:
        status, raw, _ = self.request("/", method="POST", body={}, headers={"x-tenant-id": tenant})
        assert status == 200, raw
        return json.loads(raw)["id"]

    def metrics(self) -> dict[str, float]:
        status, text = self.get("/metrics")
        assert status == 200
        return parse_metrics(text)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=60)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def parse_metrics(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of the Prometheus text format (comments left out)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def wait_until(predicate, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def rows(project: Path) -> dict[str, tuple[str, str | None]]:
    with closing(sqlite3.connect(project / ".dynwf" / "state.sqlite")) as conn:
        return {r[0]: (r[1], r[2]) for r in
                conn.execute("SELECT id, status, lease_owner FROM instances")}


def steps_done(project: Path) -> dict[str, int]:
    with closing(sqlite3.connect(project / ".dynwf" / "state.sqlite")) as conn:
        return dict(conn.execute("SELECT instance_id, count(*) FROM steps WHERE status = 'done' "
                                 "GROUP BY instance_id"))


@pytest.fixture
def servers():
    started: list[Serve] = []
    yield started
    for server in started:
        server.kill()


def start(servers: list[Serve], project: Path, *args: str, **kwargs: Any) -> Serve:
    server = Serve(project, *args, **kwargs)
    servers.append(server)
    server.wait_ready()
    return server


# ---- the endpoints --------------------------------------------------------------------------------

def test_health_ready_and_metrics_move_when_a_workflow_runs(tmp_path, servers):
    """§7.4: /healthz says the process answers, /readyz that the database does and the server
    serves, /metrics counts what the engine did: steps committed, workflows completed, the step
    latency histogram, instances by status, isolates booted."""
    project = project_with_tenants(tmp_path)
    server = start(servers, project, *WEAK, env={"DYNWF_ADMIN_TOKEN": TOKEN})
    assert server.get("/healthz") == (200, {"status": "ok"})
    ready = server.get("/readyz")[1]
    assert ready["status"] == "ready" and ready["database"]["ok"] is True
    assert ready["draining"] is False
    assert ready["isolation"] == {"weakened": bool(WEAK), "missing": ready["isolation"]["missing"]}
    before = server.metrics()
    assert before["dynwf_steps_committed_total"] == 0
    assert before["dynwf_workflows_completed_total"] == 0
    assert before["dynwf_step_duration_seconds_count"] == 0

    ids = [server.create("quick") for _ in range(2)]
    done = wait_until(lambda: server.metrics()["dynwf_workflows_completed_total"] >= 2, 30)
    assert done, server.lines[-20:]
    after = server.metrics()
    assert after["dynwf_steps_committed_total"] == 4          # two steps in each of two runs
    assert after["dynwf_step_duration_seconds_count"] == 4
    assert after['dynwf_instances{status="complete"}'] == 2
    assert after['dynwf_instances{status="running"}'] == 0
    assert after["dynwf_isolate_boots_total"] >= 1
    assert after["dynwf_isolates_live"] >= 1
    assert after["dynwf_lease_takeovers_total"] == 0
    assert after['dynwf_database_seconds_count{operation="group_commit"}'] > 0
    assert after['dynwf_database_seconds_count{operation="probe"}'] >= 1   # the /readyz probes
    assert after["dynwf_draining"] == 0
    assert after[f'dynwf_isolation_weakened{{missing="{",".join(sorted(ready["isolation"]["missing"]))}"}}'] \
        == (1 if WEAK else 0)

    # the admin API: the token on every request, reads too
    status, body, headers = server.request("/__dynwf/api/instances")
    assert status == 401 and json.loads(body)["error"]["code"] == "admin.token"
    assert "Bearer" in headers.get("www-authenticate", "")
    assert server.request("/__dynwf/api/instances",
                          headers={"authorization": "Bearer wrong"})[0] == 401
    status, body, _ = server.request("/__dynwf/api/instances",
                                     headers={"authorization": f"Bearer {TOKEN}"})
    assert status == 200
    listed = {row["id"]: row["status"] for row in json.loads(body)}
    assert sorted(listed.values()) == ["complete", "complete"] and len(listed) == len(ids)
    basic = base64.b64encode(f"admin:{TOKEN}".encode()).decode()
    status, page, _ = server.request("/__dynwf/", headers={"authorization": f"Basic {basic}"})
    assert status == 200 and b"<html" in page.lower()
    assert b'href="#/playground"' not in page and b'content="off"' in page   # no tab to a 404
    assert server.request("/__dynwf/")[0] == 401
    # no playground in production
    assert server.request("/__dynwf/api/playground/sample",
                          headers={"authorization": f"Bearer {TOKEN}"})[0] == 404

    assert server.stop() == 0
    records = server.records()              # every stderr line is one JSON object
    assert records and all({"time", "level", "event"} <= set(r) for r in records)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"]) for r in records)
    assert not any("\x1b[" in line for line in server.lines)
    events = [r["event"] for r in records]
    assert events[0] == "server.started" and events[-1] == "server.stopped"
    assert records[0]["admin_api"] is True
    requests = [r for r in records if r["event"] == "http.request"]
    assert {"method", "path", "status", "duration_ms"} <= set(requests[0])
    assert any(r["path"] == "/metrics" and r["status"] == 200 for r in requests)
    assert any(r["path"] == "/__dynwf/api/instances" and r["status"] == 401 for r in requests)
    assert all(r["duration_ms"] >= 0 for r in requests)
    statuses = [(r["instance"], r["status"]) for r in records if r["event"] == "instance.status"]
    assert {s for _, s in statuses} >= {"queued", "running", "complete"}
    assert server.stdout == []


def test_without_a_token_the_admin_api_is_not_mounted_and_the_rest_is_served(tmp_path, servers):
    """§7.4: on loopback serve starts without a token; the admin API and the dashboard then
    answer 404 serve.admin_off, and the dispatcher, /healthz, /readyz and /metrics are served."""
    project = project_with_tenants(tmp_path)
    server = start(servers, project, *WEAK)
    for path in ("/__dynwf/api/instances", "/__dynwf/"):
        status, body = server.get(path, headers={"authorization": f"Bearer {TOKEN}"})
        assert status == 404 and body["error"]["code"] == "serve.admin_off"
        assert "DYNWF_ADMIN_TOKEN" in body["error"]["hint"]
    assert server.create("quick")
    assert server.get("/healthz")[0] == 200
    assert server.stop() == 0
    assert server.records()[0]["admin_api"] is False


def test_a_token_file_is_read_and_stripped(tmp_path, servers):
    project = project_with_tenants(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n", encoding="utf-8")
    server = start(servers, project, *WEAK, "--admin-token-file", str(token_file))
    assert server.request("/__dynwf/api/instances",
                          headers={"authorization": f"Bearer {TOKEN}"})[0] == 200
    assert server.request("/__dynwf/api/instances")[0] == 401
    assert server.stop() == 0


# ---- refusals -------------------------------------------------------------------------------------

def run_serve(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("DYNWF_STATE_DIR", "DYNWF_ADMIN_TOKEN", "DYNWF_WEAKEN_ISOLATION")}
    environ.update(env or {})
    return subprocess.run([str(DYNWF), "serve", "--config", str(project / "wrangler.jsonc"),
                           "--port", str(free_port()), *args],
                          capture_output=True, text=True, env=environ, cwd=project, timeout=60)


def test_beyond_loopback_without_a_token_it_refuses_with_exit_2(tmp_path):
    """§7.4: listening on every interface needs an admin token; the error names both ways."""
    project = project_with_tenants(tmp_path)
    result = run_serve(project, "--ip", "0.0.0.0", *WEAK)
    assert result.returncode == 2, result.stderr
    assert "serve.token_required" in result.stderr
    assert "DYNWF_ADMIN_TOKEN" in result.stderr and "--admin-token-file" in result.stderr
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    result = run_serve(project, "--ip", "0.0.0.0", "--admin-token-file", str(empty), *WEAK)
    assert result.returncode == 2 and "serve.token_file" in result.stderr
    assert "empty" in result.stderr


def test_weakened_isolation_is_refused_unless_allowed_and_then_said_everywhere(tmp_path, servers):
    """§7.4: a missing kernel layer refuses the start; --allow-weak-isolation starts anyway and
    says so in the log, in /readyz and in /metrics."""
    project = project_with_tenants(tmp_path)
    weaken = {"DYNWF_WEAKEN_ISOLATION": "seccomp"}
    result = run_serve(project, env=weaken)
    assert result.returncode == 1, result.stderr
    assert "serve.weak_isolation" in result.stderr and "seccomp" in result.stderr
    assert "--allow-weak-isolation" in result.stderr

    server = start(servers, project, "--allow-weak-isolation", env=weaken)
    ready = server.get("/readyz")[1]
    assert ready["isolation"]["weakened"] is True and "seccomp" in ready["isolation"]["missing"]
    metrics = server.metrics()
    weakened = {k: v for k, v in metrics.items() if k.startswith("dynwf_isolation_weakened")}
    assert len(weakened) == 1
    (label, value), = weakened.items()
    assert value == 1 and "seccomp" in label
    assert server.stop() == 0
    warnings = [r for r in server.records() if r["event"] == "isolation.weakened"]
    assert warnings and warnings[0]["level"] == "warning" and "seccomp" in warnings[0]["missing"]


# ---- the graceful stop ----------------------------------------------------------------------------

def test_sigterm_drains_steps_in_flight_hands_leases_back_and_another_host_finishes(tmp_path,
                                                                                    servers):
    """§7.4: on SIGTERM /readyz turns 503 (draining) while the steps in flight commit; the
    process exits 0 with no instance leased, and a second serve completes every instance
    without running a committed step again."""
    project = project_with_tenants(tmp_path)
    first = start(servers, project, *WEAK, "--drain-timeout", "20")
    ids = [first.create("slow") for _ in range(2)]
    running = wait_until(lambda: sum(1 for s, _ in rows(project).values() if s == "running") == 2
                         and first.metrics()["dynwf_lifetimes_live"] == 2, 30)
    assert running, first.lines[-20:]
    first.proc.send_signal(signal.SIGTERM)
    status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(
        first.get("/readyz", allow_refused=True)), 10) or (None, None)
    assert status == 503 and body["draining"] is True
    assert any("draining" in reason for reason in body["reasons"])
    assert first.proc.wait(timeout=60) == 0
    for reader in first._readers:
        reader.join(timeout=10)
    left = rows(project)
    assert len(left) == 2
    assert all(owner is None for _, owner in left.values()), left
    assert all(status in ("queued", "complete") for status, _ in left.values()), left
    records = first.records()
    drained = next(r for r in records if r["event"] == "shutdown.drained")
    assert drained["complete"] is True and drained["steps_cut_off"] == 0
    stopped = records[-1]
    assert stopped["event"] == "server.stopped" and stopped["signal"] == "SIGTERM"
    committed_before = steps_done(project)
    assert sum(committed_before.values()) >= 2      # each step in flight at SIGTERM committed

    second = start(servers, project, *WEAK)
    finished = wait_until(lambda: all(s == "complete" for s, _ in rows(project).values()), 60)
    assert finished, second.lines[-20:]
    assert steps_done(project) == {key: 3 for key in rows(project)}
    started_again = [r for r in second.records() if r["event"] == "instance.status"
                     and r["status"] == "running"]
    assert len(started_again) == len(ids)
    # the second host ran only the steps the first had not committed
    second_metrics = second.metrics()
    assert second_metrics["dynwf_steps_committed_total"] == 6 - sum(committed_before.values())
    assert second_metrics["dynwf_lease_takeovers_total"] == 0   # handed back, not taken over
    assert second.stop() == 0


def test_a_second_sigterm_stops_waiting_for_the_steps_in_flight(tmp_path, servers):
    """§7.4: a step that outlasts the drain is cut off when a second signal comes: exit 0 at
    once, the lease handed back, the step not committed (the next host runs it again)."""
    project = project_with_tenants(tmp_path)
    server = start(servers, project, *WEAK, "--drain-timeout", "300")
    server.create("stuck")
    assert wait_until(lambda: server.metrics()["dynwf_lifetimes_live"] == 1, 30)
    server.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: server.get("/readyz", allow_refused=True)[0] == 503, 10)
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 30
    (status, owner), = rows(project).values()
    assert (status, owner) == ("queued", None)
    assert steps_done(project) == {}
    records = server.records()
    assert any(r["event"] == "shutdown.forced" for r in records)
    drained = next(r for r in records if r["event"] == "shutdown.drained")
    assert drained["complete"] is False and drained["steps_cut_off"] == 1


def test_a_host_killed_mid_run_has_its_instances_taken_over_when_the_lease_expires(tmp_path,
                                                                                 servers):
    """§7.4: a host that dies without stopping keeps its leases until they expire; then another
    host claims the instances, counts each as a lease takeover and logs it."""
    project = project_with_tenants(tmp_path)
    first = start(servers, project, *WEAK)
    instance = first.create("slow")
    assert wait_until(lambda: first.metrics()["dynwf_lifetimes_live"] == 1, 30)
    first.kill()
    (status, owner), = rows(project).values()
    assert status == "running" and owner is not None

    second = start(servers, project, *WEAK)
    taken = wait_until(lambda: second.metrics()["dynwf_lease_takeovers_total"] == 1, 30)
    assert taken, second.lines[-20:]
    assert wait_until(lambda: all(s == "complete" for s, _ in rows(project).values()), 60)
    assert second.stop() == 0
    takeovers = [r for r in second.records() if r["event"] == "lease.takeover"]
    assert [(r["instance"].endswith(instance), r["previous_owner"]) for r in takeovers] \
        == [(True, owner)]


def test_help_names_the_endpoints_the_token_rule_and_examples():
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for text in ("/healthz", "/readyz", "/metrics", "DYNWF_ADMIN_TOKEN", "--admin-token-file",
                 "--allow-weak-isolation", "--drain-timeout", "Examples", "dynwf serve --ip"):
        assert text in result.output, text

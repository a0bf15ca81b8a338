"""Three ``dynwf serve`` hosts on one PostgreSQL schema, killed, cut off and restarted while they
work (docs/reliability.md, "PostgreSQL: engines on many hosts"; docs/semantics.md §7.4, §4.4).

The project is the dev crash test's (``crash_project.py``): twenty tenants, plain, retrying,
sleeping and event-waiting workflows, every step body asking the witness (in the host that runs
it, reading the shared database on a connection of its own) whether its step is already
committed. A client creates instances through the hosts in turn and sends each event through
another host than the one it created the instance through. Three phases, all with work running:

1. random hosts are SIGKILLed and restarted; after its lease time no instance still names a
   killed host as the one running it (another host took each over);
2. one host's database connections are cut (``pg_terminate_backend`` of every backend carrying
   its ``application_name``): it stops writing, says its wake-ups were lost, reconnects, and
   goes on committing steps;
3. a rolling restart: each host in turn is stopped with SIGTERM (exit 0) and started again.

At the end every instance is ``complete`` with its output, each step has one row, ``done``; no
step body ran after its step was committed; no timer is left. ``DYNWF_CLUSTER_WORKFLOWS`` sets
the number of workflows (300 by default; docs/reliability.md has a run with 1,000).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from postgres_db import require_psycopg

psycopg = require_psycopg()

from crash_project import (FINISHED, LOG_ENV, Client, Planned, check_nothing_lost,  # noqa: E402
                           exec_count, in_background, plan, write_project)
from emulator.defaults import LEASE_MS  # noqa: E402
from proc_workflows import wait_until  # noqa: E402
from test_serve import WEAK, Serve, parse_metrics  # noqa: E402

WORKFLOWS = int(os.environ.get("DYNWF_CLUSTER_WORKFLOWS", "300"))
HOSTS = 3
KILLS = int(os.environ.get("DYNWF_CLUSTER_KILLS", "4"))
DEADLINE_S = 240 + WORKFLOWS // 4


class Host:
    """One of the cluster's hosts: a ``dynwf serve`` process started again after each stop,
    always under the same ``application_name``."""

    def __init__(self, index: int, project: Path, url: str, log: Path) -> None:
        self.index, self.project = index, project
        self.name = f"cluster-host{index}"
        self.env = {"DYNWF_DATABASE_URL": f"{url}&application_name={self.name}",
                    LOG_ENV: str(log)}
        self.proc: Serve | None = None
        self.owners: list[str] = []          # the engine id of each incarnation
        self.past: list[dict[str, Any]] = []  # the log records of earlier incarnations

    def start(self) -> None:
        if self.proc is not None:
            self.past += self.proc.records()
        self.proc = Serve(self.project, *WEAK, env=self.env)
        self.proc.wait_ready(60)
        started = wait_until(lambda: [r for r in self.proc.records()
                                      if r["event"] == "server.started"], 10)
        self.owners.append(started[0]["engine"])

    @property
    def url(self) -> str | None:
        return self.proc.url if self.proc is not None else None

    def events(self, name: str, *, every_incarnation: bool = False) -> list[dict[str, Any]]:
        records = (self.past if every_incarnation else []) + \
            (self.proc.records() if self.proc else [])
        return [r for r in records if r["event"] == name]


class ClusterClient(Client):
    """The crash tests' client over several hosts: an instance is created through host
    ``n % 3`` and its event sent through host ``(n + 1) % 3``; a request to a host that is down
    goes to the next one."""

    def __init__(self, hosts: list[Host]) -> None:
        super().__init__()
        self.hosts = hosts
        self.down: set[int] = set()

    def post(self, planned: Planned, path: str, body: dict[str, Any], deadline: float) -> Any:
        first = (planned.n + (1 if path == "/event" else 0)) % len(self.hosts)
        tries = 0
        while True:
            for offset in range(len(self.hosts)):
                index = (first + offset) % len(self.hosts)
                url = self.hosts[index].url
                if index in self.down or url is None:
                    continue
                request = urllib.request.Request(
                    url + path, data=json.dumps(body).encode(), method="POST",
                    headers={"content-type": "application/json", "x-tenant-id": planned.tenant})
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        return json.loads(response.read())
                except urllib.error.HTTPError as exc:
                    answer = exc.read()
                    if exc.code not in (500, 503) or (exc.code == 500 and b"isolate." not in answer
                                                      and b"database." not in answer):
                        raise AssertionError(f"{path} {body}: {exc.code} {answer[:300]!r}")
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    pass                      # the host was killed under the request
                tries += 1
                if tries == 1:
                    with self.lock:
                        self.retried += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} {body}: no host answered before the deadline")
            time.sleep(0.05)                  # the pause before retrying against restarted hosts


@pytest.fixture
def cluster(tmp_path, postgres_database):
    project = write_project(tmp_path / "crash-project")
    url = postgres_database.url()
    hosts = [Host(i, project, url, tmp_path / "witness.log") for i in range(HOSTS)]
    yield hosts, url, tmp_path / "witness.log"
    for host in hosts:
        if host.proc is not None:
            host.proc.kill()


def test_three_serve_hosts_killed_cut_off_and_restarted_lose_nothing(cluster):
    hosts, url, log = cluster
    rng = random.Random(19_000)
    admin = psycopg.connect(url.split("?")[0], autocommit=True,
                            options=f"-c search_path={url.split('schema=')[1]}")
    planned = plan(WORKFLOWS)
    client = ClusterClient(hosts)
    started = time.monotonic()
    deadline = started + DEADLINE_S
    for host in hosts:
        host.start()
    waves = [planned[: WORKFLOWS * 6 // 10], planned[WORKFLOWS * 6 // 10: WORKFLOWS * 8 // 10],
             planned[WORKFLOWS * 8 // 10:]]
    late: list[Planned] = []           # waiters whose event is sent in a later phase

    def launch(wave: list[Planned]) -> Any:
        jobs = []
        for item in wave:
            now = item.kind == "waiter" and rng.random() < 0.5
            if item.kind == "waiter" and not now:
                late.append(item)
            jobs.append(lambda item=item, now=now: _create(client, item, now, deadline))
        return in_background(jobs)

    # ---- 1. SIGKILLs of random hosts, each restarted ----------------------------------------
    waits = [launch(waves[0])]
    killed: list[tuple[str, float]] = []       # (the dead engine's id, when)
    during_work = 0
    for _ in range(KILLS):
        before = exec_count(log)
        wait_until(lambda before=before: exec_count(log) > before, timeout=10)
        time.sleep(rng.uniform(0.3, 2.0))      # the random moment itself, not a wait for a result
        victim = hosts[rng.randrange(HOSTS)]
        client.down.add(victim.index)
        victim.proc.kill()
        killed.append((victim.owners[-1], time.monotonic()))
        if _unfinished(admin):
            during_work += 1
        victim.start()
        client.down.discard(victim.index)
    # after its lease time, nothing still names a killed host as its runner: taken over
    for owner, when in killed:
        remaining = max(0.0, when + LEASE_MS / 1000 - time.monotonic())
        stuck = wait_until(lambda owner=owner: _leased_to(admin, owner) == 0, remaining + 15)
        assert stuck is not None and _leased_to(admin, owner) == 0, \
            f"instances still leased to the killed engine {owner}"

    phases = [("kills", time.monotonic() - started)]
    # ---- 2. one host's database connections cut ------------------------------------------------
    waits.append(launch(waves[1]))
    waits.append(in_background([lambda item=item: client.send_event(item, deadline)
                                for item in late[: len(late) // 2]]))
    wait_until(lambda: exec_count(log) > 0, 10)
    cut_host = hosts[1]
    committed_before = _steps_committed(cut_host)
    lost_before = len(cut_host.events("wakeups.lost"))
    cut = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = %s", (cut_host.name,)).fetchone()[0]
    assert cut >= 2, f"only {cut} backends of {cut_host.name} were found"
    assert wait_until(lambda: len(cut_host.events("wakeups.lost")) > lost_before, 10), \
        "the cut host never said it lost its wake-ups"
    assert wait_until(lambda: len(cut_host.events("wakeups.listening")) > lost_before + 1, 15), \
        "the cut host never listened again"
    assert wait_until(lambda: _steps_committed(cut_host) > committed_before, 30), \
        "the cut host never committed a step again"
    assert cut_host.proc.get("/readyz")[0] == 200
    metrics = parse_metrics(cut_host.proc.get("/metrics")[1])
    assert metrics["dynwf_wakeups_listening"] == 1 and metrics["dynwf_wakeups_lost_total"] >= 1

    phases.append(("cut", time.monotonic() - started))
    # ---- 3. a rolling restart, while work runs -------------------------------------------------
    waits.append(launch(waves[2]))
    waits.append(in_background([lambda item=item: client.send_event(item, deadline)
                                for item in late[len(late) // 2:]]))
    exits, unfinished_at_stop = [], []
    for host in hosts:
        client.down.add(host.index)
        unfinished_at_stop.append(_unfinished(admin))
        exits.append(host.proc.stop(signal.SIGTERM))
        host.start()
        client.down.discard(host.index)
    phases.append(("rolling restart", time.monotonic() - started))
    for wait in waits:
        wait(max(1.0, deadline - time.monotonic()))
    phases.append(("requests answered", time.monotonic() - started))
    for item in late:                 # waiters planned for phase 2/3 after their create
        if item.id not in client.sent:
            client.send_event(item, deadline)
    finished = wait_until(lambda: _all_finished(admin, WORKFLOWS),
                          timeout=max(1.0, deadline - time.monotonic()))
    seconds = time.monotonic() - started
    takeovers = sum(len(h.events("lease.takeover", every_incarnation=True)) for h in hosts)
    print(f"\nphases ended at (s): {[(name, round(at, 1)) for name, at in phases]}")
    stuck = [(r, list(admin.execute("SELECT kind, name, status FROM steps WHERE instance_id = %s "
                                     "ORDER BY seq", (r[0],))),
              list(admin.execute("SELECT kind, due FROM timers WHERE instance_id = %s", (r[0],))),
              list(admin.execute("SELECT type FROM events WHERE instance_id = %s", (r[0],))))
             for r in admin.execute("SELECT id, status, lease_owner FROM instances WHERE status "
                                    "NOT IN ('complete', 'errored', 'terminated')")][:5]
    rows = {r[0]: r[1:] for r in admin.execute("SELECT id, status, output, error FROM instances")}
    steps = Counter(admin.execute("SELECT instance_id, kind, name, count, status FROM steps"))
    timers = admin.execute("SELECT count(*) FROM timers").fetchone()[0]
    admin.close()

    assert finished, f"not finished: {Counter(r[0] for r in rows.values())}: {stuck}"
    assert exits == [0] * HOSTS, exits
    assert during_work >= KILLS - 1, during_work
    assert unfinished_at_stop[0] > 0, "the rolling restart began with no work running"
    figures = check_nothing_lost(rows, steps, timers, log, planned, client)
    print(f"\ncluster: {WORKFLOWS} workflows over 20 tenants on {HOSTS} serve hosts, {KILLS} "
          f"SIGKILLs ({during_work} during work, {takeovers} lease takeovers), {cut} backends "
          f"of one host cut, a rolling restart ({unfinished_at_stop} unfinished at each "
          f"SIGTERM); {seconds:.1f}s; {figures}; {client.retried} requests retried on another "
          f"host")


# ---- helpers -------------------------------------------------------------------------------------

def _create(client: ClusterClient, item: Planned, with_event: bool, deadline: float) -> None:
    client.create(item, deadline)
    if with_event:
        client.send_event(item, deadline)


def _unfinished(admin: Any) -> int:
    return admin.execute("SELECT count(*) FROM instances WHERE status NOT IN "
                         "('complete', 'errored', 'terminated')").fetchone()[0]


def _all_finished(admin: Any, count: int) -> bool:
    statuses = [r[0] for r in admin.execute("SELECT status FROM instances")]
    return len(statuses) == count and all(s in FINISHED for s in statuses)


def _leased_to(admin: Any, owner: str) -> int:
    """Instances a live lifetime of ``owner`` would be running (its lease, a live status)."""
    return admin.execute("SELECT count(*) FROM instances WHERE lease_owner = %s AND status IN "
                         "('running', 'waitingForPause')", (owner,)).fetchone()[0]


def _steps_committed(host: Host) -> float:
    return parse_metrics(host.proc.get("/metrics")[1]).get("dynwf_steps_committed_total", 0.0)



"""Crash consistency of a real ``dynwf dev`` process (docs/reliability.md).

500 instances across 20 tenants (plain steps, a step that fails its first attempt, real sleeps,
event waits) are created through the dispatcher over HTTP while, in one test, the dev process is
SIGKILLed at random moments and restarted 10 times, and in the other, the isolate running a
tenant's steps is SIGKILLed 10 times under a dev process that stays up. In both, at the end every
instance is ``complete`` with its output, every step has exactly one row and it is ``done``, no
step body ran after its own step was committed (each body asks, through the dispatcher's witness,
before its work), no timer is left, and the database passes ``PRAGMA integrity_check``.

Attempts cut off by a kill run again (at-least-once); the tests count them. ``DYNWF_CRASH_SOAK=N``
multiplies the instances and the kills for a longer run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from crash_project import (FINISHED, LOG_ENV, Client, Log, Planned, check_nothing_lost, connect,
                           exec_count, in_background, plan, statuses, write_project)
from dev_harness import alive, descendants, start
from proc_workflows import wait_until

SOAK = int(os.environ.get("DYNWF_CRASH_SOAK", "1"))
INSTANCES = 500 * SOAK
KILLS = 10 * SOAK
DEADLINE_S = 120 * SOAK


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "witness.log"))
    return write_project(tmp_path / "crash-project")


def test_dev_process_sigkilled_at_random_moments_loses_nothing(project, tmp_path, servers):
    rng = random.Random(8_500)
    log, db = tmp_path / "witness.log", project / ".dynwf" / "state.sqlite"
    planned = plan(INSTANCES)
    # half in a burst for the first incarnation, the rest in a wave per later one, so that every
    # incarnation has work in flight when it is killed
    half = len(planned) // 2
    waves = [planned[:half]] + [planned[half + i::KILLS - 1] for i in range(KILLS - 1)]
    late: dict[int, list[Planned]] = {}      # round -> waiters whose event is sent then
    client, waits = Client(), []
    kills_during_work, orphans = 0, set()
    started = time.monotonic()
    deadline = started + DEADLINE_S
    for round_ in range(KILLS):
        dev = start(servers, project)
        client.url = dev.url
        jobs = []
        for item in waves[round_]:
            # half the events follow their create at once (buffered until the wait asks), half
            # two rounds later (delivered to a waiting step, perhaps one a dead process held)
            now = item.kind == "waiter" and rng.random() < 0.5
            jobs.append(lambda item=item, now=now: _create(client, item, now, deadline))
            if item.kind == "waiter" and not now:
                late.setdefault(min(round_ + 2, KILLS), []).append(item)
        jobs += [lambda item=item: client.send_event(item, deadline) for item in late.pop(round_, [])]
        waits.append(in_background(jobs))
        # a random moment once this incarnation has begun running step bodies
        before = exec_count(log)
        worked = wait_until(lambda before=before: exec_count(log) > before, timeout=10)
        time.sleep(rng.uniform(0.05, 0.6))  # the random moment itself, not a wait for a result
        family = descendants(dev.proc.pid)
        client.url = None
        dev.kill()
        if worked and any(s not in FINISHED for s in statuses(db).values()):
            kills_during_work += 1
        # no isolate (nor the zygote) outlives the process it served
        orphans |= {pid for pid in family if wait_until(lambda pid=pid: not alive(pid), 10) is False}

    final = start(servers, project)
    client.url = final.url
    for job in late.pop(KILLS, []):
        client.send_event(job, deadline)
    for wait in waits:
        wait(max(1.0, deadline - time.monotonic()))
    finished = wait_until(lambda: len(statuses(db)) == INSTANCES
                          and all(s in FINISHED for s in statuses(db).values()),
                          timeout=max(1.0, deadline - time.monotonic()))
    assert final.stop(signal.SIGTERM) == 0
    seconds = time.monotonic() - started

    assert not orphans, f"processes outlived a killed dev server: {sorted(orphans)}"
    assert finished, f"not finished: {Counter(statuses(db).values())}"
    assert kills_during_work >= KILLS - 2, kills_during_work
    figures = _assert_nothing_lost(db, log, planned, client)
    print(f"\ndev process: {INSTANCES} instances over 20 tenants, {KILLS} SIGKILLs "
          f"({kills_during_work} during work), {seconds:.1f}s; {figures}; "
          f"{client.retried} requests retried after a kill cut them off")


def test_isolates_sigkilled_at_random_moments_lose_nothing(project, tmp_path, servers):
    rng = random.Random(8_600)
    log, db = tmp_path / "witness.log", project / ".dynwf" / "state.sqlite"
    planned = plan(INSTANCES)
    client = Client()
    started = time.monotonic()
    deadline = started + DEADLINE_S
    dev = start(servers, project)
    client.url = dev.url
    soon = [p for p in planned if p.kind == "waiter" and rng.random() < 0.5]
    # one wave of creates per kill, so that every kill finds step bodies running
    waves = [planned[i::KILLS] for i in range(KILLS)]
    waits = []
    killed: list[tuple[int, bool]] = []      # (pid, had a step body in flight)
    for wave in waves:
        waits.append(in_background([lambda item=item: _create(client, item, item in soon, deadline)
                                    for item in wave]))
        time.sleep(rng.uniform(0.0, 0.1))    # the random moment itself, not a wait for a result
        family = descendants(dev.proc.pid)
        done = {p for p, _ in killed}
        victim = wait_until(lambda family=family, done=done: _busy_isolate(
            Log.read(log), family, done, in_flight_only=True), timeout=5) \
            or _busy_isolate(Log.read(log), family, done)
        if victim is None:
            continue
        pid, in_flight = victim
        os.kill(pid, signal.SIGKILL)
        killed.append((pid, in_flight))
        assert wait_until(lambda pid=pid: not alive(pid), 10), f"isolate {pid} survived SIGKILL"
    for wait in waits:
        wait(max(1.0, deadline - time.monotonic()))
    later = in_background([lambda item=item: client.send_event(item, deadline)
                           for item in planned if item.kind == "waiter" and item not in soon])
    later(max(1.0, deadline - time.monotonic()))
    finished = wait_until(lambda: all(s in FINISHED for s in statuses(db).values()),
                          timeout=max(1.0, deadline - time.monotonic()))
    health = json.loads(_get(dev.url + "/__dynwf/health"))
    assert dev.stop(signal.SIGTERM) == 0
    seconds = time.monotonic() - started

    assert finished, f"not finished: {Counter(statuses(db).values())}"
    assert len(killed) == KILLS, f"found a busy isolate to kill only {len(killed)} times"
    assert sum(in_flight for _, in_flight in killed) >= KILLS - 2, killed
    # every killed isolate was replaced by a fresh one loaded through the loader's callback
    assert health["isolate_loads"] >= len({p.tenant for p in planned}) + len(killed)
    figures = _assert_nothing_lost(db, log, planned, client)
    print(f"\nisolates: {INSTANCES} instances over 20 tenants, {len(killed)} isolate SIGKILLs "
          f"({sum(f for _, f in killed)} with a step body in flight), {seconds:.1f}s; {figures}; "
          f"{health['isolate_loads']} isolate loads; {client.retried} requests retried")


# ---- helpers ------------------------------------------------------------------------------------

def _create(client: Client, item: Planned, with_event: bool, deadline: float) -> None:
    client.create(item, deadline)
    if with_event:
        client.send_event(item, deadline)


def _busy_isolate(log: Log, family: set[int], done: set[int], *,
                  in_flight_only: bool = False) -> tuple[int, bool] | None:
    """The live isolate that most recently started a step body it has not ended (a kill then
    cuts off an attempt), else (unless ``in_flight_only``) the one that ran the latest body; and
    whether it has a body in flight."""
    began = Counter(log.pids)
    candidates = [pid for pid in dict.fromkeys(reversed(log.pids))
                  if pid in family and pid not in done and alive(pid)]
    for pid in candidates:
        if began[pid] > log.ended[pid]:
            return pid, True
    if in_flight_only or not candidates:
        return None
    return candidates[0], False


def _get(url: str) -> bytes:
    import urllib.request
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def _assert_nothing_lost(db: Path, log_path: Path, planned: list[Planned], client: Client) -> str:
    """The checks both tests share (``crash_project.check_nothing_lost``), on the state file."""
    with connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = {r[0]: r[1:] for r in conn.execute("SELECT id, status, output, error FROM instances")}
        steps = Counter(conn.execute("SELECT instance_id, kind, name, count, status FROM steps"))
        timers = conn.execute("SELECT count(*) FROM timers").fetchone()[0]
    return check_nothing_lost(rows, steps, timers, log_path, planned, client)

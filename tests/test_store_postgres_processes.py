"""Engine processes on one PostgreSQL database (docs/reliability.md, "PostgreSQL: engines on many
hosts"): a host whose clock is an hour ahead shares the work without taking a live lease, and a
host killed mid-run has its instances finished by the others, each instance run by one engine at
a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from postgres_db import require_psycopg

require_psycopg()

from emulator.engine import Control, SystemClock  # noqa: E402
from emulator.engine.stores import open_store  # noqa: E402
from pg_span_workflows import LOG_ENV, OWNER_ENV, STEPS  # noqa: E402

HOUR_MS = 3_600_000
INSTANCES = 30
SKEW_LEASE_MS = 5000


class Worker:
    def __init__(self, url: str, owner: str, folder: Path, log: Path, *, skew_ms: int = 0,
                 lease_ms: int = 1000) -> None:
        self.owner, self.out = owner, folder / f"{owner}.out"
        env = dict(os.environ, **{LOG_ENV: str(log), OWNER_ENV: owner})
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
        with open(self.out, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "emulator.engine.worker", "--db", url, "--workflows",
                 "pg_span_workflows:WORKFLOWS", "--owner", owner, "--lease-ms", str(lease_ms),
                 "--poll-ms", "50", "--clock-skew-ms", str(skew_ms)],
                stdout=out, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while f"worker {self.owner} ready" not in self.out.read_text():
            assert self.process.poll() is None and time.monotonic() < deadline, self.out.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def spans(log: Path) -> dict[str, list[tuple[str, int, float, float]]]:
    by_instance = defaultdict(list)
    for line in log.read_text().splitlines():
        owner, instance, step, start, end = line.split()
        by_instance[instance].append((owner, int(step), float(start), float(end)))
    return by_instance


def overlaps(by_instance) -> list:
    found = []
    for instance, runs in by_instance.items():
        for i, a in enumerate(runs):
            for b in runs[i + 1:]:
                if a[0] != b[0] and a[2] < b[3] and b[2] < a[3]:
                    found.append((instance, a, b))
    return found


def run_to_end(store, seconds: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + seconds
    while True:
        statuses = {row.id: row.status for row in store.list_instances()}
        if set(statuses.values()) == {"complete"} or time.monotonic() > deadline:
            return statuses
        time.sleep(0.1)


@pytest.mark.parametrize("first_skew, second_skew", [(0, HOUR_MS), (-HOUR_MS, 0)],
                         ids=["newcomer-an-hour-ahead", "holder-an-hour-behind"])
def test_a_host_with_a_wrong_clock_neither_steals_nor_loses_leases(postgres_url, tmp_path,
                                                                    first_skew, second_skew):
    """The first engine runs a batch; a second engine starts while those leases are live. On
    a host's clock, an engine an hour ahead would find every lease expired and take it, and the
    leases of an engine an hour behind would read as expired an hour ago; on the database's
    clock, the first batch stays with its engine."""
    store, log = open_store(postgres_url), tmp_path / "spans.log"
    control = Control(store, SystemClock())
    # Leases of 5 s: room for a host that stalls on a loaded machine (one that stalls past its
    # lease loses it, and its step may run again elsewhere: at least once), and still nothing
    # beside the hour of skew the test is about.
    first = Worker(postgres_url, "first", tmp_path, log, skew_ms=first_skew, lease_ms=SKEW_LEASE_MS)
    workers = [first]
    try:
        first.wait_ready()
        control.create_batch("spans", [{"id": f"a{n}"} for n in range(INSTANCES)])
        wait_for_spans(log, INSTANCES)   # every instance of the batch has run a step
        second = Worker(postgres_url, "second", tmp_path, log, skew_ms=second_skew,
                        lease_ms=SKEW_LEASE_MS)
        workers.append(second)
        second.wait_ready()
        control.create_batch("spans", [{"id": f"b{n}"} for n in range(INSTANCES)])
        statuses = run_to_end(store)
    finally:
        for worker in workers:
            worker.stop()
    assert set(statuses.values()) == {"complete"}, statuses
    by_instance = spans(log)
    assert not overlaps(by_instance)
    assert all(len(runs) == STEPS for runs in by_instance.values())
    stolen = [i for i, runs in by_instance.items() if i.startswith("a")
              and {run[0] for run in runs} != {"first"}]
    assert not stolen, stolen
    store.close()


def wait_for_spans(log: Path, count: int) -> None:
    deadline = time.monotonic() + 30
    while not (log.exists() and log.read_text().count("\n") >= count):
        assert time.monotonic() < deadline, "the engine ran no steps"
        time.sleep(0.02)


def test_a_killed_host_s_instances_are_finished_by_another(postgres_url, tmp_path):
    store, log = open_store(postgres_url), tmp_path / "spans.log"
    doomed = Worker(postgres_url, "doomed", tmp_path, log)
    doomed.wait_ready()
    Control(store, SystemClock()).create_batch("spans", [{"id": f"i{n}"} for n in range(INSTANCES)])
    wait_for_spans(log, 10)
    doomed.process.send_signal(signal.SIGKILL)
    doomed.process.wait(timeout=30)
    survivor = Worker(postgres_url, "survivor", tmp_path, log)
    try:
        survivor.wait_ready()
        statuses = run_to_end(store)
    finally:
        survivor.stop()
    assert set(statuses.values()) == {"complete"}, statuses
    by_instance = spans(log)
    assert not overlaps(by_instance)
    for instance, runs in by_instance.items():   # each step committed once
        assert sorted({run[1] for run in runs}) == list(range(STEPS)), instance
        assert [s.status for s in store.list_steps(instance)] == ["done"] * STEPS
    assert any(run[0] == "survivor" for runs in by_instance.values() for run in runs)
    store.close()

"""Leases with real processes: two engine workers on one database file never run the same
instance at once, share the work between them, and keep to the ids they are given with
``--only`` (docs/semantics.md §9).

Every step body records the wall-clock interval it ran in and the engine it ran in; intervals
of one instance recorded by different engines must never overlap.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from emulator.engine import Control, Store, SystemClock
from proc_workflows import (EVENT_TYPE, KINDS, Worker, do_steps, event_payload, expected_output,
                            read_log, stuck_report, wait_finished)

PER_KIND = 50   # 200 instances

# Leases exclude only while their holder can renew them: an engine whose process stalls longer
# than its lease (a loaded machine, a slow fsync) loses the lease, and another engine may start
# the stalled engine's step while it still runs (at least once; only commits are fenced,
# docs/semantics.md §7.4). The exclusion test gives each lease room for such stalls; the
# takeover after a real loss is proven by the crash tests with the 1 s default of the harness.
EXCLUSION_LEASE_MS = 5000


def test_two_engines_share_the_work_and_never_run_one_instance_at_once(tmp_path):
    db, log = tmp_path / "engine.db", tmp_path / "steps.log"
    store = Store(db)
    control = Control(store, SystemClock())
    workers = [Worker(db, log, owner, tmp_path, lease_ms=EXCLUSION_LEASE_MS)
               for owner in ("engine-a", "engine-b")]
    try:
        for worker in workers:
            worker.wait_ready()
        started = time.monotonic()
        instances = _create(control)
        done, stuck = wait_finished(db, timeout=45)
        for worker in workers:
            assert worker.stop() == 0, worker.output()
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.kill()
    elapsed = time.monotonic() - started

    entries = read_log(log)
    assert not [e for e in entries if e.kind == "VIOLATION"]
    spans = defaultdict(list)
    for e in entries:
        if e.kind == "SPAN":
            spans[e.instance].append(e)
    overlaps = []
    for instance_id, runs in spans.items():
        for i, a in enumerate(runs):
            for b in runs[i + 1:]:
                if a.owner != b.owner and a.start < b.end and b.start < a.end:
                    overlaps.append((instance_id, (a.step, a.owner, a.start, a.end),
                                     (b.step, b.owner, b.start, b.end)))
    assert not overlaps, f"{len(overlaps)} overlapping runs by two engines: {overlaps[:5]}"

    assert not stuck, (f"{len(stuck)} instances stranded in 'waiting' with every step resolved "
                       f"and no timer left: {sorted(stuck)[:10]}\n{stuck_report(db)}")
    assert done, stuck_report(db)
    _assert_complete(control, instances, entries)
    per_engine = Counter(e.owner for e in entries if e.kind == "SPAN")
    assert set(per_engine) == {"engine-a", "engine-b"}, per_engine
    both = sum(1 for runs in spans.values() if len({r.owner for r in runs}) == 2)
    print(f"\n{len(instances)} instances in {elapsed:.1f}s; step executions per engine: "
          f"{dict(per_engine)}; {both} instances ran partly in each engine")
    store.close()


def test_only_keeps_each_instance_in_the_engine_it_was_given_to(tmp_path):
    db, log = tmp_path / "engine.db", tmp_path / "steps.log"
    store = Store(db)
    control = Control(store, SystemClock())
    ids = [f"{kind}-{n:03d}" for n in range(PER_KIND) for kind in KINDS]
    given = {"engine-a": ids[0::2], "engine-b": ids[1::2]}
    workers = [Worker(db, log, owner, tmp_path, only=only) for owner, only in given.items()]
    try:
        for worker in workers:
            worker.wait_ready()
        instances = _create(control)
        done, stuck = wait_finished(db, timeout=45)
        for worker in workers:
            assert worker.stop() == 0, worker.output()
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.kill()

    entries = read_log(log)
    ran_in = defaultdict(set)
    for e in entries:
        if e.kind in ("EXEC", "SPAN"):
            ran_in[e.instance].add(e.owner)
    engine_of = {i: owner for owner, only in given.items() for i in only}
    strays = {i: owners for i, owners in ran_in.items() if owners != {engine_of[i]}}
    assert not strays, f"instances run outside their engine: {dict(list(strays.items())[:10])}"

    assert not stuck, (f"{len(stuck)} instances stranded in 'waiting' with every step resolved "
                       f"and no timer left: {sorted(stuck)[:10]}\n{stuck_report(db)}")
    assert done, stuck_report(db)
    _assert_complete(control, instances, entries)
    store.close()


def _create(control: Control) -> dict[str, tuple[str, int]]:
    """Create the instances and send every waiter its event (some arrive before the wait asks)."""
    instances = {}
    for kind in KINDS:
        batch = [{"id": f"{kind}-{n:03d}", "params": {"n": n}} for n in range(PER_KIND)]
        for created, _id in control.create_batch(kind, batch):
            instances[created] = (kind, int(created.rsplit("-", 1)[1]))
    assert len(instances) == PER_KIND * len(KINDS)
    for instance_id, (kind, _) in instances.items():
        if kind == "waiter":
            control.send_event(instance_id, EVENT_TYPE, event_payload(instance_id))
    return instances


def _assert_complete(control: Control, instances: dict[str, tuple[str, int]], entries) -> None:
    for instance_id, (kind, n) in instances.items():
        assert control.status(instance_id) == {
            "status": "complete", "error": None,
            "output": expected_output(kind, n, instance_id)}, instance_id
    executed = {(e.instance, e.step) for e in entries if e.kind == "EXEC"}
    expected = {(i, s) for i, (kind, _) in instances.items() for s in do_steps(kind)}
    assert executed == expected, (sorted(expected - executed)[:10],
                                  sorted(executed - expected)[:10])

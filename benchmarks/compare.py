"""dynwf against its peers, same workloads, in alternating rounds of one invocation.

Each round runs every workload on every subject in turn (the order rotates each round), so a
burst of load from elsewhere on the machine hits all of them alike; each ratio is the median of
the per-round ratios, which is what survives a noisy machine. Figures:

- ``steps``: committed steps per second of one 100-step instance at a time;
- ``latency``: create-to-complete of a 3-step instance, one at a time (median over the pooled
  samples of all rounds; the ratio uses each round's median);
- ``throughput``: 3-step instances per second. dynwf: 2,000 created at once over 50 tenants (the
  throughput workload of docs/benchmarks.md). Peers: 16 concurrent clients each creating an
  instance and waiting for it, their best shape measured here (DBOS starts a thread per workflow;
  wrangler's local status has no push), with fewer instances so a round stays short.

The peers' processes stay idle while dynwf runs and the other way round.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.common import load_average, percentiles
from benchmarks.dynamic import DynwfSubject
from benchmarks.peers import start_peers

Log = Callable[[str], None]

#: per subject and workload: how much one round measures (quick, full)
SIZES = {
    "dynwf": {"latency": (100, 300), "steps": (5, 20), "throughput": (2000, 2000)},
    "dbos": {"latency": (15, 40), "steps": (1, 3), "throughput": (80, 300)},
    "wrangler": {"latency": (15, 40), "steps": (2, 5), "throughput": (80, 300)},
}
WORKLOADS = ("steps", "latency", "throughput")
HIGHER_IS_BETTER = {"steps": True, "latency": False, "throughput": True}


async def _measure(subject: Any, workload: str, size: int) -> tuple[float, list[float]]:
    """One round's figure (and, for latency, its samples)."""
    if workload == "latency":
        samples = await subject.latency(size)
        return statistics.median(samples), samples
    if workload == "steps":
        return await subject.steps_sequential(size), []
    return await subject.throughput(size), []


async def compare(quick: bool, peers_dir: Path | None, peer_names: list[str], log: Log,
                  rounds: int | None = None) -> dict[str, Any]:
    rounds = rounds or (2 if quick else 3)
    which = 0 if quick else 1
    dynwf = DynwfSubject(tenants=50)
    started = time.perf_counter()
    await dynwf.start()
    log(f"compare: dynwf host warm in {time.perf_counter() - started:.1f} s (50 tenants)")
    peers, peer_report = await start_peers(peers_dir, peer_names, log)
    subjects = [dynwf, *peers]
    per_round: dict[str, dict[str, list[float]]] = {s.name: {w: [] for w in WORKLOADS}
                                                   for s in subjects}
    samples: dict[str, list[float]] = {s.name: [] for s in subjects}
    failures: dict[str, str] = {}
    loads = []
    try:
        for round_no in range(rounds):
            order = subjects[round_no % len(subjects):] + subjects[:round_no % len(subjects)]
            loads.append(load_average())
            for workload in WORKLOADS:
                for subject in order:
                    if subject.name in failures:
                        continue
                    size = SIZES[subject.name][workload][which]
                    try:
                        value, values = await _measure(subject, workload, size)
                    except Exception as exc:  # a peer failing mid-run is reported, not fatal
                        if subject is dynwf:
                            raise
                        failures[subject.name] = f"{workload}: {type(exc).__name__}: {exc}"
                        log(f"compare: peer {subject.name} failed ({failures[subject.name]}); "
                            "dropped from the remaining rounds")
                        continue
                    per_round[subject.name][workload].append(value)
                    samples[subject.name] += values
                    log(f"compare: round {round_no + 1}/{rounds} {workload:10} {subject.name:8} "
                        f"{value:10.1f} {'ms' if workload == 'latency' else '/s'} (n={size})")
        concurrent = await dynwf.steps_concurrent(100, 10)   # the figure is 100 in flight
        log(f"compare: dynwf steps with 100-step instances in flight: {concurrent:.0f}/s")
        live = dynwf.live_isolates
        peer_rss = {}
        for peer in peers:
            try:
                rss = peer.rss_mb()
                peer_rss[peer.name] = round(await rss if hasattr(rss, "__await__") else rss, 1)
            except Exception:  # noqa: BLE001 - a memory reading is a detail, not a figure
                pass
    finally:
        for peer in peers:
            await peer.close()
        await dynwf.close()

    def figure(name: str) -> dict[str, Any]:
        rounds_of = per_round[name]
        out: dict[str, Any] = {
            "steps_per_s": _median(rounds_of["steps"]),
            "latency_3_steps": percentiles(samples[name]),
            "workflows_per_s": _median(rounds_of["throughput"]),
            "rounds": {w: [round(v, 2) for v in rounds_of[w]] for w in WORKLOADS},
        }
        return out

    result: dict[str, Any] = {"rounds": rounds, "load_average_per_round": [round(x, 2) for x in loads],
                              "dynwf": figure("dynwf")}
    result["dynwf"]["steps_per_s_concurrent"] = round(concurrent)
    result["dynwf"]["throughput_live_isolates"] = live
    result["dynwf"]["throughput_setup"] = {"instances_per_round": SIZES["dynwf"]["throughput"][which],
                                           "tenants": dynwf.tenants, "pool_size":
                                           dynwf.path.host.pool.max_isolates}
    for name in peer_names:
        report = dict(peer_report.get(name, {"skipped": "not requested"}))
        if report.get("skipped") is None and name in per_round:
            report.update(figure(name))
            report["ratios"] = {w: _ratio(per_round["dynwf"][w], per_round[name][w])
                                for w in WORKLOADS}
            report["sizes"] = {w: SIZES[name][w][which] for w in WORKLOADS}
            if name in peer_rss:
                report["rss_mb_after"] = peer_rss[name]
        if name in failures:
            report["failed"] = failures[name]
        result[name] = report
    return result


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _ratio(ours: list[float], theirs: list[float]) -> float | None:
    """Median over rounds of dynwf / peer (rounds where both have a figure)."""
    pairs = [a / b for a, b in zip(ours, theirs) if b]
    return round(statistics.median(pairs), 3) if pairs else None

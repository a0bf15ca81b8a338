"""One group of figures in a process of its own: ``python -m benchmarks.figures NAME [--quick]``.

``python -m benchmarks`` runs each group this way so that a memory reading counts only its own
workload, and a group that fails costs only its own figures. The group's result is the last line
of stdout, as JSON; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _engine(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import engine_micro
    return engine_micro.run(quick=args.quick)


def _cold_start(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.dynamic import cold_boot
    return asyncio.run(cold_boot(20 if args.quick else 100, 500 if args.quick else 3000, 0.1))


def _compare(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.compare import compare
    peers = [] if args.no_peers else [p for p in args.peers.split(",") if p]
    return asyncio.run(compare(args.quick, Path(args.peers_dir) if args.peers_dir else None,
                               peers, log))


def _memory(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import memory
    return memory.run(quick=args.quick)


def _scale(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import scale
    return scale.run(quick=args.quick)


def _idle(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import idle
    return idle.run(quick=args.quick)


def _flood(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import flood
    return flood.run(quick=args.quick)


def _devloop(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import devloop
    return devloop.run(quick=args.quick)


def _cluster(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import cluster
    return cluster.run(quick=args.quick, peers=not args.no_peers and "dbos" in args.peers)


#: name -> (what it measures, runner); in the order ``python -m benchmarks`` runs them
GROUPS: dict[str, tuple[str, Callable[[argparse.Namespace], dict[str, Any]]]] = {
    "engine": ("in-process engine, no isolates (reference)", _engine),
    "cold_start": ("isolate cold boot and warm call", _cold_start),
    "compare": ("step overhead, latency, throughput; dynwf and peers in alternating rounds",
                _compare),
    "memory": ("host RSS over 10,000 completed instances", _memory),
    "scale": ("50,000 instances waiting for an event; wake-up lag at 1,000 events/s", _scale),
    "idle": ("idle tenants: one sleeping instance each", _idle),
    "flood": ("a hostile tenant floods the host: a neighbour's latency, host RSS", _flood),
    "devloop": ("dynwf --help, check, run and dev's first response, as whole processes",
                _devloop),
    "cluster": ("serve hosts on PostgreSQL: 1, 2, 4 hosts, an event across hosts, DBOS on "
                "PostgreSQL", _cluster),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.figures")
    p.add_argument("group", choices=sorted(GROUPS))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--peers-dir", default=None)
    p.add_argument("--peers", default="dbos,wrangler")
    p.add_argument("--no-peers", action="store_true")
    return p


def main() -> None:
    args = parser().parse_args()
    started = time.perf_counter()
    result = GROUPS[args.group][1](args)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

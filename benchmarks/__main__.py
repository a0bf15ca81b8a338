"""``python -m benchmarks [--quick] [--json]``: run the benchmarks and print their figures.

Each group of figures runs in a process of its own (``benchmarks.figures``), one after the other;
progress goes to stderr. The result is a table, or with ``--json`` one JSON object whose keys are
stable: ``figures`` (one entry per figure of docs/benchmarks.md), ``peers``, ``targets`` (each with
``met``), ``machine``, ``groups`` (every group's raw output) and ``elapsed_s``.

Peers (DBOS with SQLite, ``wrangler dev``) are installed on first use into ``--peers-dir``
(default ``~/.cache/dynwf-bench``, or ``$DYNWF_BENCH_PEERS``), outside the repository; install
time is printed and counted in no figure. A peer that cannot be installed or started is skipped
with its reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from typing import Any

from benchmarks.figures import GROUPS
from benchmarks.report import summarise, table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small samples (under 3 minutes with peers cached); idle tenants: 400")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--peers-dir", default=None,
                        help="where peer environments are made and cached")
    parser.add_argument("--no-peers", action="store_true", help="measure dynwf only")
    parser.add_argument("--peers", default="dbos,wrangler", help="comma-separated peer names")
    parser.add_argument("--only", default=None,
                        help="comma-separated groups: " + ", ".join(GROUPS))
    args = parser.parse_args()
    groups = list(GROUPS) if not args.only else [g for g in GROUPS if g in args.only.split(",")]

    started = time.perf_counter()
    load_start = os.getloadavg()
    raw: dict[str, Any] = {}
    for name in groups:
        print(f"[{time.perf_counter() - started:6.1f}s] {name}: {GROUPS[name][0]}",
              file=sys.stderr, flush=True)
        raw[name] = _run_group(name, args)
    load_end = os.getloadavg()

    results = summarise(raw, quick=args.quick)
    results["machine"] = _machine(load_start, load_end)
    results["mode"] = "quick" if args.quick else "full"
    results["command"] = "python -m benchmarks" + (" --quick" if args.quick else "")
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["groups"] = raw
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(table(results))
        cluster = raw.get("cluster") or {}
        if cluster.get("table"):
            print("\nServe hosts on PostgreSQL (docs/benchmarks.md):\n" + cluster["table"])


def _run_group(name: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.figures", name]
    if args.quick:
        command.append("--quick")
    if args.peers_dir:
        command += ["--peers-dir", args.peers_dir]
    if args.no_peers:
        command.append("--no-peers")
    command += ["--peers", args.peers]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        return {"error": f"the {name} group exited with status {done.returncode}"}
    try:
        return json.loads(lines[-1])
    except ValueError:
        return {"error": f"the {name} group printed no result"}


def _machine(load_start: tuple[float, ...], load_end: tuple[float, ...]) -> dict[str, Any]:
    memory_gib = None
    try:
        with open("/proc/meminfo") as meminfo:
            memory_gib = round(int(meminfo.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(terse=True), "cpu": cpu, "cpus": os.cpu_count(),
            "memory_gib": memory_gib,
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in load_end]}


if __name__ == "__main__":
    main()

"""The group commit on PostgreSQL against SQLite: steps committed per second, and how long the
event loop stood still inside commits, with the PostgreSQL transaction on the loop and in the
commit worker (engine/writes.py). ``python -m benchmarks.store_postgres [URL]``; the URL names a
database whose schema ``dynwf_bench`` is dropped first (default: the local server's ``postgres``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from benchmarks.engine_micro import HundredSteps
from emulator.engine import Engine, SystemClock, WorkflowDefinition
from emulator.engine.stores import open_store
from emulator.engine.writes import WriteBatcher

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "dynwf_bench"


async def _run(store_url: str, instances: int, offload: bool | None) -> dict[str, float]:
    engine = Engine(open_store(store_url), [WorkflowDefinition("hundred", lambda row: HundredSteps())],
                    clock=SystemClock())
    engine.writes.close()
    engine.writes = WriteBatcher(engine.store, offload=offload)
    engine.control.create_batch("hundred", [{} for _ in range(instances)])
    lag: list[float] = []

    async def probe() -> None:   # how late a 1 ms timer fires: the loop's stalls
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            lag.append(time.perf_counter() - started - 0.001)

    prober = asyncio.get_running_loop().create_task(probe())
    started = time.perf_counter()
    await engine.drain()
    elapsed = time.perf_counter() - started
    prober.cancel()
    done = engine.store.count_by_status().get("complete", 0)
    transactions, blocked = engine.writes.transactions, engine.writes.blocked_s
    engine.close()
    assert done == instances, f"{done} of {instances} completed"
    lag.sort()
    return {"steps_per_s": round(instances * 100 / elapsed),
            "commit_blocked_ms_per_txn": round(1000 * blocked / max(transactions, 1), 3),
            "loop_lag_p99_ms": round(1000 * lag[int(len(lag) * 0.99)], 2) if lag else 0.0,
            "transactions": transactions}


def _fresh(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    return f"{url}{'&' if '?' in url else '?'}schema={SCHEMA}"


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_URL
    figures = {}
    for instances in (1, 50):
        with tempfile.TemporaryDirectory() as folder:
            figures[f"sqlite, {instances} in flight"] = asyncio.run(
                _run(str(Path(folder) / "bench.sqlite"), instances, None))
        figures[f"postgres on the loop, {instances} in flight"] = asyncio.run(
            _run(_fresh(url), instances, False))
        figures[f"postgres in the worker, {instances} in flight"] = asyncio.run(
            _run(_fresh(url), instances, True))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

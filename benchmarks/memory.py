"""Memory over time: host RSS as completed instances pile up, on the full path.

3-step dynamic instances in waves over 50 tenants (the pool holds all of them), host RSS read
after each thousand completions (after a collection, so what is counted is what is kept).
A completed instance is a row in SQLite, not an object in the host: RSS must not grow with the
count of completed instances. The growth from 1,000 to the last point, per instance, is the figure.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from benchmarks.common import FullPath, rss_mb

TENANTS = 50
WAVE = 500


async def memory_over_time(total: int) -> dict[str, Any]:
    async with FullPath() as path:
        for i in range(TENANTS):  # boot every tenant's isolate before the first reading
            await path.run_one(f"m{i}", "warm")
        base = path.completed
        series: list[tuple[int, float]] = []
        started = time.perf_counter()
        done = 0
        while done < total:
            wave = min(WAVE, total - done)
            per_tenant = wave // TENANTS
            for i in range(TENANTS):
                await path.create_many(f"m{i}", per_tenant)
            done += per_tenant * TENANTS
            await path.wait_completed(base + done, 600, "a wave of instances")
            if done % 1000 == 0 or done >= total:
                gc.collect()
                series.append((done, round(rss_mb(), 2)))
        elapsed = time.perf_counter() - started
        by_count = dict(series)
        first = by_count.get(1000, series[0][1])
        last_count, last = series[-1]
        database = path.database_mb()
        live = path.host.pool.live_count
        isolates = path.isolates_pss_mb()
    growth_kb = (last - first) * 1024 / max(1, last_count - 1000)
    return {
        "completed": last_count,
        "tenants": TENANTS,
        "host_rss_mb_after_1000": first,
        f"host_rss_mb_after_{last_count}": last,
        "growth_kb_per_instance": round(growth_kb, 3),
        "series": series,
        "database_mb": round(database, 1),
        "live_isolates": live,
        "isolates_pss_mb": round(isolates, 1),
        "workflows_per_s": round(last_count / elapsed),
    }


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(memory_over_time(10_000))


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))

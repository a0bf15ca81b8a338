"""Idle tenants: many tenants, each with one instance asleep, on the full path.

Each tenant has its own loader id, so each instance's first run boots an isolate for it; the run
reaches ``step.sleep("nap", "1 hour")`` and hibernates (one row and one timer; no task and no
isolate needed). With everyone asleep the figure is the host's memory, the live isolates (the pool
must hold at most its size), the isolates' own memory and the database size. Then the virtual
clock jumps past the sleeps and the figure is the time until every instance has completed (each
needs its isolate again: most were evicted to keep the pool bounded, so most boot again).

The engine runs with ``concurrency`` equal to the pool size here; :func:`pool_bound_check`
measures what the defaults do (2,000 instances in flight over a 64-isolate pool).
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from benchmarks.common import FullPath, rss_mb, wait_until
from emulator.clock import VirtualClock
from emulator.defaults import MAX_ISOLATES

SLEEP_MS = 3_600_000
POOL_SIZE = MAX_ISOLATES  # the host's default pool


class _PoolWatch:
    """Samples the pool every few milliseconds: the most isolates ever live at once, and the
    most isolate processes alive (live, loading or retired but not yet reaped)."""

    def __init__(self, path: FullPath) -> None:
        self.path = path
        self.max_live = 0
        self.max_processes = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        zygote = self.path.host.pool.zygote.process
        while True:
            self.max_live = max(self.max_live, self.path.host.pool.live_count)
            if zygote is not None:
                try:
                    with open(f"/proc/{zygote.pid}/task/{zygote.pid}/children") as children:
                        # less the zygote's spare children (forked ahead of need)
                        count = len(children.read().split()) - 2
                    self.max_processes = max(self.max_processes, count)
                except OSError:
                    pass
            await asyncio.sleep(0.005)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def idle_tenants(tenants: int) -> dict[str, Any]:
    clock = VirtualClock()
    async with FullPath(clock=clock, concurrency=POOL_SIZE) as path:
        watch = _PoolWatch(path)
        watch.start()
        rss_empty = rss_mb()
        started = time.perf_counter()
        for i in range(tenants):
            await path.binding(f"idle-{i}", "SleepThenStep", cache=False).create({"id": "nap"})
        created_s = time.perf_counter() - started
        store = path.engine.store

        def asleep() -> bool:
            return store.count_by_status().get("waiting", 0) >= tenants
        await wait_until(asleep, 3600, "every idle tenant to fall asleep", interval=0.05)
        asleep_s = time.perf_counter() - started
        counts = store.count_by_status()
        gc.collect()
        asleep_figures = {
            "host_rss_mb": round(rss_mb(), 1),
            "host_rss_mb_before": round(rss_empty, 1),
            "live_isolates": path.host.pool.live_count,
            "max_live_isolates": watch.max_live,
            "max_isolate_processes": watch.max_processes,
            "isolates_pss_mb": round(path.isolates_pss_mb(), 1),
            "database_mb": round(path.database_mb(), 1),
            "errored": counts.get("errored", 0),
        }
        boots_before = path.host.pool.loads
        started = time.perf_counter()
        clock.jump_to(clock.now_ms() + SLEEP_MS + 1_000)
        path.engine.timer_added(clock.now_ms())  # wake the scheduler now, not at its next poll

        def finished() -> bool:
            done = store.count_by_status()
            return done.get("complete", 0) + done.get("errored", 0) >= tenants
        await wait_until(finished, 3600, "every idle tenant to wake and complete", interval=0.05)
        wake_s = time.perf_counter() - started
        counts = store.count_by_status()
        watch.stop()
        return {
            "tenants": tenants,
            "pool_size": path.host.pool.max_isolates,
            "engine_concurrency": path.engine.concurrency,
            "create_s": round(created_s, 2),
            "all_asleep_s": round(asleep_s, 1),
            "asleep": asleep_figures,
            "wake_all_complete_s": round(wake_s, 2),
            "wake_boots": path.host.pool.loads - boots_before,
            "completed": counts.get("complete", 0),
            "errored": counts.get("errored", 0),
            "max_live_isolates": watch.max_live,
            "host_rss_mb_after": round(rss_mb(), 1),
        }


async def pool_bound_check(tenants: int) -> dict[str, Any]:
    """The same start with the engine's default concurrency (2,000 in flight): every tenant's
    first run holds its isolate busy while it loads, so the pool cannot evict and grows past its
    size. Kept small: each extra isolate is a process on the machine."""
    async with FullPath(clock=VirtualClock()) as path:
        watch = _PoolWatch(path)
        watch.start()
        for i in range(tenants):
            await path.binding(f"burst-{i}", "SleepThenStep", cache=False).create({"id": "nap"})
        store = path.engine.store

        def settled() -> bool:
            counts = store.count_by_status()
            return counts.get("waiting", 0) + counts.get("errored", 0) >= tenants
        await wait_until(settled, 600, "the pool-bound check to settle", interval=0.02)
        counts = store.count_by_status()
        watch.stop()
        errors = sorted({row.error or "" for row in store.list_instances(status="errored", limit=5)})
        return {"tenants": tenants, "pool_size": path.host.pool.max_isolates,
                "engine_concurrency": path.engine.concurrency,
                "max_live_isolates": watch.max_live,
                "live_isolates_after": path.host.pool.live_count,
                "errored": counts.get("errored", 0), "errors": errors[:2]}


def run(quick: bool = False) -> dict[str, Any]:
    tenants = 400 if quick else 10_000
    result = asyncio.run(idle_tenants(tenants))
    result["quick_mode_tenants"] = quick
    result["pool_bound_default_concurrency"] = asyncio.run(pool_bound_check(100))
    return result


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))

"""The full dynamic path: dispatcher -> wrapped binding -> engine -> tenant isolate.

- ``step overhead``: committed steps per second of one 100-step instance at a time, warm isolate
  (sequential: every step is one RPC round trip from the isolate and one commit); and of many
  100-step instances in flight at once (concurrent: commits grouped);
- ``latency``: create-to-complete of a 3-step instance with a warm isolate, one at a time;
- ``throughput``: 3-step instances per second, all created at once, spread over tenants, with the
  default pool size;
- ``cold start``: from the first call on a new loader id to its reply (code callback, fork from the
  zygote's spare child, guard, import of the tenant's module, the call itself); and a warm call.

:class:`DynwfSubject` keeps one project host alive so that these rounds can alternate with the
peers' (``benchmarks.compare``) in one invocation.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from benchmarks.common import TENANT, FullPath, percentiles

_ids = itertools.count()


class DynwfSubject:
    """dynwf's side of the shared workloads, on one warm :class:`FullPath`."""

    name = "dynwf"

    def __init__(self, tenants: int = 50) -> None:
        self.tenants = tenants
        self.path = FullPath()
        self.live_isolates = 0

    async def start(self) -> None:
        await self.path.__aenter__()
        # warm every tenant's isolate and the code paths of both workflows
        for i in range(self.tenants):
            await self.path.run_one(f"t{i}", f"warm-{next(_ids)}")
        await self.path.run_one("t0", f"warm-{next(_ids)}", "HundredSteps")
        for _ in range(20):
            await self.path.run_one("t0", f"warm-{next(_ids)}")

    async def close(self) -> None:
        await self.path.__aexit__(None, None, None)

    async def latency(self, samples: int) -> list[float]:
        """create-to-complete of 3-step instances, one at a time, in ms."""
        return [await self.path.run_one("t0", f"lat-{next(_ids)}") * 1000 for _ in range(samples)]

    async def steps_sequential(self, instances: int) -> float:
        """Committed steps/s of 100-step instances run one after the other."""
        start = time.perf_counter()
        for _ in range(instances):
            await self.path.run_one("t0", f"hundred-{next(_ids)}", "HundredSteps")
        return instances * 100 / (time.perf_counter() - start)

    async def steps_concurrent(self, instances: int, tenants: int) -> float:
        """Committed steps/s with ``instances`` 100-step instances in flight over ``tenants``."""
        path = self.path
        target = path.completed + instances
        start = time.perf_counter()
        for i in range(instances):
            await path.binding(f"t{i % tenants}", "HundredSteps").create({"id": f"hc-{next(_ids)}"})
        await path.wait_completed(target, 300, "concurrent 100-step instances")
        return instances * 100 / (time.perf_counter() - start)

    async def throughput(self, instances: int) -> float:
        """3-step instances per second: ``instances`` created at once over every tenant."""
        path = self.path
        per_tenant = max(1, instances // self.tenants)
        instances = per_tenant * self.tenants
        target = path.completed + instances
        start = time.perf_counter()
        for i in range(self.tenants):
            await path.create_many(f"t{i}", per_tenant)
        await path.wait_completed(target, 600, "throughput instances")
        elapsed = time.perf_counter() - start
        self.live_isolates = path.host.pool.live_count
        return instances / elapsed


async def cold_boot(boots: int, warm_calls: int, gap_s: float) -> dict[str, Any]:
    """Isolate cold boot through a Worker Loader on a bare pool, ``gap_s`` apart (the zygote
    refills its spare children between boots, as between tenants arriving one by one); then
    back to back (a burst, where each boot waits for the spare being made); then warm calls."""
    from emulator.isolates.pool import IsolatePool
    from emulator.loader import WorkerLoader
    pool = IsolatePool(max_isolates=2 * boots + 2)
    await pool.start()
    loader = WorkerLoader(pool)

    def code() -> dict[str, Any]:
        return {"main_module": "index.py", "modules": {"index.py": TENANT},
                "compatibility_date": "2026-04-01", "global_outbound": None}
    try:
        await loader.get("warm-up", code).get_entrypoint().ping(0)
        await asyncio.sleep(0.2)
        spaced, burst, in_isolate, phases = [], [], [], {"setup": [], "guard": [], "import": []}
        for i in range(boots):
            await asyncio.sleep(gap_s)
            stub = loader.get(f"cold-{i}", code).get_entrypoint()
            start = time.perf_counter()
            await stub.ping(i)
            spaced.append((time.perf_counter() - start) * 1000)
            isolate = pool.get_live(loader.key(f"cold-{i}"))
            if isolate is not None:
                in_isolate.append(isolate.load_ms)
                for phase, ms in isolate.load_phases.items():
                    phases.setdefault(phase, []).append(ms)
        await asyncio.sleep(0.2)
        for i in range(boots):
            stub = loader.get(f"burst-{i}", code).get_entrypoint()
            start = time.perf_counter()
            await stub.ping(i)
            burst.append((time.perf_counter() - start) * 1000)
        warm = loader.get("warm-up", code).get_entrypoint()
        calls = []
        for i in range(warm_calls):
            start = time.perf_counter()
            await warm.ping(i)
            calls.append((time.perf_counter() - start) * 1e6)
    finally:
        await pool.close()
    calls.sort()
    return {
        "cold_boot": percentiles(spaced),
        "cold_boot_burst": percentiles(burst),
        "in_isolate_load_ms": percentiles(in_isolate)["median_ms"],
        "in_isolate_phases_ms": {k: percentiles(v)["median_ms"] for k, v in phases.items() if v},
        "warm_call_us_median": round(calls[len(calls) // 2], 1),
        "gap_ms": round(gap_s * 1000),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """The dynwf figures alone, without peers (``python -m benchmarks.dynamic``)."""
    async def main() -> dict[str, Any]:
        subject = DynwfSubject(tenants=50)
        await subject.start()
        try:
            latency = await subject.latency(100 if quick else 500)
            sequential = await subject.steps_sequential(5 if quick else 20)
            concurrent = await subject.steps_concurrent(100, 10)   # the figure is 100 in flight
            throughput = await subject.throughput(2000)
        finally:
            await subject.close()
        return {"latency_3_steps": percentiles(latency),
                "steps_per_s_sequential": round(sequential),
                "steps_per_s_concurrent": round(concurrent),
                "workflows_per_s": round(throughput), "live_isolates": subject.live_isolates}
    results = asyncio.run(main())
    results.update(asyncio.run(cold_boot(20 if quick else 100, 500 if quick else 3000, 0.1)))
    return results


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))

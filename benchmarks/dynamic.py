"""Isolates and the full dynamic path: dispatcher -> wrapped binding -> engine -> tenant isolate.

- ``isolate.cold_boot``: from the first call on a new loader id to its reply (code callback,
  fork from the zygote, guard, import of the tenant's module, the call itself);
- ``isolate.warm_call``: a call into a live isolate and back;
- ``dynamic.latency``: create-to-complete of a 3-step dynamic workflow with a warm isolate;
- ``dynamic.throughput``: 3-step dynamic workflows per second, instances spread over tenants.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from emulator.config import load_config
from emulator.engine import SystemClock
from emulator.host import HostOptions, ProjectHost
from emulator.isolates.pool import IsolatePool
from emulator.loader import WorkerLoader

TENANT = '''
from workers import WorkflowEntrypoint, WorkerEntrypoint

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("first")
        async def first():
            return 1

        @step.do("second")
        async def second(first):
            return first + 1

        @step.do("third")
        async def third(second):
            return second + 1
        return await third()

class Default(WorkerEntrypoint):
    async def ping(self, n):
        return n
'''

DISPATCHER = '''
from workers import WorkerEntrypoint
from dynamic_workflows import (DynamicWorkflowBinding, create_dynamic_workflow_entrypoint,
                               wrap_workflow_binding)

TENANT = open(__file__.replace("entry.py", "tenant.py")).read()

def load_tenant(env, tenant_id):
    def code():
        return {"compatibility_date": "2026-04-01", "main_module": "index.py",
                "modules": {"index.py": TENANT},
                "env": {"WORKFLOWS": wrap_workflow_binding({"tenantId": tenant_id})},
                "global_outbound": None}
    return env.LOADER.get(tenant_id, code)

DynamicWorkflow = create_dynamic_workflow_entrypoint(
    lambda ctx: load_tenant(ctx.env, ctx.metadata["tenantId"]).get_entrypoint("TenantWorkflow"))

class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return None
'''

CONFIG = '''{"name": "bench", "main": "src/entry.py", "compatibility_date": "2026-04-01",
 "workflows": [{"name": "bench", "binding": "WORKFLOWS", "class_name": "DynamicWorkflow"}],
 "worker_loaders": [{"binding": "LOADER"}]}'''


def _percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"median_ms": round(statistics.median(values), 3),
            "p90_ms": round(values[int(len(values) * 0.9)], 3),
            "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))], 3),
            "samples": len(values)}


async def _isolates(boots: int, calls: int) -> dict[str, object]:
    pool = IsolatePool(max_isolates=boots + 1)
    await pool.start()
    loader = WorkerLoader(pool)
    code = lambda: {"main_module": "index.py", "modules": {"index.py": TENANT},  # noqa: E731
                    "compatibility_date": "2026-04-01", "global_outbound": None}
    try:
        await loader.get("warm-up", code).get_entrypoint().ping(0)
        cold = []
        for i in range(boots):
            stub = loader.get(f"cold-{i}", code).get_entrypoint()
            start = time.perf_counter()
            await stub.ping(i)
            cold.append((time.perf_counter() - start) * 1000)
        warm_stub = loader.get("warm-up", code).get_entrypoint()
        start = time.perf_counter()
        for i in range(calls):
            await warm_stub.ping(i)
        warm_us = (time.perf_counter() - start) / calls * 1e6
    finally:
        await pool.close()
    return {"isolate.cold_boot": _percentiles(cold), "isolate.warm_call_us": round(warm_us, 1)}


def _project(folder: Path) -> Path:
    (folder / "src").mkdir()
    (folder / "src" / "entry.py").write_text(DISPATCHER)
    (folder / "src" / "tenant.py").write_text(TENANT)
    (folder / "wrangler.jsonc").write_text(CONFIG)
    return folder / "wrangler.jsonc"


async def _full_path(latency_samples: int, instances: int, tenants: int) -> dict[str, object]:
    from emulator.runtime.dynamic_workflows import dispatcher_scope, wrap_workflow_binding
    with tempfile.TemporaryDirectory() as folder:
        config = load_config(_project(Path(folder)))
        host = ProjectHost(config, HostOptions(state_dir=Path(folder) / ".dynwf", clock=SystemClock(),
                                               max_isolates=tenants + 8))
        await host.start()
        done: dict[str, asyncio.Future[float]] = {}
        completed = 0

        def on_progress(event):
            nonlocal completed
            if event.kind == "instance.status" and event.data.get("status") == "complete":
                completed += 1
                future = done.get(event.instance_id)
                if future is not None and not future.done():
                    future.set_result(time.perf_counter())
        host.engine.progress.subscribe(on_progress)
        stop = asyncio.Event()
        server = asyncio.create_task(host.engine.serve(stop))
        try:
            with dispatcher_scope(host.module, host.env):
                bindings = [wrap_workflow_binding({"tenantId": f"t{i}"}) for i in range(tenants)]
            from emulator.runtime.dynamic_workflows import scoped_instance_id
            loop = asyncio.get_running_loop()
            timings = []
            for i in range(latency_samples + 20):
                real = scoped_instance_id({"tenantId": "t0"}, f"lat-{i}")
                done[real] = loop.create_future()
                start = time.perf_counter()
                await bindings[0].create({"id": f"lat-{i}"})
                end = await asyncio.wait_for(done[real], 30)
                if i >= 20:
                    timings.append((end - start) * 1000)
            for binding in bindings:  # warm every tenant's isolate first
                await binding.create({})
            target = completed + tenants
            while completed < target:
                await asyncio.sleep(0.01)
            start_count, start = completed, time.perf_counter()
            per_tenant = instances // tenants
            for binding in bindings:
                for first in range(0, per_tenant, 100):
                    await binding.create_batch([{} for _ in range(min(100, per_tenant - first))])
            instances = per_tenant * tenants
            while completed < start_count + instances:
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - start
            live = host.pool.live_count
        finally:
            stop.set()
            await server
            await host.close()
    return {"dynamic.latency_3_steps": _percentiles(timings),
            "dynamic.throughput_per_s": round(instances / elapsed),
            "dynamic.throughput_setup": {"instances": instances, "tenants": tenants,
                                         "live_isolates": live}}


def run(quick: bool = False) -> dict[str, object]:
    results = asyncio.run(_isolates(20 if quick else 100, 200 if quick else 2000))
    results.update(asyncio.run(_full_path(50 if quick else 300, 200 if quick else 2000,
                                          5 if quick else 50)))
    results["targets"] = {"cold_boot_median_ms": 5, "dynamic_workflows_per_s": 1000}
    return results

"""Engine micro-benchmarks with an in-process runner (no isolates).

- ``steps_per_second``: committed ``step.do`` steps per second; one 100-step instance at a time
  (sequential), and many 100-step instances in flight at once (concurrent, group commit).
- ``latency``: create-to-complete of a 3-step workflow on a served engine, one at a time.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from emulator.engine import Engine, SystemClock, WorkflowDefinition


def _workflow_classes() -> tuple[type, type]:
    """The same workflows the full-path figures run in isolates (``common.TENANT``), loaded
    here in-process, so the engine-alone figures measure the same code."""
    import emulator.runtime.workers  # noqa: F401 - makes ``workers`` importable
    from benchmarks.common import TENANT
    namespace: dict = {}
    exec(compile(TENANT, "<benchmark tenant>", "exec"), namespace)
    return namespace["HundredSteps"], namespace["ThreeSteps"]


HundredSteps, ThreeSteps = _workflow_classes()


def _engine(folder: str) -> Engine:
    return Engine(Path(folder) / "bench.sqlite",
                  [WorkflowDefinition("hundred", lambda row: HundredSteps()),
                   WorkflowDefinition("three", lambda row: ThreeSteps())],
                  clock=SystemClock())


async def _steps_per_second(instances: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        engine = _engine(folder)
        binding = engine.binding("hundred")
        engine.control.create_batch("hundred", [{} for _ in range(min(instances, 100))])
        for _ in range(max(0, instances - 100) // 100):
            engine.control.create_batch("hundred", [{} for _ in range(100)])
        del binding
        start = time.perf_counter()
        await engine.drain()
        elapsed = time.perf_counter() - start
        done = engine.store.count_by_status().get("complete", 0)
        engine.close()
        assert done == instances, f"{done} of {instances} completed"
        return instances * 100 / elapsed


async def _latency(samples: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        engine = _engine(folder)
        binding = engine.binding("three")
        finished: dict[str, asyncio.Future[float]] = {}

        def on_progress(event):
            if event.kind == "instance.status" and event.data.get("status") == "complete":
                future = finished.get(event.instance_id)
                if future is not None and not future.done():
                    future.set_result(time.perf_counter())
        engine.progress.subscribe(on_progress)
        stop = asyncio.Event()
        server = asyncio.create_task(engine.serve(stop))
        await asyncio.sleep(0.05)
        timings = []
        loop = asyncio.get_running_loop()
        for i in range(samples + 20):
            future = loop.create_future()
            finished[f"lat-{i}"] = future
            start = time.perf_counter()
            await binding.create({"id": f"lat-{i}"})
            end = await future
            if i >= 20:  # warm-up
                timings.append((end - start) * 1000)
        stop.set()
        await server
        engine.close()
    timings.sort()
    return {"median_ms": statistics.median(timings),
            "p90_ms": timings[int(len(timings) * 0.9)],
            "p99_ms": timings[min(len(timings) - 1, int(len(timings) * 0.99))],
            "samples": len(timings)}


def run(quick: bool = False) -> dict[str, object]:
    sequential = asyncio.run(_steps_per_second(1 if quick else 5))
    concurrent = asyncio.run(_steps_per_second(20 if quick else 100))
    latency = asyncio.run(_latency(100 if quick else 500))
    return {
        "engine.steps_per_second.sequential": round(sequential),
        "engine.steps_per_second.concurrent": round(concurrent),
        "engine.latency_3_steps": {k: round(v, 3) if isinstance(v, float) else v
                                   for k, v in latency.items()},
    }

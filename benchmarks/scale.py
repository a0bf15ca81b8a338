"""Scale of one database: many instances waiting for an event, and the wake-up lag under load.

The figure is about the engine and its store, so it runs the in-process engine (no isolates):
``waiting`` instances are made with ``control.create_batch`` on a workflow whose run waits for an
event (each runs once up to its ``wait_for_event`` and hibernates: one row, one timer, no task).
Then, with the engine serving, events arrive at a steady rate, each to a different waiting
instance; the lag is from the ``send_event`` call to the commit of the step that follows the
wait (the instance is queued, leased, replayed to the wait from its cache, and runs that step).
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import file_mb, percentiles, rss_mb, wait_until
from emulator.engine import Engine, SystemClock, WorkflowDefinition


class WaitThenStep:
    async def run(self, event, step):
        approval = await step.wait_for_event("approval", "go", timeout="7 days")

        @step.do("after")
        async def after():
            return approval["payload"]
        return await after()


async def waiting_instances(instances: int, rate: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dynwf-bench-scale-") as folder:
        database = Path(folder) / "scale.sqlite"
        engine = Engine(database, [WorkflowDefinition("waiter", lambda row: WaitThenStep())],
                        clock=SystemClock())
        try:
            return await _measure(engine, database, instances, rate, seconds)
        finally:
            engine.close()


async def _measure(engine: Engine, database: Path, instances: int, rate: int,
                   seconds: float) -> dict[str, Any]:
    ids: list[str] = []
    started = time.perf_counter()
    for first in range(0, instances, 100):
        created = engine.control.create_batch(
            "waiter", [{"id": f"w{i}"} for i in range(first, min(instances, first + 100))])
        ids += [key for key, _id in created]
    await engine.drain(jump=False)
    setup_s = time.perf_counter() - started
    counts = engine.store.count_by_status()
    if counts.get("waiting", 0) != instances:
        raise RuntimeError(f"expected {instances} waiting instances, found {counts}")
    gc.collect()
    rss_waiting = rss_mb()
    db_waiting = file_mb(database, database.with_name(database.name + "-wal"))

    sent_at: dict[str, float] = {}
    lags: list[float] = []

    def on_progress(event: Any) -> None:
        if event.kind == "step.committed" and event.step and event.step[1] == "after":
            sent = sent_at.pop(event.instance_id, None)
            if sent is not None:
                lags.append((time.perf_counter() - sent) * 1000)
    engine.progress.subscribe(on_progress)
    stop = asyncio.Event()
    server = asyncio.create_task(engine.serve(stop))
    await asyncio.sleep(0.1)
    total = min(instances, int(rate * seconds))
    sent = 0
    begin = time.perf_counter()
    behind_max = 0
    try:
        # A steady arrival rate: every few milliseconds, send what the clock says is due.
        while sent < total:
            due = min(total, int((time.perf_counter() - begin) * rate))
            behind_max = max(behind_max, due - sent)
            while sent < due:
                instance_id = ids[sent]
                sent_at[instance_id] = time.perf_counter()
                engine.control.send_event(instance_id, "go", {"n": sent})
                sent += 1
            await asyncio.sleep(0.002)
        send_s = time.perf_counter() - begin
        await wait_until(lambda: len(lags) >= total, 60, "woken instances to commit their step")
        drained_s = time.perf_counter() - begin
    finally:
        stop.set()
        await server
    result = {
        "waiting_instances": instances,
        "setup_s": round(setup_s, 1),
        "setup_instances_per_s": round(instances / setup_s),
        "host_rss_mb_waiting": round(rss_waiting, 1),
        "database_mb_waiting": round(db_waiting, 1),
        "events_sent": total,
        "event_rate_per_s": round(total / send_s),
        "target_rate_per_s": rate,
        "wake_lag": percentiles(lags),
        "wake_lag_max_ms": round(max(lags), 1) if lags else None,
        "all_committed_after_s": round(drained_s, 2),
    }
    return result


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(waiting_instances(50_000, 1_000, 3.0 if quick else 10.0))


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))

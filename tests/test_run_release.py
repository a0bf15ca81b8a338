"""A run's step goes with its run (docs/semantics.md §8.4): once a tenant's ``run`` returns in its
isolate, the isolate lets go of the step's handle on the engine, so the host keeps nothing of a
completed instance, however many an isolate has run (real isolates, real SQLite)."""

import asyncio
import gc

from benchmarks.common import FullPath
from emulator.engine.lifetime import Lifetime


def test_the_host_keeps_nothing_of_completed_instances_an_isolate_ran():
    async def scenario():
        async with FullPath() as path:
            await path.run_one("t0", "first")
            isolate = next(iter(path.host.pool._live.values()))
            baseline = isolate.peer.export_count   # its root and the env's bindings
            for i in range(30):
                await path.run_one("t0", f"run-{i}")
            await path.run_one("t0", "hundred", "HundredSteps")
            # the drop of the last run's handle is a one-way frame: poll for it with a deadline
            for _ in range(500):
                if isolate.peer.export_count == baseline:
                    break
                await asyncio.sleep(0.01)
            gc.collect()
            lifetimes = sum(1 for o in gc.get_objects() if type(o) is Lifetime)
            return baseline, isolate.peer.export_count, lifetimes, path.completed
    baseline, exports, lifetimes, completed = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert completed == 32
    assert exports == baseline   # no step handle of any run is kept
    assert lifetimes == 0        # so no instance's engine side (lifetime, step cache) either

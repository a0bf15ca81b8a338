"""A fixed workload for counting instructions: ``python -m benchmarks.step_profile [N]``
(``N --in-flight``: ``N`` instances in flight over 10 tenants instead).

``N`` (default 20) sequential instances of the 100-step workflow on the full path (one tenant,
warm isolate), after a warm-up; prints the wall time and the CPU time per step of the host and of
the isolate (from ``/proc/<pid>/stat``), one line of JSON. Under ``valgrind --tool=callgrind
--trace-children=yes`` the host and the isolate each count the same instructions on every run
whatever else the machine does; the difference between ``N`` and ``0`` is the cost of ``N * 100``
steps. Valgrind needs the isolate's limits raised and the layers it cannot run under switched
off, for this measurement only::

    DYNWF_PROFILE_MEMORY_MB=65536 \\
    DYNWF_WEAKEN_ISOLATION=landlock,seccomp,user,network_namespace,memory_cgroup \\
        valgrind --tool=callgrind --trace-children=yes python -m benchmarks.step_profile 20
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from benchmarks.common import FullPath


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def profile(instances: int, workflow: str = "HundredSteps") -> dict[str, Any]:
    # under valgrind (see the module's note) an isolate needs more address space and time
    profiled = os.environ.get("DYNWF_PROFILE_MEMORY_MB")
    timeout = 3600 if profiled else 60
    async with FullPath(memory_mb=int(profiled) if profiled else None,
                        cpu_ms=3_600_000 if profiled else None) as path:
        await path.run_one("t0", "warm-3", "ThreeSteps", timeout=timeout)
        await path.run_one("t0", "warm-100", workflow, timeout=timeout)
        isolate = next(iter(path.host.pool._live.values()))
        host_before, isolate_before = _cpu_s(os.getpid()), _cpu_s(isolate.pid)
        start = time.perf_counter()
        for i in range(instances):
            await path.run_one("t0", f"run-{i}", workflow, timeout=timeout)
        wall = time.perf_counter() - start
        host, iso = _cpu_s(os.getpid()) - host_before, _cpu_s(isolate.pid) - isolate_before
    steps = max(1, instances * (100 if workflow == "HundredSteps" else 3))
    return {"instances": instances, "steps": steps, "steps_per_s": round(steps / wall),
            "host_cpu_us_per_step": round(host / steps * 1e6, 1),
            "isolate_cpu_us_per_step": round(iso / steps * 1e6, 1), "isolate_pid": isolate.pid}


async def in_flight(instances: int, tenants: int = 10) -> dict[str, Any]:
    """Committed steps/s with ``instances`` 100-step instances in flight over ``tenants`` (the
    step overhead figure's second number), and the host's CPU time per step."""
    async with FullPath() as path:
        for i in range(tenants):
            await path.run_one(f"t{i}", "warm", "HundredSteps")
        host_before = _cpu_s(os.getpid())
        target = path.completed + instances
        start = time.perf_counter()
        for i in range(instances):
            await path.binding(f"t{i % tenants}", "HundredSteps").create({"id": f"f-{i}"})
        await path.wait_completed(target, 300, "instances in flight")
        wall = time.perf_counter() - start
        host = _cpu_s(os.getpid()) - host_before
    return {"in_flight": instances, "steps_per_s": round(instances * 100 / wall),
            "host_cpu_us_per_step": round(host / (instances * 100) * 1e6, 1)}


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    if len(sys.argv) > 2 and sys.argv[2] == "--in-flight":
        print(json.dumps(asyncio.run(in_flight(count))))
    else:
        print(json.dumps(asyncio.run(profile(count))))

"""What the benchmarks share: the generated project, the full-path harness, and measurements.

The full path is what a tenant's instance goes through in ``dynwf dev``: the dispatcher's wrapped
binding creates it, the engine leases and runs it, the dispatcher's ``DynamicWorkflow`` loads the
tenant's code through ``env.LOADER`` into an isolate, and every step travels back over RPC to be
committed. :class:`FullPath` builds that from a generated project (one dispatcher module, one tenant
module shared by every tenant id) on a real :class:`~emulator.host.ProjectHost`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

TENANT = '''
from workers import WorkflowEntrypoint, WorkerEntrypoint


class ThreeSteps(WorkflowEntrypoint):
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


class HundredSteps(WorkflowEntrypoint):
    async def run(self, event, step):
        total = 0
        for i in range(100):
            @step.do(f"step-{i}")
            async def one():
                return i
            total += await one()
        return total


class SleepThenStep(WorkflowEntrypoint):
    async def run(self, event, step):
        await step.sleep("nap", "1 hour")

        @step.do("after")
        async def after():
            return "awake"
        return await after()


class Default(WorkerEntrypoint):
    async def ping(self, n):
        return n
'''

# The entrypoint a tenant's instance runs is named in its dispatcher metadata, so one tenant
# module serves every workload; the tenant id alone picks the isolate.
DISPATCHER = '''
import os

from workers import WorkerEntrypoint
from dynamic_workflows import (DynamicWorkflowBinding, create_dynamic_workflow_entrypoint,
                               wrap_workflow_binding)

TENANT = open(__file__.replace("entry.py", "tenant.py")).read()


def tenant_source(tenant_id):
    """``tenant-<id>.py`` beside this file when there is one (a benchmark's odd tenant out)."""
    own = __file__.replace("entry.py", f"tenant-{tenant_id}.py")
    return open(own).read() if os.path.exists(own) else TENANT


def load_tenant(env, tenant_id):
    def code():
        return {"compatibility_date": "2026-04-01", "main_module": "index.py",
                "modules": {"index.py": tenant_source(tenant_id)},
                "env": {"WORKFLOWS": wrap_workflow_binding({"tenantId": tenant_id})},
                "global_outbound": None}
    return env.LOADER.get(tenant_id, code)


DynamicWorkflow = create_dynamic_workflow_entrypoint(
    lambda ctx: load_tenant(ctx.env, ctx.metadata["tenantId"]).get_entrypoint(
        ctx.metadata.get("workflow", "ThreeSteps")))


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return None
'''

CONFIG = '''{"name": "bench", "main": "src/entry.py", "compatibility_date": "2026-04-01",
 "workflows": [{"name": "bench", "binding": "WORKFLOWS", "class_name": "DynamicWorkflow"}],
 "worker_loaders": [{"binding": "LOADER"}]}'''


# ---- numbers ----------------------------------------------------------------------------------

def percentiles(values: list[float], digits: int = 3) -> dict[str, Any]:
    """median, p90 and p99 (nearest rank) of ``values`` in milliseconds, and the sample count."""
    if not values:
        return {"median_ms": None, "p90_ms": None, "p99_ms": None, "samples": 0}
    ordered = sorted(values)
    return {"median_ms": round(statistics.median(ordered), digits),
            "p90_ms": round(rank(ordered, 0.90), digits),
            "p99_ms": round(rank(ordered, 0.99), digits),
            "samples": len(ordered)}


def rank(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of an already sorted list."""
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size (VmRSS) of one process, in MiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size of one process, in MiB: its share of pages shared with its zygote
    siblings, so a sum over isolates counts each shared page once."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def file_mb(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths if p.exists()) / (1024 * 1024)


def load_average() -> float:
    return os.getloadavg()[0]


class Deadline:
    """Fails a wait that would otherwise hang the whole run."""

    def __init__(self, seconds: float, what: str) -> None:
        self.until = time.monotonic() + seconds
        self.what = what

    def check(self) -> None:
        if time.monotonic() > self.until:
            raise TimeoutError(f"benchmark step timed out: {self.what}")


async def wait_until(predicate: Callable[[], bool], seconds: float, what: str,
                     interval: float = 0.002) -> None:
    deadline = Deadline(seconds, what)
    while not predicate():
        deadline.check()
        await asyncio.sleep(interval)


# ---- the full path ----------------------------------------------------------------------------

def write_project(folder: Path, tenants: dict[str, str] | None = None) -> Path:
    """The project; ``tenants`` maps a tenant id to its own module source (the rest share
    :data:`TENANT`)."""
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "src" / "entry.py").write_text(DISPATCHER)
    (folder / "src" / "tenant.py").write_text(TENANT)
    for tenant_id, source in (tenants or {}).items():
        (folder / "src" / f"tenant-{tenant_id}.py").write_text(source)
    (folder / "wrangler.jsonc").write_text(CONFIG)
    return folder / "wrangler.jsonc"


class FullPath:
    """A generated project on a :class:`ProjectHost` whose engine is serving.

    ``binding(tenant, workflow)`` is the wrapped binding a tenant's code gets (built in dispatcher
    scope, as the loader's code callback builds it). Completions are counted from the engine's
    progress events; ``finished_at`` holds the time of each instance that an awaiter asked for.
    """

    def __init__(self, *, clock: Any = None, max_isolates: int | None = None,
                 concurrency: int | None = None, folder: Path | None = None,
                 tenants: dict[str, str] | None = None, memory_mb: int | None = None,
                 cpu_ms: int | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="dynwf-bench-") if folder is None else None
        self.folder = Path(self._tmp.name) if self._tmp else folder
        self.clock = clock
        self.tenants = tenants
        self.max_isolates = max_isolates
        self.concurrency = concurrency
        self.memory_mb = memory_mb   # an isolate's limits (a profiler needs more room)
        self.cpu_ms = cpu_ms
        self.completed = 0
        self.step_commits = 0
        self._awaited: dict[str, asyncio.Future[float]] = {}
        self._bindings: dict[tuple[str, str], Any] = {}
        self._stop: asyncio.Event | None = None
        self._server: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "FullPath":
        from emulator.config import load_config
        from emulator.engine import SystemClock
        from emulator.host import HostOptions, ProjectHost
        from emulator.interpreter import tune_for_serving
        config = load_config(write_project(self.folder, self.tenants))
        options = HostOptions(state_dir=self.folder / ".dynwf", clock=self.clock or SystemClock())
        if self.max_isolates is not None:
            options.max_isolates = self.max_isolates
        if self.concurrency is not None:
            options.concurrency = self.concurrency
        if self.memory_mb is not None:
            options.limits.memory_mb = self.memory_mb
        if self.cpu_ms is not None:
            options.limits.cpu_ms = self.cpu_ms
        self.host = ProjectHost(config, options)
        tune_for_serving()              # as dynwf dev and dynwf run do
        await self.host.start()
        self.engine = self.host.engine
        self.engine.progress.subscribe(self._on_progress)
        self._stop = asyncio.Event()
        self._server = asyncio.create_task(self.engine.serve(self._stop))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._server is not None:
            await self._server
        await self.host.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _on_progress(self, event: Any) -> None:
        if event.kind == "step.committed":
            self.step_commits += 1
        elif event.kind == "instance.status" and event.data.get("status") == "complete":
            self.completed += 1
            future = self._awaited.pop(event.instance_id, None)
            if future is not None and not future.done():
                future.set_result(time.perf_counter())

    @property
    def database(self) -> Path:
        return self.host.database

    def database_mb(self) -> float:
        path = self.database
        return file_mb(path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))

    def isolates_pss_mb(self) -> float:
        return sum(pss_mb(isolate.pid) for isolate in list(self.host.pool._live.values()))

    def binding(self, tenant: str, workflow: str = "ThreeSteps", *, cache: bool = True) -> Any:
        """The wrapped binding of ``tenant`` (kept for reuse unless ``cache`` is false: the idle
        tenants figure makes one per tenant and must not count 10,000 of them in host memory)."""
        key = (tenant, workflow)
        binding = self._bindings.get(key)
        if binding is None:
            from emulator.runtime.dynamic_workflows import dispatcher_scope, wrap_workflow_binding
            metadata = {"tenantId": tenant}
            if workflow != "ThreeSteps":
                metadata["workflow"] = workflow
            with dispatcher_scope(self.host.module, self.host.env):
                binding = wrap_workflow_binding(metadata)
            if cache:
                self._bindings[key] = binding
        return binding

    async def call(self, tenant: str, method: str, *args: Any) -> Any:
        """Call ``method`` of ``tenant``'s Worker entrypoint through the dispatcher's loader (in
        dispatcher scope: the loader's code callback runs when the isolate is loaded)."""
        from emulator.runtime.dynamic_workflows import dispatcher_scope
        with dispatcher_scope(self.host.module, self.host.env):
            stub = self.host.module.load_tenant(self.host.env, tenant).get_entrypoint()
            return await getattr(stub, method)(*args)

    def real_id(self, tenant: str, tenant_instance_id: str, workflow: str = "ThreeSteps") -> str:
        from emulator.runtime.dynamic_workflows import scoped_instance_id
        metadata = {"tenantId": tenant}
        if workflow != "ThreeSteps":
            metadata["workflow"] = workflow
        return scoped_instance_id(metadata, tenant_instance_id)

    def expect(self, real_id: str) -> asyncio.Future[float]:
        """A future set to ``perf_counter()`` when ``real_id`` completes."""
        future = asyncio.get_running_loop().create_future()
        self._awaited[real_id] = future
        return future

    async def run_one(self, tenant: str, instance_id: str, workflow: str = "ThreeSteps",
                      timeout: float = 60) -> float:
        """Create one instance and wait for it to complete; returns create-to-complete seconds."""
        future = self.expect(self.real_id(tenant, instance_id, workflow))
        start = time.perf_counter()
        await self.binding(tenant, workflow).create({"id": instance_id})
        end = await asyncio.wait_for(future, timeout)
        return end - start

    async def create_many(self, tenant: str, count: int, workflow: str = "ThreeSteps",
                          prefix: str | None = None) -> None:
        """``count`` instances for ``tenant``, in batches of 100 (the platform's batch limit)."""
        binding = self.binding(tenant, workflow)
        for first in range(0, count, 100):
            size = min(100, count - first)
            if prefix is None:
                batch = [{} for _ in range(size)]
            else:
                batch = [{"id": f"{prefix}-{first + i}"} for i in range(size)]
            await binding.create_batch(batch)

    async def wait_completed(self, target: int, seconds: float, what: str) -> None:
        await wait_until(lambda: self.completed >= target, seconds, what, interval=0.002)

"""The project host: the dispatcher module, its ``env``, the engine and the isolate pool together.

The dispatcher (the project's ``main``) is trusted code: it is imported into this process with the
runtime modules on its path, and gets an ``env`` built from the wrangler config: one engine
binding per ``workflows[]`` entry, a Worker Loader per ``worker_loaders[]`` entry, and ``vars``.
Each workflow's ``class_name`` entrypoint is what the engine runs; ``Default.fetch`` answers HTTP.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from emulator.config.model import ProjectConfig
from emulator.engine import Engine, WorkflowDefinition
from emulator.engine.clock import Clock
from emulator.errors import ConfigError
from emulator.isolates.pool import IsolateLimits, IsolatePool
from emulator.loader import WorkerLoader
from emulator.project import DATABASE_NAME
from emulator.runtime import RUNTIME_PATH


@dataclass
class HostOptions:
    state_dir: Path | None = None          # default: <project>/.dynwf
    database: Path | None = None           # default: <state_dir>/state.sqlite
    clock: Clock | None = None             # default: SystemClock
    max_isolates: int = 64
    idle_timeout_s: float = 300.0
    limits: IsolateLimits = field(default_factory=IsolateLimits)
    lease_ms: int = 10_000
    concurrency: int = 2_000


class ExecutionContext:
    """``self.ctx`` of the dispatcher's entrypoints."""

    def __init__(self, props: dict[str, Any] | None = None) -> None:
        self.props = props or {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def wait_until(self, awaitable: Any) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _AsDispatcher:
    """Runs an entrypoint's ``run`` as dispatcher code, so ``wrap_workflow_binding`` (called
    by the loader's code callback during the run) finds the dispatcher's module and env."""

    def __init__(self, entrypoint: Any, dispatcher: Any) -> None:
        self._entrypoint = entrypoint
        self._dispatcher = dispatcher

    async def run(self, event: Any, step: Any) -> Any:
        from dynamic_workflows import current_dispatcher
        token = current_dispatcher.set(self._dispatcher)
        try:
            return await self._entrypoint.run(event, step)
        finally:
            current_dispatcher.reset(token)


class ProjectHost:
    def __init__(self, config: ProjectConfig, options: HostOptions | None = None) -> None:
        self.config = config
        self.options = options or HostOptions()
        state_dir = self.options.state_dir or config.root / ".dynwf"
        self.database = self.options.database or state_dir / DATABASE_NAME
        self.pool = IsolatePool(max_isolates=self.options.max_isolates,
                                idle_timeout_s=self.options.idle_timeout_s,
                                limits=self.options.limits, log_sink=self._isolate_log)
        self.engine = Engine(self.database, clock=self.options.clock, lease_ms=self.options.lease_ms,
                             concurrency=self.options.concurrency)
        self.ctx = ExecutionContext()
        self.loaders: dict[str, WorkerLoader] = {}
        self.module: ModuleType | None = None
        self.dispatcher: Any = None
        self.env: Any = None
        self.tenant_logs: list[tuple[str, str, str]] = []

    # ---- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        await self.pool.start()
        self.env = self._build_env()
        self.module = self._import_dispatcher()
        from dynamic_workflows import Dispatcher
        self.dispatcher = Dispatcher(self.module, self.env)
        for workflow in self.config.workflows:
            cls = getattr(self.module, workflow.class_name, None)
            if not isinstance(cls, type):
                raise ConfigError(f"class_name \"{workflow.class_name}\" is not defined by "
                                  f"{self.config.main}", hint="run dynwf check")
            self.engine.register(WorkflowDefinition(
                workflow.name, self._factory(cls), step_limit=workflow.step_limit or 10_000,
                compatibility_date=self.config.compatibility_date))

    def _factory(self, cls: type):
        def build(row: Any) -> Any:
            return _AsDispatcher(cls(self.ctx, self.env), self.dispatcher)
        return build

    async def close(self) -> None:
        await self.pool.close()
        self.engine.close()

    # ---- the dispatcher --------------------------------------------------------------------

    def _build_env(self) -> Any:
        values: dict[str, Any] = dict(self.config.vars)
        for workflow in self.config.workflows:
            values[workflow.binding] = self.engine.binding(workflow.name)
        for loader in self.config.worker_loaders:
            self.loaders[loader.binding] = values[loader.binding] = WorkerLoader(self.pool, loader.binding)
        return SimpleNamespace(**values)

    def _import_dispatcher(self) -> ModuleType:
        path = self.config.main_path
        if not path.is_file():
            raise ConfigError(f"main module {self.config.main} does not exist", hint="run dynwf check")
        for folder in (RUNTIME_PATH, str(path.parent)):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        name = f"dynwf_dispatcher_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    async def fetch(self, request: Any) -> Any:
        """Hand an HTTP request to the dispatcher's ``Default.fetch``."""
        assert self.module is not None
        default = getattr(self.module, "Default", None)
        if default is None:
            raise ConfigError(f"{self.config.main} has no Default entrypoint to answer HTTP")
        from dynamic_workflows import current_dispatcher
        token = current_dispatcher.set(self.dispatcher)
        try:
            return await default(self.ctx, self.env).fetch(request)
        finally:
            current_dispatcher.reset(token)

    # ---- logs from isolates ----------------------------------------------------------------

    def _isolate_log(self, label: str, level: str, message: str) -> None:
        """A tenant printed outside any step (in fetch, or at import)."""
        self.tenant_logs.append((label, level, message))
        if len(self.tenant_logs) > 1000:
            del self.tenant_logs[:500]


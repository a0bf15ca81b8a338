"""The project host: the dispatcher module, its ``env``, the engine and the isolate pool together.

The dispatcher (the project's ``main``) is trusted code: it is imported into this process with the
runtime modules on its path, and gets an ``env`` built from the wrangler config: one engine
binding per ``workflows[]`` entry, a Worker Loader per ``worker_loaders[]`` entry, and ``vars``.
Each workflow's ``class_name`` entrypoint is what the engine runs; ``Default.fetch`` answers HTTP.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Callable

from emulator.config.dev_vars import load_dev_vars
from emulator.config.model import ProjectConfig
from emulator.engine import Engine, WorkflowDefinition
from emulator.engine.scheduler import Scheduler, schedules_of
from emulator.engine.stores import open_store
from emulator.clock import Clock
from emulator.defaults import (ENGINE_CONCURRENCY, ISOLATE_IDLE_TIMEOUT_S, ISOLATION, LEASE_MS,
                               MAX_ISOLATES)
from emulator.errors import ConfigError
from emulator.isolates.pool import IsolateLimits, IsolatePool
from emulator.loader import WorkerLoader
from emulator.project import DATABASE_NAME, STATE_DIR_NAME
from emulator.rules.limits import DEFAULT_STEP_LIMIT
from emulator.runtime import make_importable

TenantLogListener = Callable[[str, str, str], None]  # (loader key, level, message)
_EMULATOR_ROOT = Path(__file__).resolve().parent
_reloads = itertools.count(1)


@dataclass
class HostOptions:
    state_dir: Path | None = None          # default: <project>/.dynwf
    #: a URL or a file (engine/stores.py); default: <state_dir>/state.sqlite
    database: str | Path | None = None
    clock: Clock | None = None             # default: SystemClock
    max_isolates: int = MAX_ISOLATES
    idle_timeout_s: float = ISOLATE_IDLE_TIMEOUT_S
    limits: IsolateLimits = field(default_factory=IsolateLimits)
    lease_ms: int = LEASE_MS
    concurrency: int = ENGINE_CONCURRENCY
    isolation: str = ISOLATION             # or "inline": tenant code in this process, for pdb
    vars: dict[str, str] = field(default_factory=dict)   # --var: over .dev.vars over config vars
    #: how a PostgreSQL store's connections name themselves (``dynwf serve`` names each host)
    application_name: str | None = None


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
        self.state_dir = state_dir = self.options.state_dir or config.root / STATE_DIR_NAME
        self.database = self.options.database or state_dir / DATABASE_NAME
        self.pool = IsolatePool(max_isolates=self.options.max_isolates,
                                idle_timeout_s=self.options.idle_timeout_s,
                                limits=self.options.limits, log_sink=self._isolate_log,
                                isolation=self.options.isolation)
        self.engine = Engine(open_store(self.database,
                                        application_name=self.options.application_name),
                             clock=self.options.clock,
                             lease_ms=self.options.lease_ms, concurrency=self.options.concurrency)
        #: the config's cron schedules; ``dynwf dev`` runs it (``Scheduler.run``), nothing else does
        self.scheduler = Scheduler(self.engine.control, self.engine.clock,
                                   schedules_of(config.workflows))
        self.ctx = ExecutionContext()
        self.loaders: dict[str, WorkerLoader] = {}
        self.module: ModuleType | None = None
        self.dispatcher: Any = None
        self.env: Any = None
        self.tenant_logs: list[tuple[str, str, str]] = []
        #: Called with each line a tenant prints outside any step (``dynwf dev`` shows them).
        self.tenant_log_listeners: list[TenantLogListener] = []

    # ---- start and stop --------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.module is not None

    async def start(self) -> None:
        await self.pool.start()
        env, loaders = self._build_env()
        self._install(self._import_dispatcher(self._module_name()), env, loaders)

    async def reload_dispatcher(self, config: ProjectConfig | None = None) -> float:
        """Load the dispatcher again (and ``config``, when the wrangler file changed): a fresh
        import of its module and of the project modules it imported, a new ``env``, and the
        workflows registered again on the same engine. Every isolate is marked stale, since
        each holds bindings into the old dispatcher; calls in flight finish on the old code.

        All or nothing: when the new code fails to import, the old dispatcher keeps serving and
        the error propagates. Returns the seconds the reload took.
        """
        started = time.perf_counter()
        previous_config = self.config
        if config is not None:
            self.config = config
        forgotten = self._forget_project_modules()
        try:
            env, loaders = self._build_env()
            self._install(self._import_dispatcher(self._module_name(next(_reloads))), env, loaders)
        except BaseException:
            self.config = previous_config
            sys.modules.update(forgotten)
            raise
        removed = {w.name for w in previous_config.workflows} - {w.name for w in self.config.workflows}
        for workflow in removed:
            self.engine.workflows.pop(workflow, None)
        self.scheduler.schedules = schedules_of(self.config.workflows)
        self.pool.mark_all_stale()
        return time.perf_counter() - started

    def _install(self, module: ModuleType, env: Any, loaders: dict[str, WorkerLoader]) -> None:
        """Put a freshly imported dispatcher in service (checked first, then swapped at once)."""
        from dynamic_workflows import Dispatcher
        definitions = []
        for workflow in self.config.workflows:
            cls = getattr(module, workflow.class_name, None)
            if not isinstance(cls, type):
                raise ConfigError(f"class_name \"{workflow.class_name}\" is not defined by "
                                  f"{self.config.main}", hint="run dynwf check")
            definitions.append(WorkflowDefinition(
                workflow.name, self._factory(cls), step_limit=workflow.step_limit or DEFAULT_STEP_LIMIT,
                compatibility_date=self.config.compatibility_date))
        self.module, self.env, self.loaders = module, env, loaders
        self.dispatcher = Dispatcher(module, env)
        for definition in definitions:
            self.engine.register(definition)

    def _factory(self, cls: type):
        def build(row: Any) -> Any:
            return _AsDispatcher(cls(self.ctx, self.env), self.dispatcher)
        return build

    async def close(self) -> None:
        """Stop the engine's lifetimes first (their leases handed back, nothing recorded as a
        failure), then the isolates they were calling."""
        await self.engine.shutdown()
        await self.pool.close()
        self.engine.close()

    # ---- the dispatcher --------------------------------------------------------------------

    def _build_env(self) -> tuple[Any, dict[str, WorkerLoader]]:
        # Read at every (re)load, so an edited .dev.vars is seen when the dispatcher reloads.
        values: dict[str, Any] = {**self.config.vars, **load_dev_vars(self.config.root),
                                  **self.options.vars}
        loaders: dict[str, WorkerLoader] = {}
        for workflow in self.config.workflows:
            values[workflow.binding] = self.engine.binding(workflow.name)
        for loader in self.config.worker_loaders:
            loaders[loader.binding] = values[loader.binding] = WorkerLoader(self.pool, loader.binding)
        return SimpleNamespace(**values), loaders

    def _module_name(self, generation: int = 0) -> str:
        name = f"dynwf_dispatcher_{abs(hash(str(self.config.main_path)))}"
        return f"{name}_r{generation}" if generation else name

    def _import_dispatcher(self, name: str) -> ModuleType:
        path = self.config.main_path
        if not path.is_file():
            raise ConfigError(f"main module {self.config.main} does not exist", hint="run dynwf check")
        make_importable()
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module

    def _forget_project_modules(self) -> dict[str, ModuleType]:
        """Drop the dispatcher and the modules it imported from its own folder (``helpers.py``
        beside ``entry.py``), so the next import reads them again; the runtime stays imported.
        Returns what was dropped, to put back if the new code fails to import."""
        folder = self.config.main_path.parent
        # string prefixes, not Path.resolve() per module: that costs ~30 ms over sys.modules
        prefixes = tuple({os.path.join(os.path.abspath(folder), ""),
                          os.path.join(os.path.realpath(folder), "")})
        emulator_root = os.path.join(str(_EMULATOR_ROOT), "")
        forgotten = {}
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if not isinstance(file, str):
                continue
            file = os.path.abspath(file)
            if file.startswith(prefixes) and not file.startswith(emulator_root) \
                    and "site-packages" not in file:
                forgotten[name] = sys.modules.pop(name)
        return forgotten

    async def create_as_tenant(self, metadata: dict[str, Any], options: dict[str, Any], *,
                               workflow: str | None = None) -> str:
        """Create an instance exactly as tenant code does: through ``wrap_workflow_binding``
        with ``metadata`` (envelope, namespaced id). Returns the engine's id."""
        from dynamic_workflows import dispatcher_scope, scoped_instance_id, wrap_workflow_binding
        workflows = {w.name: w for w in self.config.workflows}
        chosen = workflows.get(workflow) if workflow else next(iter(workflows.values()), None)
        if chosen is None:
            from emulator.errors import UsageError
            raise UsageError(f"no workflow named '{workflow}'" if workflow else
                             "the config declares no workflows")
        with dispatcher_scope(self.module, self.env):
            binding = wrap_workflow_binding(metadata, binding_name=chosen.binding)
        instance = await binding.create(options)
        return self.engine.store.key_for(chosen.name, scoped_instance_id(metadata, instance.id))

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
        for listener in tuple(self.tenant_log_listeners):
            try:
                listener(label, level, message)
            except Exception:  # a broken viewer must never break a tenant's call
                pass


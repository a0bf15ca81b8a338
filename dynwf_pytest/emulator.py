"""The emulator a test runs against: one project's dispatcher, engine and isolates, on a fresh
database and a virtual clock that stands still unless a wait skips time or the test advances it.

The async question, and the answer chosen: the engine, the isolate pool and the dispatcher are
asyncio code, and pytest runs plain functions. pytest-asyncio is not a dependency, so the emulator
owns its event loop: ``start()`` makes the loop and starts the host in it; ``run(awaitable)`` runs
test code on that same loop; ``close()`` stops the host and closes the loop. The pytest plugin
runs every ``async def`` test that uses the ``dynwf`` fixture through ``run``, so a test reads like
the platform's JS tests (``await instance.wait_for_status("complete")``), and a plain test can call
``dynwf.run(...)``. With an async test runner of your own, ``async with Emulator(...)`` works too.
"""

from __future__ import annotations

import asyncio
import contextvars
import json as jsonlib
import os
import sys
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping, TypeVar

from emulator import (ISOLATION, ISOLATIONS, HostOptions, ProjectConfig, ProjectHost,
                      ReplayDivergedError, ReplayOutcome, UsageError, VirtualClock,
                      WorkflowBinding, WorkflowConfig, drive_to_end, find_config, load_config,
                      parse_duration, parse_history, replay_history, states, to_datetime,
                      waiting_event_types)

from dynwf_pytest.driver import driver_for
from dynwf_pytest.introspection import (InstanceIntrospector, Modifier, Target,
                                        WorkflowIntrospector, introspect_instance,
                                        introspect_workflow)

T = TypeVar("T")
TENANTS_DIR = "tenants"

_current: ContextVar["Emulator | None"] = ContextVar("dynwf_emulator", default=None)


def current_emulator() -> "Emulator":
    """The emulator whose loop runs the calling code."""
    emulator = _current.get()
    if emulator is None:
        raise UsageError("no dynwf emulator is running this code",
                         hint="use the dynwf fixture, or call the emulator's own methods")
    return emulator


def find_project(project: str | Path) -> Path:
    """The wrangler file of ``project`` (the file itself, or the folder holding it)."""
    return find_config(explicit=Path(project))


def tenant_ids(project: str | Path) -> list[str]:
    """The tenant ids of a project: the folder names under ``tenants/`` beside its wrangler file,
    sorted (what a parametrized test runs over)."""
    folder = find_project(project).parent / TENANTS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "_")))


class Emulator:
    """A project's host (dispatcher, engine, isolates) for tests.

    ``isolation``: ``"process"`` (real isolates, the default) or ``"inline"`` (tenant code in this
    process, for pdb). ``time_skipping``: waits end sleeps and retry back-offs early when nothing
    else can run, one instance's own timer at a time, without moving the clock (turn it off to
    move time only with ``advance``, which moves the whole clock). ``start`` is the virtual clock's
    first instant (a datetime, read as UTC when naive, or epoch ms; default: now).
    """

    def __init__(self, project: str | Path | ProjectConfig, *, state_dir: str | Path,
                 isolation: str = ISOLATION, time_skipping: bool = True,
                 start: datetime | int | None = None, stall_grace_s: float | None = None,
                 host_options: Mapping[str, Any] | None = None) -> None:
        if isolation not in ISOLATIONS:
            raise UsageError(f"isolation must be 'process' or 'inline', not {isolation!r}")
        self.config = project if isinstance(project, ProjectConfig) \
            else load_config(find_project(project))
        self.clock = VirtualClock(_epoch_ms(start), flowing=False)
        self.isolation = isolation
        options = HostOptions(state_dir=Path(state_dir), clock=self.clock,
                              **dict(host_options or {}))
        if isolation != "process":
            if not hasattr(options, "isolation"):
                raise UsageError("this version of the emulator has no inline isolation",
                                 hint="use isolation='process'")
            options.isolation = isolation
        self.host = ProjectHost(self.config, options)
        self.engine = self.host.engine
        self._driver = driver_for(self.engine)
        self._driver.time_skipping = time_skipping
        if stall_grace_s is not None:
            self._driver.stall_grace_s = stall_grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._path_added: str | None = None
        self._modules_before: set[str] = set()

    def __repr__(self) -> str:
        return f"<Emulator {self.config.name} isolation={self.isolation}>"

    # ---- life ------------------------------------------------------------------------------

    @property
    def time_skipping(self) -> bool:
        return self._driver.time_skipping

    @time_skipping.setter
    def time_skipping(self, value: bool) -> None:
        self._driver.time_skipping = bool(value)

    async def astart(self) -> "Emulator":
        """Start the host on the running loop (the isolate pool, then the dispatcher)."""
        folder = str(self.config.main_path.parent)
        self._path_added = folder if folder not in sys.path else None
        self._modules_before = set(sys.modules)
        try:
            await self.host.start()
        except BaseException:
            await self.host.close()   # the isolate pool may be up: its processes must not leak
            self._forget_project()
            raise
        self._started = True
        return self

    async def aclose(self) -> None:
        """Stop the engine's lifetimes, the isolates and the database connection."""
        if not self._started:
            return
        self._started = False
        await self.host.close()
        self._forget_project()

    def _forget_project(self) -> None:
        """The next emulator imports the dispatcher and its helpers afresh: modules imported from
        the dispatcher's folder since ``astart`` are dropped (only those: when the project is the
        test suite's own folder, its test modules were imported before and stay)."""
        folder = os.path.join(os.path.abspath(self.config.main_path.parent), "")
        for name in set(sys.modules) - self._modules_before:
            file = getattr(sys.modules.get(name), "__file__", None)
            if isinstance(file, str) and os.path.abspath(file).startswith(folder):
                del sys.modules[name]
        if self._path_added is not None and self._path_added in sys.path:
            sys.path.remove(self._path_added)

    async def __aenter__(self) -> "Emulator":
        return await self.astart()

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def start(self) -> "Emulator":
        """Start on a loop of the emulator's own (see :meth:`run`)."""
        if self._loop is not None:
            raise UsageError("the emulator is already started")
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self.astart())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the host and close the emulator's loop (tasks still pending are cancelled)."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            loop.run_until_complete(self.aclose())
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def run(self, awaitable: Awaitable[T], *, timeout: float | None = None) -> T:
        """Run ``awaitable`` on the emulator's loop and return its result; with ``timeout``,
        fail after that many real seconds."""
        __tracebackhide__ = True  # pytest shows the test's line, not this helper's
        if self._loop is None:
            raise UsageError("the emulator is not started", hint="call start() first")

        async def bounded() -> T:
            __tracebackhide__ = True
            if timeout is None:
                return await awaitable
            try:
                async with asyncio.timeout(timeout) as scope:
                    return await awaitable
            except TimeoutError:
                if scope.expired():
                    raise TimeoutError(f"the test did not finish within {timeout:g} s of real "
                                       "time (dynwf_timeout)") from None
                raise

        context = contextvars.copy_context()
        context.run(_current.set, self)
        return context.run(self._loop.run_until_complete, bounded())

    # ---- the project -----------------------------------------------------------------------

    @property
    def env(self) -> Any:
        """The dispatcher's ``env`` (bindings, loaders, vars)."""
        return self.host.env

    @property
    def root(self) -> Path:
        return self.config.root

    def workflow(self, name: str | None = None) -> WorkflowConfig:
        """The config of workflow ``name`` (default: the first the wrangler file declares)."""
        workflows = self.config.workflows
        if not workflows:
            raise UsageError(f"{self.config.path.name} declares no workflows")
        if name is None:
            return workflows[0]
        for workflow in workflows:
            if name in (workflow.name, workflow.binding):
                return workflow
        raise UsageError(f"no workflow named '{name}' (the config has: "
                         f"{', '.join(w.name for w in workflows)})")

    def binding(self, workflow: str | None = None) -> WorkflowBinding:
        """The engine's own binding of a workflow (unscoped: every tenant's instances)."""
        return self.engine.binding(self.workflow(workflow).name)

    def tenant_ids(self) -> list[str]:
        return tenant_ids(self.config.path)

    def tenant(self, tenant_id: str, *, workflow: str | None = None,
               metadata: Mapping[str, Any] | None = None) -> "Tenant":
        """A tenant of the project. Its instances carry ``metadata`` (default
        ``{"tenantId": tenant_id}``, what ``dynwf run`` and the templates use)."""
        if not isinstance(tenant_id, str) or not tenant_id:
            raise UsageError(f"a tenant id is a non-empty string, not {tenant_id!r}")
        folder = self.root / TENANTS_DIR
        if folder.is_dir() and not (folder / tenant_id).is_dir():
            raise UsageError(f"no tenant '{tenant_id}' in {TENANTS_DIR}/",
                             hint="tenants: " + (", ".join(self.tenant_ids()) or "none yet"))
        meta = dict(metadata) if metadata is not None else {"tenantId": tenant_id}
        return Tenant(self, tenant_id, self.workflow(workflow), meta)

    # ---- time ------------------------------------------------------------------------------

    def now(self) -> datetime:
        """Workflow time, as a naive UTC datetime."""
        return to_datetime(self.clock.now_ms())

    async def advance(self, duration: Any) -> None:
        """Move the virtual clock forward by ``duration`` ("1 hour", a timedelta, milliseconds),
        firing every timer due on the way at its own time, then run what became runnable."""
        await self._driver.advance(parse_duration(duration, what="advance() duration"))

    async def settle(self) -> None:
        """Run everything that can run now without moving the clock."""
        await self._driver.settle()

    # ---- requests and introspection --------------------------------------------------------

    async def fetch(self, url: str = "http://localhost/", *, method: str = "GET",
                    headers: Mapping[str, str] | None = None, json: Any = None,
                    body: Any = None) -> Any:
        """Send a request to the dispatcher's ``Default.fetch``; returns its ``Response``."""
        from emulator.runtime.workers import Request
        if url.startswith("/"):
            url = "http://localhost" + url
        headers = dict(headers or {})
        if json is not None:
            body = jsonlib.dumps(json)
            headers.setdefault("content-type", "application/json")
            if method == "GET":
                method = "POST"
        return await self.host.fetch(Request(url, method=method, headers=headers, body=body))

    async def replay(self, history: str | Path) -> ReplayOutcome:
        """Replay a history file (``dynwf instances export``) against the project's current
        code, answering every step from it (no body runs, nothing is written): a real run kept
        as a regression test. Returns the outcome when compatible; raises
        :class:`~emulator.errors.ReplayDivergedError` with the step expected, the step the code
        runs now and its file and line otherwise. A relative path is read from the project."""
        path = Path(history)
        if not path.is_absolute() and not path.is_file():
            path = self.root / path
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the history {history}: {exc.strerror or exc}",
                             hint="export one: dynwf instances export ID > FILE") from None
        outcome = await replay_history(self.host, parse_history(text, where=str(history)))
        if not outcome.ok:
            where = outcome.path or outcome.file
            raise ReplayDivergedError(
                f"{history}: instance {outcome.instance} {outcome.verdict.replace('_', ' ')}: "
                f"{outcome.message}" + (f" (at {where}:{outcome.line})" if where else ""),
                hint="a compatible change keeps the recorded steps in their order; to move such "
                     "an instance on, rerun it from the changed step (dynwf instances rerun)")
        return outcome

    def introspect_instance(self, binding_or_tenant: Any, instance_id: str) -> InstanceIntrospector:
        """Like :func:`dynwf_pytest.introspect_instance`; a bare tenant id is this emulator's."""
        if isinstance(binding_or_tenant, str) and binding_or_tenant:
            binding_or_tenant = self.tenant(binding_or_tenant)
        return introspect_instance(binding_or_tenant, instance_id)

    def introspect_workflow(self, binding_or_tenant: Any = None) -> WorkflowIntrospector:
        """Like :func:`dynwf_pytest.introspect_workflow`; None is the first workflow, unscoped."""
        if binding_or_tenant is None:
            binding_or_tenant = self.binding()
        elif isinstance(binding_or_tenant, str) and binding_or_tenant:
            binding_or_tenant = self.tenant(binding_or_tenant)
        return introspect_workflow(binding_or_tenant)


def _epoch_ms(start: datetime | int | None) -> int | None:
    if start is None or isinstance(start, int):
        return start
    if isinstance(start, datetime):
        aware = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
        return round(aware.timestamp() * 1000)
    raise UsageError(f"start is a datetime or epoch milliseconds, not {type(start).__name__}")


# ---- tenants ----------------------------------------------------------------------------------

@dataclass
class TenantRun:
    """What :meth:`Tenant.run` saw: the instance's end (or where it was left waiting)."""

    instance: InstanceIntrospector
    status: str
    output: Any = None
    error: dict[str, str] | None = None
    waiting_for: list[str] = field(default_factory=list)    # event types, when left waiting

    @property
    def id(self) -> str:
        return self.instance.id

    @property
    def steps(self) -> list[dict[str, Any]]:
        return self.instance.steps()

    def step_names(self) -> list[str]:
        return [s["name"] for s in self.steps]


class Tenant:
    """One tenant's code (``tenants/<id>/``) as the dispatcher runs it: instances are created
    through a binding wrapped with the tenant's metadata, exactly as the tenant's own
    ``env.WORKFLOWS.create`` creates them."""

    def __init__(self, emulator: Emulator, tenant_id: str, workflow: WorkflowConfig,
                 metadata: dict[str, Any]) -> None:
        self.emulator = emulator
        self.id = tenant_id
        self.workflow = workflow
        self.metadata = metadata
        self.target = Target(emulator.engine, workflow.name, metadata)

    def __repr__(self) -> str:
        return f"<Tenant {self.id}>"

    @property
    def directory(self) -> Path:
        return self.emulator.root / TENANTS_DIR / self.id

    @property
    def binding(self) -> Any:
        """The tenant's wrapped binding: what its ``env.WORKFLOWS`` is."""
        from emulator.runtime.dynamic_workflows import dispatcher_scope, wrap_workflow_binding
        with dispatcher_scope(self.emulator.host.module, self.emulator.host.env):
            return wrap_workflow_binding(self.metadata, binding_name=self.workflow.binding)

    def introspect_instance(self, instance_id: str) -> InstanceIntrospector:
        return introspect_instance(self, instance_id)

    def introspect_workflow(self) -> WorkflowIntrospector:
        return introspect_workflow(self)

    async def create(self, params: Any = None, *, id: str | None = None,
                     modify: Callable[[Modifier], Any] | None = None) -> InstanceIntrospector:
        """Create an instance as the tenant would; ``modify`` is applied before it can run."""
        instance = introspect_instance(self, id or uuid.uuid4().hex)
        if modify is not None:
            await instance.modify(modify)
        await self.binding.create({"id": instance.id, "params": {} if params is None else params})
        return instance

    async def run(self, params: Any = None, *, id: str | None = None,
                  events: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
                  modify: Callable[[Modifier], Any] | None = None) -> TenantRun:
        """Create an instance and drive it to its end, skipping time; each event of ``events``
        (``{type: payload}`` or ``[(type, payload), ...]``) is sent when a wait asks for its type.
        Returns where it ended, or where it was left waiting for an event not supplied."""
        pending = list(events.items()) if isinstance(events, Mapping) else list(events or [])
        instance = await self.create(params, id=id, modify=modify)
        engine = self.emulator.engine
        driver = driver_for(engine)

        async def advance() -> None:
            await driver.run_until(instance._finished, grace_s=0)
        await drive_to_end(engine, instance.instance_id, pending, advance)
        status = await instance.status()
        waiting = [] if states.is_finished(status["status"]) \
            else waiting_event_types(engine.store, instance.instance_id)
        return TenantRun(instance, status["status"], status["output"], status["error"], waiting)

"""``dynwf run``: one instance, created the way a tenant would create it, driven to its end.

The instance is created through ``wrap_workflow_binding`` with the tenant's metadata, so it runs
exactly as a tenant's own instance does (envelope, namespaced id, the dispatcher's
``load_runner``, the tenant's isolate). The engine of a run works on that one instance only:
instances left in the state by other sessions are not touched.

Time: by default a flowing virtual clock, so sleeps and retry back-offs are skipped (a 24-hour
sleep takes no time) and shown as skipped; ``real_time`` waits for real. A run stops when the
instance finishes, or when all it does is wait for an event nobody supplied.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from emulator.clock import SystemClock, VirtualClock
from emulator.rules import states
from emulator.engine.progress import Progress
from emulator.error_codes import Code
from emulator.errors import DynwfError, UsageError
from emulator.host import HostOptions, ProjectHost
from emulator.interpreter import tune_for_serving
from emulator.project import Project


class RunError(DynwfError):
    code = Code.RUN_INVALID


@dataclass
class RunOptions:
    tenant: str
    params: Any = None
    workflow: str | None = None
    instance_id: str | None = None
    metadata: dict[str, Any] | None = None
    events: list[tuple[str, Any]] = field(default_factory=list)   # (type, payload) to supply
    real_time: bool = False
    isolation: str = "process"


@dataclass
class RunResult:
    instance_id: str                 # the engine's id
    tenant_instance_id: str          # the id the tenant sees
    tenant: str
    status: str
    output: Any = None
    error: dict[str, str] | None = None
    waiting_for: list[str] = field(default_factory=list)   # event types, when left waiting

    @property
    def finished(self) -> bool:
        return states.is_finished(self.status)

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.instance_id, "tenant_instance": self.tenant_instance_id,
                "tenant": self.tenant, "status": self.status, "output": self.output, "error": self.error,
                "waiting_for": self.waiting_for}


class RunSession:
    """A host started for one run: create the instance, drive it, supply events, close."""

    def __init__(self, project: Project, options: RunOptions) -> None:
        self.project = project
        self.options = options
        workflows = project.config.workflows
        if not workflows:
            raise RunError("the config declares no workflows", hint="add a workflows entry to "
                           f"{project.config.path.name}")
        names = [w.name for w in workflows]
        chosen = options.workflow or names[0]
        if chosen not in names:
            raise UsageError(f"no workflow named '{chosen}' (the config has: {', '.join(names)})")
        self.workflow = next(w for w in workflows if w.name == chosen)
        self.metadata = options.metadata if options.metadata is not None else {"tenantId": options.tenant}
        self._check_tenant()
        clock = SystemClock() if options.real_time else VirtualClock()
        self.host = ProjectHost(project.config, HostOptions(state_dir=project.state_dir, clock=clock,
                                                            isolation=options.isolation))
        self.instance_id = ""
        self.tenant_instance_id = options.instance_id or uuid.uuid4().hex
        self._events = list(options.events)

    def _check_tenant(self) -> None:
        tenants = self.project.tenants_dir
        if tenants.is_dir() and not (tenants / self.options.tenant).is_dir():
            known = sorted(p.name for p in tenants.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise UsageError(f"no tenant '{self.options.tenant}' in {tenants.name}/",
                             hint="tenants: " + (", ".join(known) or "none yet"))

    async def __aenter__(self) -> "RunSession":
        from emulator.runtime.dynamic_workflows import scoped_instance_id
        self.instance_id = scoped_instance_id(self.metadata, self.tenant_instance_id)
        self.host.engine.only = {self.instance_id}
        tune_for_serving()
        await self.host.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.host.close()

    def subscribe(self, callback: Callable[[Progress], None]) -> Callable[[], None]:
        """Progress of this run's instance only."""
        return self.host.engine.progress.subscribe(
            lambda event: callback(event) if event.instance_id == self.instance_id else None)

    async def create(self) -> str:
        # no --params: an empty payload, as the platform's local engine gives (docs/semantics.md §7.2)
        options = {"id": self.tenant_instance_id,
                   "params": {} if self.options.params is None else self.options.params}
        return await self.host.create_as_tenant(self.metadata, options, workflow=self.workflow.name)

    async def drive(self) -> RunResult:
        """Run until the instance finishes, or waits for an event this run cannot supply."""
        engine = self.host.engine
        idle_rounds = 0
        while True:
            if self.options.real_time:
                await self._serve_until_settled()
            else:
                await engine.drain(until=self._finished)
            result = self.result()
            if result.finished or result.status == states.PAUSED:
                return result
            if not result.waiting_for:
                idle_rounds += 1
                if idle_rounds > 50:  # nothing left that this run can move (e.g. paused elsewhere)
                    return result
                await asyncio.sleep(0.01)
                continue
            idle_rounds = 0
            supplied = next((e for e in self._events if e[0] in result.waiting_for), None)
            if supplied is None:
                return result
            self._events.remove(supplied)
            engine.control.send_event(self.instance_id, supplied[0], supplied[1])

    async def _serve_until_settled(self) -> None:
        stop = asyncio.Event()
        server = asyncio.get_running_loop().create_task(self.host.engine.serve(stop))
        try:
            while not (self._finished() or self._only_waiting_for_events()):
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await server

    def send_event(self, event_type: str, payload: Any) -> None:
        self.host.engine.control.send_event(self.instance_id, event_type, payload)

    def _finished(self) -> bool:
        return states.is_finished(self.host.engine.store.get_instance(self.instance_id).status)

    def _only_waiting_for_events(self) -> bool:
        store = self.host.engine.store
        row = store.get_instance(self.instance_id)
        return row.status == states.WAITING and \
            {t.kind for t in store.timers_of(self.instance_id)} <= {"event_timeout"} and \
            bool(self._waiting_types())

    def _waiting_types(self) -> list[str]:
        return [s.event_type for s in self.host.engine.store.list_steps(self.instance_id)
                if s.kind == "wait" and s.status == "waiting" and s.event_type]

    def result(self) -> RunResult:
        row = self.host.engine.store.get_instance(self.instance_id)
        return RunResult(
            self.instance_id, self.tenant_instance_id, self.options.tenant, row.status,
            output=json.loads(row.output) if row.output is not None else None,
            error=json.loads(row.error) if row.error is not None else None,
            waiting_for=[] if states.is_finished(row.status) else self._waiting_types())

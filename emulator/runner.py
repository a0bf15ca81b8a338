"""Driving one instance to its end: ``dynwf run``'s session, and the loop it shares with the
pytest plugin's ``Tenant.run`` (:func:`drive_to_end`).

``dynwf run``: one instance, created the way a tenant would create it, driven to its end.

The instance is created through ``wrap_workflow_binding`` with the tenant's metadata, so it runs
exactly as a tenant's own instance does (envelope, namespaced id, the dispatcher's
``load_runner``, the tenant's isolate). The engine of a run works on that one instance only:
instances left in the state by other sessions are not touched.

Time: by default a flowing virtual clock, so sleeps and retry back-offs are skipped (a 24-hour
sleep takes no time) and shown as skipped; ``real_time`` waits for real. A run stops when the
instance finishes, or when all it does is wait for an event nobody supplied.

Resuming (``RunOptions.resume``): the session takes an instance already in the state file (left
waiting, or queued after an interrupted run) and drives it the same way, instead of creating one.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from emulator.clock import SystemClock, VirtualClock
from emulator.rules import states
from emulator.rules.steps import StepKind, StepStatus, TimerKind
from emulator.rules.tenant_scope import scoped_instance_id
from emulator.rules.values import display_json
from emulator.engine import Engine
from emulator.engine.progress import Progress
from emulator.engine.store import InstanceRow, Store
from emulator.error_codes import Code
from emulator.errors import (AmbiguousInstanceError, DynwfError, InstanceNotFoundError,
                             UsageError)
from emulator.host import HostOptions, ProjectHost
from emulator.interpreter import tune_for_serving
from emulator.ops import InstanceOps, StateNotFoundError, envelope_of, visible_id
from emulator.project import Project


#: Real seconds between looks at an instance that neither finished nor waits for an event.
IDLE_LOOK_S = 0.01


class RunError(DynwfError):
    code = Code.RUN_INVALID


def waiting_event_types(store: Store, instance_id: str) -> list[str]:
    """The event types the instance's waits ask for now, oldest wait first."""
    return [s.event_type for s in store.list_steps(instance_id)
            if s.kind == StepKind.WAIT and s.status == StepStatus.WAITING and s.event_type]


async def drive_to_end(engine: Engine, instance_id: str, events: list[tuple[str, Any]],
                       advance: Callable[[], Awaitable[None]], *, stop_when_paused: bool = False,
                       idle_looks: int = 0) -> None:
    """Drive an instance until it finishes, or waits for an event that ``events`` does not hold.

    ``advance()`` runs the engine as far as it goes now (the caller's choice of clock and of
    which timers it may skip). Then, while the instance waits for an event, the first
    ``(type, payload)`` of ``events`` whose type a wait asks for is sent (and removed from the
    list, so a later call goes on with the rest) and the engine runs again. An instance that
    neither finished nor waits for an event is looked at again ``idle_looks`` times,
    :data:`IDLE_LOOK_S` apart, before the drive gives up on it (something outside the drive,
    another process, may still move it); with ``stop_when_paused`` a paused instance ends
    the drive at once.
    """
    idle = 0
    while True:
        await advance()
        status = engine.store.get_instance(instance_id).status
        if states.is_finished(status) or (stop_when_paused and status == states.PAUSED):
            return
        waiting = waiting_event_types(engine.store, instance_id)
        if not waiting:
            if idle >= idle_looks:
                return
            idle += 1
            await asyncio.sleep(IDLE_LOOK_S)
            continue
        idle = 0
        supplied = next((e for e in events if e[0] in waiting), None)
        if supplied is None:
            return
        events.remove(supplied)
        engine.control.send_event(instance_id, supplied[0], supplied[1])


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
    vars: dict[str, str] = field(default_factory=dict)    # --var, over .dev.vars and config vars
    resume: str | None = None    # an existing instance to continue (the tenant's id, or the real one)


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
        self._check_tenant()
        resumed = self._resumed_row() if options.resume is not None else None
        workflows = project.config.workflows
        if not workflows:
            raise RunError("the config declares no workflows", hint="add a workflows entry to "
                           f"{project.config.path.name}")
        names = [w.name for w in workflows]
        chosen = resumed.workflow if resumed is not None else options.workflow or names[0]
        if chosen not in names:
            raise UsageError(f"no workflow named '{chosen}' (the config has: {', '.join(names)})")
        self.workflow = next(w for w in workflows if w.name == chosen)
        self.metadata = options.metadata if options.metadata is not None else {"tenantId": options.tenant}
        if resumed is not None:
            self.metadata = envelope_of(resumed)[0] or self.metadata
        clock = SystemClock() if options.real_time else VirtualClock()
        self.host = ProjectHost(project.config, HostOptions(state_dir=project.state_dir,
                                                            database=project.store_url, clock=clock,
                                                            isolation=options.isolation,
                                                            vars=options.vars))
        self.instance_id = ""
        self.tenant_instance_id = options.instance_id or uuid.uuid4().hex
        #: the real id of the instance resumed, which no metadata is needed to find
        self._resumed_id = resumed.id if resumed is not None else None
        if resumed is not None:
            self.tenant_instance_id = visible_id(self.metadata, resumed.known_as) or resumed.known_as
        self._events = list(options.events)

    def _check_tenant(self) -> None:
        tenants = self.project.tenants_dir
        if tenants.is_dir() and not (tenants / self.options.tenant).is_dir():
            known = sorted(p.name for p in tenants.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise UsageError(f"no tenant '{self.options.tenant}' in {tenants.name}/",
                             hint="tenants: " + (", ".join(known) or "none yet"))

    def _resumed_row(self) -> InstanceRow:
        """The instance ``--resume`` names, found as ``dynwf instances`` finds it, if this run can
        continue it; a paused or finished one is refused with the command that applies instead
        (a run that quietly resumed a pause, or did nothing, would hide what happened)."""
        given, tenant = self.options.resume or "", self.options.tenant
        try:
            with InstanceOps.open(self.project) as ops:
                row = ops.resolve(given, tenant, self.options.workflow)
        except (StateNotFoundError, InstanceNotFoundError, AmbiguousInstanceError) as exc:
            raise UsageError(f"--resume: {exc.message}", hint=exc.hint or "dynwf instances list "
                             f"--tenant {tenant}") from None
        named = f"{given} --tenant {tenant}"
        if row.status in (states.PAUSED, states.WAITING_FOR_PAUSE):
            raise UsageError(f"--resume: instance {given} of tenant {tenant} is {row.status}; "
                             "a run does not lift a pause",
                             hint=f"dynwf instances resume {named}, then dynwf run --resume {named}")
        if states.is_finished(row.status):
            raise UsageError(f"--resume: instance {given} of tenant {tenant} is {row.status}: "
                             "finished, nothing is left to run",
                             hint=f"to run it again from the top: dynwf instances restart {named}")
        return row

    @property
    def resuming(self) -> bool:
        return self._resumed_id is not None

    async def __aenter__(self) -> "RunSession":
        # ids are per workflow: the engine's key differs from the id when another workflow's
        # instance had it first (docs/semantics.md §1.2)
        self.instance_id = self._resumed_id or self.host.engine.store.key_for(
            self.workflow.name, scoped_instance_id(self.metadata, self.tenant_instance_id))
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

        async def advance() -> None:
            if self.options.real_time:
                await self._serve_until_settled()
            else:
                await engine.drain(until=self._finished)
        # 50 looks: half a second for what this run cannot move itself (a pause from elsewhere)
        await drive_to_end(engine, self.instance_id, self._events, advance,
                           stop_when_paused=True, idle_looks=50)
        return self.result()

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
            {t.kind for t in store.timers_of(self.instance_id)} <= {TimerKind.EVENT_TIMEOUT} and \
            bool(self._waiting_types())

    def _waiting_types(self) -> list[str]:
        return waiting_event_types(self.host.engine.store, self.instance_id)

    def result(self) -> RunResult:
        row = self.host.engine.store.get_instance(self.instance_id)
        return RunResult(
            self.instance_id, self.tenant_instance_id, self.options.tenant, row.status,
            output=display_json(row.output) if row.output is not None else None,
            error=json.loads(row.error) if row.error is not None else None,
            waiting_for=[] if states.is_finished(row.status) else self._waiting_types())

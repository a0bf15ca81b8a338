"""Replay checks: a recorded history run against the tenant's current code, before any instance
wakes on it (``dynwf replay``, ``dynwf dev``'s reload, the pytest plugin's ``replay``).

The code runs where it always runs (the project's dispatcher in the host, the tenant's code in
its isolate) with a step client in *replay-only* mode (``sdk/client.py``): every step is
answered from the history in the order recorded, no step body runs, no timer is set, and the
run stops at the first step the history holds no outcome for: the instance had not got that far,
so whatever the code does there is new ground, which the change cannot break. The engine's half
is :class:`ReplayBackend`, which writes nothing: the state a replay reads is never changed by it.

Tried first: replaying through the engine itself, on a copy of the state file, with the
instance's lease. That ran step bodies as soon as the history ended and needed the copy thrown
away; a backend that owns nothing and answers nothing new is simpler and cannot write.

A verdict per instance:

- ``compatible``: the code reaches every recorded step in the recorded order (then stops where
  the history ends, or returns or raises as the recorded run did);
- ``diverges``: it reaches another step than the one recorded next (an inserted, renamed,
  removed or reordered step), returns before a recorded step, or raises where the recorded run
  did not; with the step expected, the step reached and the tenant's file and line;
- ``fails_to_load``: the workflow or the tenant's code cannot be loaded at all.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.clock import to_datetime
from emulator.defaults import PLAYGROUND_WORKFLOW
from emulator.engine.history import History
from emulator.error_codes import ISOLATE_FAULTS, Code, code_of
from emulator.rules.steps import ENDED, StepKey
from emulator.rules.values import decode_json
from emulator.sdk.client import CachedStep, StepClient, show_step
from emulator.sdk.step import WorkflowStep, uses_implicit_dependencies
from emulator.tracebacks import traceback_of

COMPATIBLE = "compatible"
DIVERGES = "diverges"
FAILS_TO_LOAD = "fails_to_load"
#: How long one replay may take: every step is answered at once, so only code that loops or
#: waits on something outside the history takes long.
REPLAY_TIMEOUT_S = 30.0
#: Errors that say the code could not be loaded, not that it ran differently.
_LOAD_FAULTS = {Code.TENANT_INVALID_PYTHON, Code.LOADER_INVALID_CODE, Code.WORKFLOW_NOT_FOUND,
                Code.DISPATCHER_MISCONFIGURED, *ISOLATE_FAULTS}
#: Errors raised while a module loads: the code never got to run.
_LOAD_ERRORS = {"SyntaxError", "IndentationError", "TabError", "ImportError",
                "ModuleNotFoundError"}
_SYNTAX_AT = re.compile(r"\(([^()]+\.py), line (\d+)\)$")
_MISMATCH = re.compile(r"expected (.+) but the code now runs (.+?) \(")


@dataclass
class ReplayOutcome:
    """One instance's verdict, JSON-ready with :meth:`to_json`."""

    instance: str
    workflow: str
    tenant: Any
    verdict: str
    message: str
    expected: str | None = None      # the step the history holds next
    reached: str | None = None       # the step the code runs there now
    file: str | None = None          # the tenant's file, as the traceback names it
    path: str | None = None          # that file in the project (for CI annotations)
    line: int | None = None
    replayed: int = 0                # steps answered from the history
    stopped_at: str | None = None    # where the history ended (compatible)

    @property
    def ok(self) -> bool:
        return self.verdict == COMPATIBLE

    def to_json(self) -> dict[str, Any]:
        return {"instance": self.instance, "workflow": self.workflow, "tenant": self.tenant,
                "verdict": self.verdict, "message": self.message, "expected": self.expected,
                "reached": self.reached, "file": self.path or self.file, "line": self.line,
                "replayed": self.replayed, "stopped_at": self.stopped_at}


class ReplayBackend:
    """The engine's side of a replay check: answers nothing new and writes nothing. A client in
    replay-only mode calls only :meth:`history_end`; anything else (an isolate whose client was
    switched off) counts as the end of the history too, and is never recorded."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.steps: dict[StepKey, Any] = {}
        self.replayed: list[StepKey] = []
        self.ended: asyncio.Future[StepKey] = asyncio.get_running_loop().create_future()
        #: what every call past the history waits on: cancelled when the check is over, so no
        #: call an isolate made is left pending in the host
        self._over: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def history_end(self, key: StepKey) -> None:
        if not self.ended.done():
            self.ended.set_result(key)
        await asyncio.shield(self._over)
        raise asyncio.CancelledError()

    def release(self) -> None:
        """The check is over: the calls still waiting end (cancelled)."""
        if not self._over.done():
            self._over.set_result(None)

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def begin(self, key: StepKey, attempt: int, config_json: str) -> None:
        if not self.ended.done():
            self.ended.set_result(key)

    async def settle(self, key: StepKey, *args: Any) -> dict[str, Any]:
        await self.history_end(key)
        return {}

    async def await_retry(self, key: StepKey) -> None:
        await self.history_end(key)

    async def sleep(self, key: StepKey, duration_ms: int | None, due: int | None) -> None:
        await self.history_end(key)

    async def wait_for_event(self, key: StepKey, event_type: str, timeout_ms: int) -> dict[str, Any]:
        await self.history_end(key)
        return {}

    async def boundary(self) -> None:
        """Nothing to pause: a replay check holds no instance."""

    def cancelled(self, key: StepKey, attempt: int) -> None:
        """A replay check records nothing."""

    def log(self, key: StepKey | None, level: str, message: str) -> None:
        """What the code prints while replaying is not the instance's: dropped."""

    def record_code_version(self, version: str) -> None:
        """The instance keeps the code it started on."""


async def replay_history(host: Any, history: History, *,
                         timeout_s: float = REPLAY_TIMEOUT_S) -> ReplayOutcome:
    """Replay ``history`` against the code ``host`` (a started ``ProjectHost``) runs now."""
    row = history.instance
    outcome = ReplayOutcome(row.id, row.workflow, history.tenant, COMPATIBLE, "")
    definition = host.engine.workflows.get(row.workflow)
    if definition is None:
        outcome.verdict = FAILS_TO_LOAD
        outcome.message = f"the config has no workflow named '{row.workflow}'"
        return outcome
    cache = {s.key: CachedStep(s.status, s.attempts, s.config, s.result, s.error)
             for s in history.steps}
    backend = ReplayBackend(host.engine.clock)
    client = StepClient(backend, row.id, cache, step_limit=definition.step_limit,
                        on_replay=backend.replayed.append, code_version=row.code_version,
                        replay_only=True)
    step = WorkflowStep(client, implicit_dependencies=uses_implicit_dependencies(
        definition.compatibility_date))
    event = {"payload": decode_json(row.params), "timestamp": to_datetime(row.created_at),
             "instanceId": row.known_as, "workflowName": row.workflow}

    async def run() -> Any:
        runner = definition.factory(row)
        if inspect.isawaitable(runner):
            runner = await runner
        result = runner.run(event, step)
        return await result if inspect.isawaitable(result) else result

    task = asyncio.get_running_loop().create_task(run())
    try:
        await asyncio.wait({task, backend.ended}, timeout=timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await _cancel(task)
    finally:
        backend.release()
    return _verdict(outcome, history, task, backend, host, timeout_s)


def _verdict(outcome: ReplayOutcome, history: History, task: asyncio.Task[Any],
             backend: ReplayBackend, host: Any, timeout_s: float) -> ReplayOutcome:
    outcome.replayed = len(dict.fromkeys(backend.replayed))
    if backend.ended.done():
        outcome.stopped_at = show_step(backend.ended.result())
        outcome.message = (f"replays its {outcome.replayed} recorded step(s); the history ends at "
                           f"{outcome.stopped_at}, which the code reaches next")
        return outcome
    if task.cancelled():
        outcome.verdict = DIVERGES
        outcome.message = (f"the replay did not reach the end of the history within "
                           f"{timeout_s:g}s: the code waits on something the history does not "
                           "hold, or loops")
        return outcome
    exc = task.exception()
    if exc is not None:
        return _raised(outcome, history, exc, host)
    unreached = [s for s in history.steps
                 if s.status in ENDED and s.key not in set(backend.replayed)]
    if unreached:
        outcome.verdict = DIVERGES
        outcome.expected = show_step(unreached[0].key)
        outcome.reached = "the end of run()"
        outcome.message = (f"expected {outcome.expected} but run() now returns before reaching "
                           "it (the step was removed, or the code takes another branch)")
        return outcome
    outcome.message = f"replays its {outcome.replayed} recorded step(s) and run() returns"
    return outcome


def _raised(outcome: ReplayOutcome, history: History, exc: BaseException,
            host: Any) -> ReplayOutcome:
    code = code_of(exc)
    message = getattr(exc, "message", None) or str(exc)
    frames = [f for f in traceback_of(exc) if "file" in f]
    if frames:
        outcome.file, outcome.line = frames[-1]["file"], frames[-1]["line"]
        outcome.path = project_path(host.config.root, outcome.file)
    if code == Code.REPLAY_MISMATCH:
        outcome.verdict = DIVERGES
        found = _MISMATCH.search(message)
        if found:
            outcome.expected, outcome.reached = found.group(1), found.group(2)
            outcome.message = f"expected {outcome.expected} but the code now runs {outcome.reached}"
        else:
            outcome.message = message
        return outcome
    name = getattr(exc, "name", None) or type(exc).__name__
    if code in _LOAD_FAULTS or name in _LOAD_ERRORS:
        outcome.verdict = FAILS_TO_LOAD
        outcome.message = f"[{code}] {message}" if code else f"{name}: {message}"
        found = _SYNTAX_AT.search(message)
        if found and outcome.file is None and history.tenant is not None:
            outcome.file, outcome.line = f"{history.tenant}/{found.group(1)}", int(found.group(2))
            outcome.path = project_path(host.config.root, outcome.file)
        return outcome
    recorded = json.loads(history.instance.error) if history.instance.error else None
    if recorded and recorded.get("message") == message:
        outcome.message = f"replays its {outcome.replayed} recorded step(s) and run() raises " \
                          f"as it did: {name}: {message}"
        return outcome
    outcome.verdict = DIVERGES
    outcome.message = f"run() now raises {name}: {message}"
    return outcome


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    try:
        await task
    except BaseException:   # noqa: BLE001 - a cancelled replay's end is not news
        pass


def select_histories(store: Any, *, tenants: list[str] = (), instances: list[str] = (),
                     workflow: str | None = None, with_playground: bool = False) -> list[History]:
    """The histories ``dynwf replay`` checks: the instances named (read as ``resolve_id`` reads
    an id, with the one ``--tenant`` given), else every instance not finished, of the tenants
    named or of all."""
    from emulator.engine.history import read_history
    from emulator.ops import resolve_id
    from emulator.rules import states
    if instances:
        tenant = tenants[0] if len(tenants) == 1 else None
        keys = [resolve_id(store, given, tenant, workflow).id for given in instances]
    else:
        rows = []
        for tenant in (tenants or [None]):
            rows += store.list_instances(tenant=tenant, workflow=workflow, limit=1_000_000)
        # a playground instance's code lives with the dev server that made it: only that
        # server replays it (on its reloads)
        keys = [row.id for row in sorted(rows, key=lambda r: r.created_at)
                if not states.is_finished(row.status)
                and (with_playground or row.workflow != PLAYGROUND_WORKFLOW)]
    return [read_history(store, key) for key in dict.fromkeys(keys)]


async def replay_project(project: Any, *, tenants: list[str] = (), instances: list[str] = (),
                         history_files: list[Path] = (), isolation: str | None = None,
                         workflow: str | None = None) -> list[ReplayOutcome]:
    """``dynwf replay``: the chosen histories of ``project`` (and the history files given)
    against its current code. The database is only read. A SQLite file is copied first (SQLite's
    backup, through a read-only connection) and read from the copy, so not even a migration
    touches the original; a PostgreSQL database (``--database``) is read with selects. The host
    the code runs in has a scratch database of its own, which nothing reads."""
    import tempfile

    from emulator.engine.history import parse_history
    from emulator.host import HostOptions, ProjectHost

    histories: list[History] = []
    from_store = bool(instances or tenants or not history_files)
    with tempfile.TemporaryDirectory(prefix="dynwf-replay-") as scratch:
        if from_store:
            found = _read_histories(project, Path(scratch), tenants=list(tenants),
                                    instances=list(instances), workflow=workflow)
            if found is None:
                return []               # nothing has run yet: no instance is in flight
            histories += found
        for path in history_files:
            histories.append(parse_history(Path(path).read_bytes(), where=str(path)))
        options = HostOptions(state_dir=Path(scratch), database=Path(scratch) / "host.sqlite")
        if isolation is not None:
            options.isolation = isolation
        host = ProjectHost(project.config, options)
        try:
            try:
                await host.start()
            except Exception as exc:   # noqa: BLE001 - the dispatcher itself cannot load
                return [ReplayOutcome(h.instance.id, h.instance.workflow, h.tenant, FAILS_TO_LOAD,
                                      f"the dispatcher does not load: {type(exc).__name__}: "
                                      f"{getattr(exc, 'message', None) or exc}")
                        for h in histories]
            return [await replay_history(host, history) for history in histories]
        finally:
            await host.close()


def _read_histories(project: Any, scratch: Path, *, tenants: list[str], instances: list[str],
                    workflow: str | None) -> list[History] | None:
    """The histories ``dynwf replay`` checks, read without writing (see ``replay_project``);
    None when the project has no SQLite state file yet and nothing was named."""
    import sqlite3

    from emulator.engine.stores import is_postgres, open_store as open_store_at, sqlite_path
    from emulator.ops import open_store

    url = project.store_url
    if is_postgres(url):
        store = open_store(project)
    else:
        path = sqlite_path(url) if project.database_url else project.database
        if path is None or not path.is_file():
            if not instances and not tenants:
                return None
            open_store(project)         # the usual "no instances yet" error
        copy = scratch / "state.sqlite"
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        target = sqlite3.connect(str(copy))
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        store = open_store_at(copy)
    try:
        return select_histories(store, tenants=tenants, instances=instances, workflow=workflow)
    finally:
        store.close()


def project_path(root: Path, shown: str) -> str | None:
    """The project file a traceback names as ``shown`` (``acme/index.py`` for the dispatcher's
    ``tenants/acme/index.py``), relative to ``root``; None when none matches."""
    shown = shown.replace("\\", "/").lstrip("/")
    direct = root / shown
    if direct.is_file():
        return shown
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("node_modules",
                                                                          "__pycache__")]
        for name in files:
            path = Path(folder, name)
            relative = path.relative_to(root).as_posix()
            if relative.endswith("/" + shown):
                return relative
    return None


__all__ = ["COMPATIBLE", "DIVERGES", "FAILS_TO_LOAD", "ReplayBackend", "ReplayOutcome",
           "project_path", "replay_history", "replay_project", "select_histories"]

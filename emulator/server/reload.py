"""Hot reload for ``dynwf dev``: one file watcher over the whole project.

One ``watchfiles`` watcher, never one per tenant: inotify instances are scarce (128 per user is
common) and a project may have hundreds of tenants. Every kind of change counts, "added"
included, because an editor's atomic save (write a temporary file, rename it over the original)
arrives as the original being *added*, not modified. The state folder, caches, version control
and editors' temporary files are ignored.

What a change means:

- ``tenants/<id>/...``: that tenant's isolates are marked stale in every Worker Loader, so the
  next call loads the new code while a call in flight finishes on the old. The tenant's ``.py``
  files are also compiled here (never run), only to report a syntax error with its file and
  line at once; the other tenants never notice, and the next request for this one fails with
  the same error.
- the dispatcher (the ``main`` module, or any ``.py`` beside it), the wrangler file or the
  ``.dev.vars`` beside it: the dispatcher is imported again with its ``env`` built anew
  (:meth:`ProjectHost.reload_dispatcher`), as ``wrangler dev`` restarts on either file; if the
  new code, config or values do not load, the old dispatcher keeps serving and the error is
  reported.
- any other ``.py`` file of the project: a dispatcher may read tenant code from any folder
  (``agents/<id>/``, ``repos/<name>/``), and which tenant a file belongs to is its business, so
  every isolate is marked stale and reloads at its next call. Other files (data, output a
  dispatcher writes) reload nothing.

Latency: the watcher hands over a batch after ``step_ms`` without further changes (at most
``debounce_ms`` after the first), and marking isolates stale is immediate, so a save is visible
to the next request well within a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import watchfiles

from emulator.config import load_config
from emulator.config.dev_vars import DEV_VARS_NAME
from emulator.errors import DynwfError
from emulator.host import ProjectHost
from emulator.project import STATE_DIR_NAME
from emulator.replay import ReplayOutcome, replay_history, select_histories

__all__ = ["ProjectFilter", "ReloadEvent", "Reloader", "TENANTS_DIR", "compile_errors",
           "load_error_line"]

TENANTS_DIR = "tenants"
#: In-flight instances one reload replays at most: a check must not hold up the next request
#: for long (each replay takes milliseconds once the tenant's isolate is loaded).
REPLAY_CHECK_BOUND = 200
#: How long one instance's replay may take on a reload (``dynwf replay`` allows 30 s): code that
#: waits on something outside its history must not hold the watcher up.
REPLAY_CHECK_TIMEOUT_S = 5.0
logger = logging.getLogger("dynwf.reload")


@dataclass(frozen=True, slots=True)
class ReloadEvent:
    """What one batch of changes reloaded: ``target`` is ``tenant`` or ``dispatcher``, ``name``
    the tenant id or the dispatcher's module path; ``error`` is one line (``file:line:col:
    message`` for a syntax error) when the new code has a problem."""

    target: str
    name: str
    seconds: float
    paths: tuple[str, ...] = ()
    error: str | None = None
    #: the replay check of the in-flight instances the new code will run (emulator/replay.py)
    replay: tuple[ReplayOutcome, ...] = ()
    #: in-flight instances past the bound of one check, not replayed
    unchecked: int = 0

    @property
    def breaking(self) -> list[ReplayOutcome]:
        return [outcome for outcome in self.replay if not outcome.ok]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.target, "name": self.name,
                               "ms": round(self.seconds * 1000, 2), "paths": list(self.paths)}
        if self.error is not None:
            out["error"] = self.error
        if self.replay or self.unchecked:
            out["replay"] = {"checked": len(self.replay), "unchecked": self.unchecked,
                             "breaking": [o.to_json() for o in self.breaking]}
        return out


class ProjectFilter(watchfiles.DefaultFilter):
    """watchfiles' defaults (caches, VCS folders, swap files), plus the state folder and the
    temporary files editors and atomic writers leave for a moment beside the real one."""

    ignore_dirs = (*watchfiles.DefaultFilter.ignore_dirs, STATE_DIR_NAME)
    ignore_entity_patterns = (
        *watchfiles.DefaultFilter.ignore_entity_patterns,
        r"\.tmp$", r"\.temp$", r"\.part$", r"\.bak$", r"\.orig$", r"\.kate-swp$",
        r"^4913$",                    # vim's probe that a folder is writable
        r"^\.goutputstream-",         # GLib's atomic save
        r"^\.~lock\.", r"\.crswap$",
    )

    def __init__(self, state_dir: Path | None = None) -> None:
        super().__init__(ignore_paths=[state_dir] if state_dir is not None else None)


@dataclass
class _Batch:
    tenants: dict[str, set[str]] = field(default_factory=dict)
    dispatcher: set[str] = field(default_factory=set)
    config: bool = False
    dev_vars: bool = False
    code: set[str] = field(default_factory=set)      # other .py files of the project


class Reloader:
    """Watches ``host``'s project and reloads what changed; ``on_reload`` hears each reload."""

    def __init__(self, host: ProjectHost, on_reload: Callable[[ReloadEvent], None], *,
                 state_dir: Path | None = None, step_ms: int = 30, debounce_ms: int = 300,
                 force_polling: bool | None = None, replay_check: bool = True) -> None:
        self.host = host
        self.on_reload = on_reload
        self.root = host.config.root.resolve()
        self.state_dir = state_dir.resolve() if state_dir is not None else None
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self.force_polling = force_polling
        self.polling = False
        #: replay the in-flight instances against each reload (``dynwf dev``)
        self.replay_check = replay_check

    # ---- watching ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set. A system out of inotify instances falls back to polling."""
        try:
            await self._watch(stop, self.force_polling)
        except OSError as exc:
            if self.force_polling:
                raise
            logger.warning("file watching failed (%s); polling the project instead", exc)
            self.polling = True
            await self._watch(stop, True)

    async def _watch(self, stop: asyncio.Event, force_polling: bool | None) -> None:
        async for changes in watchfiles.awatch(
                self.root, watch_filter=ProjectFilter(self.state_dir), debounce=self.debounce_ms,
                step=self.step_ms, stop_event=stop, force_polling=force_polling,
                poll_delay_ms=200):
            await self.apply(path for _change, path in changes)

    # ---- what a change means -----------------------------------------------------------------

    async def apply(self, paths: Iterable[str | Path]) -> list[ReloadEvent]:
        """Reload what ``paths`` (changed files, absolute) touch; report and return each reload."""
        batch = self._classify(paths)
        events = []
        if batch.config or batch.dispatcher or batch.dev_vars:
            paths_shown = sorted(batch.dispatcher
                                 | ({self._shown(self.host.config.path)} if batch.config else set())
                                 | ({self._shown(self.host.config.root.resolve() / DEV_VARS_NAME)}
                                    if batch.dev_vars else set()))
            events.append(await self._reload_dispatcher(batch.config, tuple(paths_shown)))
        elif batch.code:              # a dispatcher reload has marked every isolate stale already
            events.append(self._reload_every_isolate(tuple(sorted(batch.code))))
        for tenant_id, changed in sorted(batch.tenants.items()):
            events.append(self._reload_tenant(tenant_id, tuple(sorted(changed))))
        if self.replay_check:
            events = [await self._check_in_flight(event) for event in events]
        for event in events:
            self.on_reload(event)
        return events

    async def _check_in_flight(self, event: ReloadEvent) -> ReloadEvent:
        """Replay the histories of the in-flight instances the reloaded code will run (a
        tenant's, or every tenant's after a dispatcher reload), before any of them wakes on it:
        which would break is said with the reload. Code that did not load is not checked (the
        reload already reports why)."""
        if event.error is not None:
            return event
        tenants = [event.name] if event.target == "tenant" else []
        try:
            histories = select_histories(self.host.engine.store, tenants=tenants,
                                         with_playground=True)
        except DynwfError as exc:      # a state file that cannot be read: say so, check nothing
            logger.warning("replay check skipped: %s", exc)
            return event
        checked = [await replay_history(self.host, history, timeout_s=REPLAY_CHECK_TIMEOUT_S)
                   for history in histories[:REPLAY_CHECK_BOUND]]
        return replace(event, replay=tuple(checked),
                       unchecked=max(len(histories) - REPLAY_CHECK_BOUND, 0))

    def _classify(self, paths: Iterable[str | Path]) -> _Batch:
        batch = _Batch()
        config_path = self.host.config.path.resolve()
        dev_vars = self.host.config.root.resolve() / DEV_VARS_NAME
        main_folder = self.host.config.main_path.resolve().parent
        tenants = self.root / TENANTS_DIR
        for raw in paths:
            path = Path(raw)
            if not path.is_absolute():
                path = self.root / path
            if path == config_path:
                batch.config = True
            elif path == dev_vars:
                batch.dev_vars = True
            elif path.is_relative_to(tenants):
                parts = path.relative_to(tenants).parts
                if len(parts) >= 2:            # a file inside a tenant's folder
                    batch.tenants.setdefault(parts[0], set()).add(self._shown(path))
            elif path.suffix == ".py" and path.is_relative_to(main_folder):
                batch.dispatcher.add(self._shown(path))
            elif path.suffix == ".py":
                batch.code.add(self._shown(path))
        return batch

    def _shown(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _reload_tenant(self, tenant_id: str, paths: tuple[str, ...]) -> ReloadEvent:
        started = time.perf_counter()
        for loader in self.host.loaders.values():
            loader.mark_stale(tenant_id)
        problems = compile_errors(self.root / TENANTS_DIR / tenant_id, self.root)
        return ReloadEvent("tenant", tenant_id, time.perf_counter() - started, paths,
                           problems[0] if problems else None)

    def _reload_every_isolate(self, paths: tuple[str, ...]) -> ReloadEvent:
        started = time.perf_counter()
        self.host.pool.mark_all_stale()
        problems = [problem for path in paths for problem in _compile_error(self.root / path, self.root)]
        return ReloadEvent("isolates", "every tenant", time.perf_counter() - started, paths,
                           problems[0] if problems else None)

    async def _reload_dispatcher(self, config_changed: bool,
                                 paths: tuple[str, ...]) -> ReloadEvent:
        started = time.perf_counter()
        name = self.host.config.main
        try:
            config = load_config(self.host.config.path) if config_changed else None
            await self.host.reload_dispatcher(config)
        except Exception as exc:  # noqa: BLE001 - the dispatcher's import may raise anything
            return ReloadEvent("dispatcher", name, time.perf_counter() - started, paths,
                               load_error_line(exc, self.root))
        return ReloadEvent("dispatcher", self.host.config.main, time.perf_counter() - started,
                           paths)


def compile_errors(folder: Path, root: Path) -> list[str]:
    """``file:line:col: message`` for each ``.py`` under ``folder`` that is not valid Python
    (compiled only, never run: tenant code runs in its isolate alone)."""
    problems = []
    if not folder.is_dir():
        return problems
    for path in sorted(folder.rglob("*.py")):
        if "__pycache__" not in path.parts:
            problems += _compile_error(path, root)
    return problems


def _compile_error(path: Path, root: Path) -> list[str]:
    """``[file:line:col: message]`` when ``path`` is not valid Python, else ``[]``."""
    try:
        source = path.read_bytes()
    except OSError:
        return []     # removed (or a folder) by now: the next batch says so
    try:
        compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        return [_syntax_line(exc, root, path)]
    except ValueError as exc:       # null bytes
        return [f"{_relative(path, root)}:1:1: {exc}"]
    return []


def load_error_line(exc: BaseException, root: Path) -> str:
    """One line saying why code failed to load: ``file:line:col: message`` for a syntax error
    (the file relative to ``root``), the error's own text otherwise."""
    if isinstance(exc, SyntaxError):
        return _syntax_line(exc, root)
    if isinstance(exc, DynwfError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _syntax_line(exc: SyntaxError, root: Path, path: Path | None = None) -> str:
    where = _relative(path or Path(exc.filename or "?"), root)
    return f"{where}:{exc.lineno or 1}:{exc.offset or 1}: {exc.msg}"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)

"""``dynwf dev``: serve the project on localhost with the engine running and code hot-reloaded.

The server, the engine and the reloader are ``emulator.server``; this module parses options,
binds the socket (so a port in use fails before anything starts), decides what signals mean
(SIGTERM: stop cleanly, exit 0; Ctrl-C: stop cleanly, exit 130) and renders what happens: a
banner, one line per request and per reload, and a live checklist per active instance on a
terminal, or NDJSON lines when stdout is not a terminal or with ``--json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.text import Text

from dynwf_cli.checklist import Checklist, to_ndjson
from dynwf_cli.commands import COMMANDS
from dynwf_cli.commands.check import refuse_check_errors
from dynwf_cli.console import console
from dynwf_cli.options import (DEFAULT_ISOLATION, ConfigOption, DatabaseOption, IpOption,
                               IsolationOption, JsonOption, MaxInflightOption, MaxQueuedOption,
                               PortOption, StateDirOption, VarOption)
from emulator import (DEV_IP, DEV_PORT, DynwfError, Firing, HostOptions, Progress, Project,
                      ProjectHost, SystemClock, TenantSourceError, VirtualClock, describe_missing,
                      format_traceback, missing_layers, open_project, outline_steps, parse_var,
                      states, tune_for_serving)
from emulator import progress as events
from emulator.runtime.dynamic_workflows import unwrap_params
from emulator.server import (MAX_INFLIGHT, MAX_QUEUED, Admission, DevServer, DispatcherLoadError,
                             ReloadEvent, Reloader, RequestRecord, create_app, fast_forward_idle,
                             listen, load_error_line, private_listener, server_config)

HELP = f"""Serve the project on a local HTTP server, as the platform would run it: every request
(except /__dynwf/*) goes to the dispatcher's Default.fetch, which loads each tenant's code into
its own isolate; the durable engine runs the instances, resuming those an earlier session left
running or sleeping.

Code is reloaded on save: a change in tenants/<id>/ reloads that tenant (its next request runs
the new code), a change to the dispatcher or the wrangler file reloads the dispatcher, and a
change to any other .py file of the project (agents/, repos/) reloads every tenant's isolate.
A tenant file that is not valid Python is reported with its line and the other tenants keep
serving.

On a terminal each request is one line and each active instance a live checklist of its steps;
when stdout is not a terminal, or with --json, everything is printed as NDJSON, one JSON object
per line (the banner, requests, reloads, step progress, tenant logs), so a script never meets a
line of plain text. --ip and --port default to the config's "dev" section, else {DEV_IP}:{DEV_PORT}.

Cron schedules of the config (workflows[].schedules) start an instance of their workflow at
each firing, on the real clock: --fast-forward never fires one, and firings that came due while
dev was not running are not made up for. The banner lists each schedule's next firing.

Back-pressure: at most --max-inflight requests run in the dispatcher at once and --max-queued
more wait for a turn; a request beyond both is answered at once with 503, a Retry-After header
and the error code dev.overloaded, before any tenant code runs, so it created nothing and can be
sent again. /__dynwf/* (dashboard, admin API) is never refused.

Exit status: 0 when stopped by SIGTERM, 130 by Ctrl-C, 1 when the server cannot start (dynwf
check finds an error in the wrangler file or the dispatcher, and prints it; the port is in use;
the dispatcher fails to load), 2 on a usage error.

Example:

\b
  dynwf dev --port 8787 --fast-forward
  curl -X POST localhost:8787 -H 'x-tenant-id: acme' -d '{{"items": [{{"price": 2}}]}}'
"""

_FINISHED = states.FINISHED
_MAX_LIVE = 6  # checklists shown at once; the rest are counted on one line


def dev(
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
    ip: IpOption = None,
    port: PortOption = None,
    no_reload: Annotated[bool, typer.Option(
        "--no-reload", help="Do not watch files for changes.")] = False,
    fast_forward: Annotated[bool, typer.Option(
        "--fast-forward",
        help="Skip over sleeps and retry back-offs while nothing else runs (a virtual clock); "
             "event waits still wait for their event, and cron schedules fire on the real "
             "clock only.")] = False,
    isolation: IsolationOption = DEFAULT_ISOLATION,
    as_json: JsonOption = False,
    max_inflight: MaxInflightOption = MAX_INFLIGHT,
    max_queued: MaxQueuedOption = MAX_QUEUED,
    var: VarOption = [],
) -> None:
    env_vars = dict(parse_var(v) for v in var)
    project = open_project(config, state_dir, database=database)
    refuse_check_errors(project, command="dev")
    address = ip or project.config.dev.ip
    sock = listen(address, project.config.dev.port if port is None else port)
    if as_json or not console.is_terminal:
        output: _Output = _JsonOutput()
    else:
        output = _LiveOutput(project, fast_forward)
    try:
        code = asyncio.run(_serve(project, sock, output, reload=not no_reload,
                                  fast_forward=fast_forward, isolation=isolation.value,
                                  admission=Admission(max_inflight, max_queued),
                                  env_vars=env_vars))
    finally:
        sock.close()
    raise typer.Exit(code)


async def _serve(project: Project, sock: Any, output: "_Output", *, reload: bool,
                 fast_forward: bool, isolation: str = "process",
                 admission: Admission | None = None, env_vars: dict[str, str] | None = None) -> int:
    loop = asyncio.get_running_loop()
    received: list[int] = []
    server: DevServer | None = None

    def on_signal(signum: int) -> None:
        received.append(signum)
        if server is not None:
            # a second Ctrl-C stops without waiting for requests in flight
            server.stop(force=len(received) > 1 and signum == signal.SIGINT)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    clock = VirtualClock() if fast_forward else SystemClock()
    host = ProjectHost(project.config, HostOptions(state_dir=project.state_dir,
                                                   database=project.store_url, clock=clock,
                                                   isolation=isolation, vars=env_vars or {}))
    tune_for_serving()
    try:
        try:
            await host.start()
        except BaseException as exc:
            await host.close()
            if isinstance(exc, Exception) and not isinstance(exc, DynwfError):
                # the dispatcher is user code: its import may raise anything
                raise DispatcherLoadError(
                    problem=load_error_line(exc, project.config.root)) from None
            raise
        host.engine.progress.subscribe(output.progress)
        host.scheduler.on_fire = output.schedule_fired
        host.tenant_log_listeners.append(output.tenant_log)
        background = []
        if reload:
            background.append(Reloader(host, output.reload, state_dir=project.state_dir).run)
        if fast_forward:
            background.append(lambda stop: fast_forward_idle(host.engine, stop))
        app = create_app(host, on_request=output.request, background=background,
                         admission=admission)
        host_ip, port = sock.getsockname()[:2]
        output.banner(_banner(project, host, host_ip, port, reload=reload,
                              fast_forward=fast_forward))
        server = DevServer(server_config(app, ip=host_ip, port=port))
        output.start(host)
        try:
            if not received:
                with private_listener(host_ip, port):  # tenant code never reaches the admin API
                    await server.serve(sockets=[sock])
            else:                 # stopped while starting: nothing was served
                await host.close()
        finally:
            output.close()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    stopped_by = received[0] if received else None
    output.stopped(signal.Signals(stopped_by).name if stopped_by else None)
    return 130 if stopped_by == signal.SIGINT else 0


def _banner(project: Project, host: ProjectHost, ip: str, port: int, *, reload: bool,
            fast_forward: bool) -> dict[str, Any]:
    shown_ip = f"[{ip}]" if ":" in ip else ip
    counts = host.engine.store.count_by_status()
    tenants_dir = project.tenants_dir
    tenants = sorted(p.name for p in tenants_dir.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and p.name != "__pycache__") \
        if tenants_dir.is_dir() else []
    return {"url": f"http://{shown_ip}:{port}", "dashboard": f"http://{shown_ip}:{port}/__dynwf/",
            "project": project.config.name,
            "config": str(project.config.path), "state_dir": str(project.state_dir),
            "tenants": tenants, "reload": reload, "fast_forward": fast_forward,
            "pid": os.getpid(),
            "isolation_missing": _missing_layers(host),
            "resuming": sum(counts.get(s, 0)
                            for s in (states.QUEUED, states.RUNNING, states.WAITING_FOR_PAUSE)),
            "waiting": counts.get(states.WAITING, 0),
            # each cron schedule and its next firing (epoch ms, UTC): they follow the real clock
            "schedules": host.scheduler.upcoming(1)}


def _missing_layers(host: ProjectHost) -> dict[str, str]:
    """The kernel layers of isolation this machine cannot put in place (none under --isolation
    inline, which has no isolation at all and says so itself)."""
    if host.pool.isolation != "process":
        return {}
    return missing_layers(host.pool.layers)


# ---- output -------------------------------------------------------------------------------------

class _Output:
    """What the command shows; every method is called on the event loop's thread."""

    def banner(self, info: dict[str, Any]) -> None: ...
    def request(self, record: RequestRecord) -> None: ...
    def reload(self, event: ReloadEvent) -> None: ...
    def progress(self, event: Progress) -> None: ...
    def tenant_log(self, label: str, level: str, message: str) -> None: ...
    def schedule_fired(self, firing: Firing) -> None: ...
    def stopped(self, signal_name: str | None) -> None: ...
    def start(self, host: ProjectHost) -> None: ...
    def close(self) -> None: ...


def _emit(line: str) -> None:
    """One NDJSON line, flushed at once: a reader on the other end of a pipe waits for it."""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass


def _json_line(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"kind": kind, **data}, ensure_ascii=False, separators=(",", ":"),
                      default=str)


class _JsonOutput(_Output):
    """``--json``: every line is one JSON object with a ``kind``."""

    def banner(self, info: dict[str, Any]) -> None:
        _emit(_json_line("server.ready", info))

    def request(self, record: RequestRecord) -> None:
        _emit(_json_line("http.request", record.to_dict()))

    def reload(self, event: ReloadEvent) -> None:
        _emit(_json_line("reload", event.to_dict()))

    def progress(self, event: Progress) -> None:
        _emit(to_ndjson(event))

    def tenant_log(self, label: str, level: str, message: str) -> None:
        _emit(_json_line("tenant.log", {"tenant": _tenant_of(label), "level": level,
                                        "message": message}))

    def schedule_fired(self, firing: Firing) -> None:
        _emit(_json_line("schedule.fired", firing.to_dict()))

    def stopped(self, signal_name: str | None) -> None:
        _emit(_json_line("server.stopped", {"signal": signal_name}))


class _PlainOutput(_Output):
    """Lines for a person (banner, requests, reloads); step progress as NDJSON, since without a
    terminal there is no live display to update."""

    def __init__(self, project: Project, fast_forward: bool) -> None:
        self.project = project
        self.fast_forward = fast_forward

    def _print(self, text: Text) -> None:
        console.print(text, soft_wrap=True)

    def banner(self, info: dict[str, Any]) -> None:
        self._print(Text("dynwf dev ", style="bold") + Text(info["project"], style="path"))
        self._print(Text("  ") + Text(info["url"], style="ok"))
        self._print(Text("  dashboard ", style="muted") + Text(info["dashboard"]))
        state = _relative(Path(info["state_dir"]))
        self._print(Text(f"  state    {state}", style="muted"))
        self._print(Text(f"  tenants  {', '.join(info['tenants']) or '(none)'}", style="muted"))
        modes = [("hot reload on" if info["reload"] else "hot reload off"),
                 ("fast-forward clock" if info["fast_forward"] else "real clock")]
        self._print(Text(f"  {' · '.join(modes)}", style="muted"))
        if info["isolation_missing"]:
            self._print(Text("  warning: " + describe_missing(info["isolation_missing"]),
                             style="warning"))
        for schedule in info["schedules"]:
            upcoming = schedule["next"]
            when = f"next {_utc(upcoming[0])}" if upcoming else "never fires again"
            self._print(Text(f"  schedule {schedule['workflow']}: {schedule['cron']} ({when})",
                             style="muted"))
        if info["resuming"] or info["waiting"]:
            self._print(Text(f"  resuming {info['resuming']} instance(s); {info['waiting']} "
                             "sleeping or waiting for an event", style="muted"))
        self._print(Text("  Ctrl-C to stop", style="muted"))

    def request(self, record: RequestRecord) -> None:
        style = "ok" if record.status < 400 else "warning" if record.status < 500 else "error"
        line = Text(f"{record.method:<6} {record.path}  ")
        line.append(record.tenant or "-", style="bold")
        line.append("  ")
        line.append(str(record.status), style=style)
        line.append(f"  {record.seconds * 1000:.0f} ms", style="muted")
        if record.error is not None:
            line.append(f"  [{record.error['code']}] {record.error['message']}", style="error")
        self._print(line)
        if record.error is not None and record.error.get("traceback"):
            self._print(Text("\n".join(["  raised at (most recent call last):",
                                        *format_traceback(record.error["traceback"], "    ")]),
                             style="muted"))

    def reload(self, event: ReloadEvent) -> None:
        what = {"tenant": f"tenant {event.name}", "isolates": "every tenant's isolate"}.get(
            event.target, "dispatcher")
        if event.error is None:
            self._print(Text(f"reloaded {what} in {event.seconds * 1000:.0f} ms", style="ok"))
        elif event.target in ("tenant", "isolates"):
            self._print(Text(f"reloaded {what} with an error (requests that load it fail until "
                             f"it is fixed): {event.error}", style="error"))
        else:
            self._print(Text(f"dispatcher not reloaded, the previous code keeps serving: "
                             f"{event.error}", style="error"))
        self._replay_lines(event)

    def _replay_lines(self, event: ReloadEvent) -> None:
        """Which in-flight instances the new code would break, before they wake on it."""
        if not event.replay and not event.unchecked:
            return
        breaking = event.breaking
        checked = len(event.replay)
        more = f" ({event.unchecked} more not checked)" if event.unchecked else ""
        if not breaking:
            self._print(Text(f"  replay: the new code is compatible with the {checked} in-flight "
                             f"instance(s){more}", style="muted"))
            return
        self._print(Text(f"  replay: the new code would break {len(breaking)} of {checked} "
                         f"in-flight instance(s){more}:", style="error"))
        for outcome in breaking:
            where = outcome.path or outcome.file
            self._print(Text(f"    {outcome.instance} {outcome.verdict.replace('_', ' ')}: "
                             f"{outcome.message}" + (f" (at {where}:{outcome.line})"
                                                     if where else ""), style="error"))

    def progress(self, event: Progress) -> None:
        _emit(to_ndjson(event))

    def tenant_log(self, label: str, level: str, message: str) -> None:
        prefix = "" if level in ("info", "log", "stdout", "print") else f"{level}: "
        for line in message.rstrip("\n").splitlines() or [""]:
            self._print(Text(f"[{_tenant_of(label)}] {prefix}{line}", style="step.log"))

    def schedule_fired(self, firing: Firing) -> None:
        what = f"created {firing.instance_id}" if firing.created else \
            f"{firing.instance_id} already exists (fired before)"
        self._print(Text(f"schedule {firing.schedule.expression} of {firing.schedule.workflow} "
                         f"fired for {_utc(firing.at)}: {what}", style="muted"))

    def stopped(self, signal_name: str | None) -> None:
        self._print(Text("stopped" + (f" ({signal_name})" if signal_name else ""), style="muted"))


class _LiveOutput(_PlainOutput):
    """On a terminal: a live checklist for each instance that is running or waiting, above
    which every other line scrolls; a finished instance's checklist is printed once, for good."""

    def __init__(self, project: Project, fast_forward: bool) -> None:
        super().__init__(project, fast_forward)
        self._lock = threading.Lock()    # the live display renders on its own thread
        self._checklists: dict[str, Checklist] = {}
        self._live: Live | None = None
        self._host: ProjectHost | None = None

    def start(self, host: ProjectHost) -> None:
        self._host = host
        self._live = Live(console=console, get_renderable=self._renderable, refresh_per_second=4,
                          transient=True, redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        with self._lock:
            active = len(self._checklists)
        if active:
            self._print(Text(f"{active} instance(s) still active; the next dynwf dev on this "
                             "state resumes them", style="muted"))

    def progress(self, event: Progress) -> None:
        with self._lock:
            checklist = self._checklists.get(event.instance_id)
        if checklist is None:
            checklist = self._checklist_for(event.instance_id)
            with self._lock:
                self._checklists[event.instance_id] = checklist
        checklist.apply(event)
        if event.kind == events.INSTANCE_STATUS and checklist.finished:
            with self._lock:
                self._checklists.pop(event.instance_id, None)
            console.print(checklist.render())

    def _checklist_for(self, instance_id: str) -> Checklist:
        row = self._host.engine.store.find_instance(instance_id) if self._host else None
        tenant = _tenant_of_params(row.params) if row is not None else None
        return Checklist(_tenant_outline(self.project, tenant), instance_id=instance_id,
                         tenant=tenant, workflow=row.workflow if row is not None else None,
                         fast_forward=self.fast_forward)

    def _renderable(self) -> Group:
        with self._lock:
            shown = list(self._checklists.values())
        hidden = max(0, len(shown) - _MAX_LIVE)
        # the engine's clock (which fast-forwards), so "times out in ..." counts down with it
        now = self._host.engine.clock.now_ms() if self._host is not None else None
        parts: list[Any] = [c.render(now) for c in shown[-_MAX_LIVE:]]
        if hidden:
            parts.append(Text(f"… and {hidden} more active instance(s)", style="muted"))
        return Group(*parts)


# ---- helpers ------------------------------------------------------------------------------------

def _tenant_of_params(params_json: str) -> str | None:
    """The tenant id in an instance's envelope (``{"__dispatcherMetadata": {"tenantId"}}``)."""
    try:
        unwrapped = unwrap_params(json.loads(params_json))
    except ValueError:
        return None
    metadata = unwrapped.metadata if unwrapped is not None else None
    tenant = metadata.get("tenantId") if isinstance(metadata, dict) else None
    return tenant if isinstance(tenant, str) else None


def _tenant_outline(project: Project, tenant: str | None) -> list[Any]:
    """The steps of the tenant's ``index.py``, pending, before any has run."""
    if tenant is None:
        return []
    index = project.tenants_dir / tenant / "index.py"
    try:
        return outline_steps(index.read_text(encoding="utf-8"), file=str(index))
    except (OSError, UnicodeDecodeError, TenantSourceError):
        return []  # the checklist then grows as the steps run


def _utc(ms: int) -> str:
    """A firing time as schedules are written: UTC, to the minute."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _tenant_of(label: str) -> str:
    return label.split(":", 1)[-1]   # isolate labels are "<loader binding>:<worker id>"


def _relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def register(app: typer.Typer) -> None:
    app.command("dev", help=HELP, short_help=COMMANDS["dev"])(dev)

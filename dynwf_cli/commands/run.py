"""``dynwf run``: create one instance as a tenant would and drive it to the end, live."""

from __future__ import annotations

import asyncio
import difflib
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from dynwf_cli.checklist import Checklist, to_ndjson
from dynwf_cli.commands import COMMANDS
from dynwf_cli.commands.check import refuse_check_errors
from dynwf_cli.console import console, err_console
from dynwf_cli.options import (DEFAULT_ISOLATION, ConfigOption, DatabaseOption, IsolationOption,
                               JsonOption, NewIdOption, StateDirOption, TenantOption, VarOption,
                               WorkflowOption)
from emulator import (InstanceOps, Layers, RunOptions, RunResult, RunSession, TenantSourceError,
                      StepKind, UsageError, describe_missing, is_valid_id, missing_layers, open_project,
                      outline_steps, parse_var, states)

HELP = """Create one workflow instance the way tenant TENANT would, and run it to the end with a
live per-step checklist. Sleeps and retry back-offs are skipped (fast-forwarded) unless
--real-time is given.

When the instance waits for an event: a matching --event is sent; on a terminal you are asked
for the payload (empty input leaves it waiting); otherwise the run stops with exit status 3 and
prints the commands that continue it.

--resume ID continues an instance already in the state file (left waiting, or queued after
Ctrl-C) in this process, the same way: its steps done so far are replayed, then it runs on,
with --event, the same output and the same exit statuses. ID is the id the tenant knows it by
(as --id gave it). A paused or finished instance is refused with the command that applies
(dynwf instances resume or restart). --resume takes the instance's own params, id, metadata and
workflow, so it cannot be given with --params, --id, --metadata or --workflow.

Output: on a terminal, the live checklist and the output; otherwise (piped, in CI) or with
--json, NDJSON: one JSON object per progress event, then one "result" line, all in the same
compact form.

The project is checked first (as dynwf check does, for the wrangler file, the dispatcher and
TENANT's code): when that finds an error, its findings are printed and nothing runs (exit 1).

Exit status: 0 complete (the output is printed), 1 errored or terminated, or refused by the
check, 2 usage error, 3 left waiting for an event.

Example:

\b
  dynwf run --tenant acme --params '{"name": "Alice"}'
  dynwf run --tenant globex --event 'deploy-approval={"ok": true}'
  dynwf run --resume deploy-1 --tenant globex --event 'deploy-approval={"ok": true}'
"""


def parse_json_option(value: str | None, option: str, *, example: str | None = None) -> Any:
    """A JSON option value, or ``@file.json`` to read it from a file; ``example`` is the option
    written right, for the hint (default: ``OPTION '{"key": "value"}'``)."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{option}: cannot read {value[1:]}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option} is not valid JSON: {exc.msg} at line {exc.lineno} column "
                         f"{exc.colno}",
                         hint="quote it for the shell: " + (
                             example or f"""{option} '{{"key": "value"}}'""")) from None


def parse_event(value: str) -> tuple[str, Any]:
    event_type, sep, payload = value.partition("=")
    if not sep or not event_type:
        raise UsageError(f"--event {value!r} must look like TYPE=JSON",
                         hint="""e.g. --event 'deploy-approval={"ok": true}'""")
    return event_type, parse_json_option(
        payload, f"--event {event_type}", example=f"""--event '{event_type}={{"key": "value"}}'""")


def run(
    tenant: TenantOption,
    params: Annotated[Optional[str], typer.Option(
        "--params", "-p", metavar="JSON|@FILE",
        help="The instance's params (event payload).")] = None,
    workflow: WorkflowOption = None,
    instance_id: NewIdOption = None,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", metavar="ID",
        help="Continue this existing instance of TENANT instead of creating one.")] = None,
    metadata: Annotated[Optional[str], typer.Option(
        "--metadata", metavar="JSON",
        help='Dispatcher metadata (default: {"tenantId": TENANT}).')] = None,
    event: Annotated[list[str], typer.Option(
        "--event", "-e", metavar="TYPE=JSON",
        help="An event to send when the instance waits for TYPE.")] = [],
    real_time: Annotated[bool, typer.Option(
        "--real-time", help="Wait out sleeps and back-offs for real.")] = False,
    isolation: IsolationOption = DEFAULT_ISOLATION,
    as_json: JsonOption = False,
    var: VarOption = [],
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    _refuse_with_resume(resume, params=params, id=instance_id, metadata=metadata,
                        workflow=workflow)
    options = RunOptions(tenant=tenant, params=parse_json_option(params, "--params"),
                         workflow=workflow, instance_id=instance_id,
                         metadata=parse_json_option(metadata, "--metadata"),
                         events=[parse_event(e) for e in event], real_time=real_time,
                         isolation=isolation.value, vars=dict(parse_var(v) for v in var),
                         resume=resume)
    if options.metadata is not None and not isinstance(options.metadata, dict):
        raise UsageError("--metadata must be a JSON object")
    if instance_id is not None and not is_valid_id(instance_id):
        raise UsageError(f"--id {instance_id!r} is not a valid instance id: 1-100 characters "
                         "matching ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$")
    project = open_project(config, state_dir, database=database)
    refuse_check_errors(project, command="run", tenant=tenant)
    outline = _outline(project, tenant)
    _warn_unawaited_events(options.events, outline, tenant)
    if options.isolation == "process":
        _warn_missing_layers()
    live_view = not as_json and console.is_terminal
    started: dict[str, str] = {}
    try:
        result = asyncio.run(_run(project, options, outline, live_view, started))
    except KeyboardInterrupt:
        _report_interrupt(project, started)
        raise typer.Exit(130) from None
    raise typer.Exit(_report(result, project, as_json, live_view))


def _refuse_with_resume(resume: str | None, **given: str | None) -> None:
    """``--resume`` continues the instance as it was created: an option that would create it
    differently cannot apply, and ignoring it silently would mislead."""
    clashing = [f"--{name}" for name, value in given.items() if value is not None]
    if resume is not None and clashing:
        raise UsageError(f"--resume cannot be given with {', '.join(clashing)}: a resumed "
                         "instance keeps its own params, id, metadata and workflow",
                         hint=f"dynwf run --resume {resume} --tenant TENANT [--event TYPE=JSON]")


def _report_interrupt(project, started: dict[str, str]) -> None:
    """Ctrl-C: say where the instance was left (the engine handed it back as it stopped) and
    what moves it on, so an interrupted run is never a mystery."""
    if "id" not in started:
        err_console.print(Text("interrupted before the instance was created", style="warning"))
        return
    with InstanceOps.open(project) as ops:
        state = ops.where(started["id"], tenant=started["tenant"], workflow=started["workflow"])
    err_console.print(Text(f"interrupted: instance {state['tenant_instance_id']} of tenant "
                           f"{started['tenant']} is kept in the state file", style="warning"),
                      soft_wrap=True)
    err_console.print(Text("next: " + state["next"]), soft_wrap=True)


def _warn_unawaited_events(events: list[tuple[str, Any]], outline: list, tenant: str) -> None:
    """Name an --event type no ``wait_for_event`` of the tenant's ``run()`` waits for, with the
    closest type one does: a misspelt type would otherwise leave the instance waiting."""
    waits = [s for s in outline if s.kind == StepKind.WAIT]
    if not waits or any(s.event_type is None for s in waits):
        return  # no waits seen, or one whose type is computed: any type may be the right one
    awaited = sorted({s.event_type for s in waits})
    for event_type, _ in events:
        if event_type in awaited:
            continue
        close = difflib.get_close_matches(event_type, awaited, n=1, cutoff=0.6)
        advice = f"; did you mean '{close[0]}'?" if close else ""
        err_console.print(Text(f"warning: --event {event_type!r}: no step of tenant {tenant}'s "
                               f"workflow waits for it (it waits for: {', '.join(awaited)})"
                               f"{advice}", style="warning"), soft_wrap=True)


def _warn_missing_layers() -> None:
    """Say once, on standard error, which kernel layers of isolation this machine lacks."""
    missing = missing_layers(Layers.from_environment())
    if missing:
        err_console.print(Text("warning: " + describe_missing(missing), style="warning"),
                          soft_wrap=True)


def drive_here(project, tenant: str, instance: str, *, live_view: bool) -> RunResult:
    """Run an instance the state file holds, in this process, to its end or its next wait (as
    --resume does, with the same live checklist on a terminal, but asking for no event and
    printing nothing else): what ``dynwf instances ... --wait`` does when no running engine
    takes the instance it changed."""
    refuse_check_errors(project, command="run", tenant=tenant)
    started: dict[str, str] = {}
    try:
        return asyncio.run(_run(project, RunOptions(tenant=tenant, resume=instance),
                                _outline(project, tenant), live_view, started,
                                prompt=False, echo=False))
    except KeyboardInterrupt:
        _report_interrupt(project, started)
        raise typer.Exit(130) from None


async def _run(project, options: RunOptions, outline: list, live_view: bool,
               started: dict[str, str], *, prompt: bool = True, echo: bool = True) -> RunResult:
    session = RunSession(project, options)
    checklist = Checklist(outline, tenant=options.tenant,
                          workflow=session.workflow.name, fast_forward=not options.real_time)
    async with session:
        checklist.instance_id = session.instance_id
        if live_view:
            from rich.live import Live
            session.subscribe(checklist.apply)
            live = Live(console=console, refresh_per_second=12, get_renderable=lambda: checklist.render(
                now=session.host.engine.clock.now_ms()))
            with live:
                await _start(session)
                started.update(id=session.tenant_instance_id, tenant=options.tenant,
                               workflow=session.workflow.name)
                result = await session.drive()
                while prompt and not result.finished and result.waiting_for \
                        and sys.stdin.isatty():
                    live.stop()  # the prompt needs the terminal to itself
                    payload = await _prompt(result.waiting_for[0])
                    live.start()
                    if payload is _LEAVE:
                        break
                    session.send_event(result.waiting_for[0], payload)
                    result = await session.drive()
        else:
            if echo:
                session.subscribe(lambda p: print(to_ndjson(p), flush=True))
            await _start(session)
            started.update(id=session.tenant_instance_id, tenant=options.tenant,
                           workflow=session.workflow.name)
            result = await session.drive()
        return result


async def _start(session: RunSession) -> None:
    """Create the instance, unless the run resumes one the state file already holds."""
    if not session.resuming:
        await session.create()


_LEAVE = object()


async def _prompt(event_type: str) -> Any:
    """Ask for an event payload on the terminal (empty input: leave the instance waiting)."""
    loop = asyncio.get_running_loop()
    while True:
        text = await loop.run_in_executor(None, lambda: console.input(
            f"[bold]event [cyan]{event_type}[/cyan] payload[/bold] (JSON, empty to leave it waiting): "))
        if not text.strip():
            return _LEAVE
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            err_console.print(f"[error]not JSON:[/error] {exc.msg} (column {exc.colno})")


def _outline(project, tenant: str):
    source = project.tenants_dir / tenant / "index.py"
    try:
        return outline_steps(source.read_text(encoding="utf-8"), file=str(source)) if source.is_file() else []
    except TenantSourceError:
        return []  # the run itself reports the syntax error, with its line


def _report(result: RunResult, project, as_json: bool, live_view: bool) -> int:
    if as_json or not live_view:
        print(json.dumps({"kind": "result", **result.to_dict()}, ensure_ascii=False, default=str,
                         separators=(",", ":")), flush=True)   # the events' own form
    if result.status == states.COMPLETE:
        if not as_json and live_view:
            from rich.syntax import Syntax   # pygments: only for a terminal
            console.print(Text("output", style="ok"))
            console.print(Syntax(json.dumps(result.output, indent=2, ensure_ascii=False, default=str),
                                 "json", background_color="default", word_wrap=True))
        return 0
    if result.waiting_for:
        named, event_type = f"{result.tenant_instance_id} --tenant {result.tenant}", result.waiting_for[0]
        err_console.print(Text(f"waiting for event '{event_type}'; continue it here with:",
                               style="warning"))
        err_console.print(Text(f"  dynwf run --resume {named} --event {event_type}='{{}}'"),
                          soft_wrap=True)
        err_console.print(Text("or send it to a running dynwf dev with:", style="warning"))
        err_console.print(Text(f"  dynwf instances send-event {named} --type {event_type} "
                               "--payload '{}'"), soft_wrap=True)
        return 3
    error = result.error or {"name": result.status, "message": ""}
    err_console.print(Text(f"{result.status}: {error.get('name')}: {error.get('message')}",
                           style="error"), soft_wrap=True)
    return 1


def register(app: typer.Typer) -> None:
    app.command("run", help=HELP, no_args_is_help=True, short_help=COMMANDS["run"])(run)

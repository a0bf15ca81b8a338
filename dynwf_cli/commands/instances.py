"""``dynwf instances ...``: list, inspect and control the instances in a project's state file.

Every operation is ``emulator.ops``; this module parses options, opens the project and renders.
The commands write to the database directly, so they work whether or not ``dynwf dev`` runs; an
engine running in another process picks the change up on its next poll
(``emulator.defaults.POLL_MS``).
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dynwf_cli.checklist import GLYPHS, ROLLBACK_MARK
from dynwf_cli.commands import COMMANDS
from dynwf_cli.console import THEME, console, print_plain, utc_time
from dynwf_cli.options import (WAIT_TIMEOUT_S, ConfigOption, EventTypeOption,
                               DatabaseOption, FollowInstanceOption, FromStepOption, JsonOption,
                               RequiredFromStepOption, RerunIdOption, StateDirOption, StepType,
                               StepTypeOption, TenantFilterOption, TenantOfIdOption,
                               TimeoutOption, WaitOption, WorkflowFilterOption,
                               WorkflowOfIdOption)
from emulator import (DATABASE_NAME, POLL_MS, STATE_DIR_NAME, InstanceOps, StateNotFoundError,
                      StepKind, StepStatus, format_ms, format_traceback, open_project, states,
                      traceback_heading)

#: How often ``logs --follow`` looks for new lines.
FOLLOW_INTERVAL_S = 0.25
#: The width tables are laid out in when no terminal reads them: wide enough for any row.
UNLIMITED_WIDTH = 100_000
_RESULT_CHARS = 200  # step results may be up to 1 MiB; --json has all of it

HELP = f"""List, inspect and control workflow instances: pause, resume, terminate, restart (from a
step), rerun from a step as a new instance, export and import histories, delete, send events,
wake sleepers, read logs.

The commands act on the project's state file ({STATE_DIR_NAME}/{DATABASE_NAME} beside the
config) whether or not dynwf dev is running; a running engine notices within {POLL_MS} ms.

ID is the instance's full id, or the id its tenant knows it by (with --tenant to choose
between tenants that use the same id).

Exit status: 0 on success, 1 when the instance does not exist or the operation is refused,
2 on a usage error.

Example:

\b
  dynwf instances list --tenant acme --status waiting
  dynwf instances send-event order-1 --tenant acme --type approval --payload '{{"ok": true}}'
"""

IdArgument = Annotated[str, typer.Argument(
    metavar="ID", show_default=False, help="The instance id, or the id its tenant knows it by.")]

_STEP_STATES = {StepStatus.RUNNING: "running", StepStatus.BACKOFF: "retrying", StepStatus.READY: "retrying",
                StepStatus.SLEEPING: "sleeping", StepStatus.WAITING: "waiting", StepStatus.DONE: "done",
                StepStatus.FAILED: "failed"}
_STATUS_STYLES = {states.QUEUED: "muted", states.RUNNING: "step.running",
                  states.WAITING: "step.waiting", states.PAUSED: "warning",
                  states.WAITING_FOR_PAUSE: "warning", states.COMPLETE: "ok",
                  states.ERRORED: "error", states.TERMINATED: "error", states.UNKNOWN: "muted"}

#: What a timer waits for, in words (the dashboard says the same).
_TIMER_WORDS = {"sleep": "sleep", "retry": "retry back-off", "event_timeout": "event timeout"}

#: The statuses --status accepts, spelled as the platform spells them (case matters).
Status = Enum("Status", {name: name for name in states.ALL}, type=str)

instances_app = typer.Typer(
    name="instances", help=HELP, no_args_is_help=True, add_completion=False,
    rich_markup_mode=None, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]})


def _unlimited_console() -> Console:
    """The console's twin for output no terminal reads: as wide as any row needs."""
    return Console(theme=THEME, highlight=False, width=UNLIMITED_WIDTH, soft_wrap=True,
                   no_color=console.no_color or None, file=console.file)


def _print_whole(renderable: Any) -> None:
    """On a terminal, as the terminal's width allows; piped (grep, a file), every row whole:
    never cut or wrapped to a width, and no padding after a line's last character."""
    if console.is_terminal:
        console.print(renderable)
        return
    wide = _unlimited_console()
    with wide.capture() as captured:
        wide.print(renderable)
    print_plain("\n".join(line.rstrip() for line in captured.get().splitlines()))


def _help(text: str, example: str) -> str:
    return f"{text}\n\nExample:\n\n\b\n  {example}\n"


def _ops(config: Optional[Path], state_dir: Optional[Path], database: Optional[str]) -> InstanceOps:
    return InstanceOps.open(open_project(config, state_dir, database=database))


# ---- list -------------------------------------------------------------------------------------

@instances_app.command("list", help=_help(
    "List instances, newest first: id (the part the tenant knows in bold), tenant, status, when "
    "created and last changed; the workflow and code version too when they differ between rows. "
    "Without a terminal each row is printed whole, never cut or wrapped to a width, so grep "
    "finds a row by any of its values.",
    "dynwf instances list --tenant acme --status errored --limit 20"))
def list_command(
    tenant: TenantFilterOption = None,
    status: Annotated[Optional[Status], typer.Option(
        "--status", "-s", metavar="STATUS",
        help="Only instances in this status: " + ", ".join(states.ALL) + ".")] = None,
    workflow: WorkflowFilterOption = None,
    limit: Annotated[int, typer.Option(
        "--limit", "-n", min=1, metavar="N", help="Show at most N (newest first).")] = 100,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    try:
        with _ops(config, state_dir, database) as ops:
            rows = ops.list_instances(tenant=tenant, status=status.value if status else None,
                                      workflow=workflow, limit=limit)
    except StateNotFoundError:
        rows = []           # no state yet: no instances, which is an answer, not an error
    if as_json:
        _print_json(rows)
        return
    if not rows:
        filtered = tenant is not None or status is not None or workflow is not None
        console.print(Text("no instances" + (" match these filters" if filtered else " yet"),
                           style="muted"))
        return
    # The id is the one thing people copy from here, so it alone is never shortened.
    ids = [_id_text(row) for row in rows]
    # A project usually has one workflow, and most instances no code version: such columns
    # are shown only when they tell rows apart, so the rest fits 80 columns.
    with_workflow = len({row["workflow"] for row in rows}) > 1
    with_code = any(row["code_version"] for row in rows)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True, min_width=max(text.cell_len for text in ids))
    table.add_column("TENANT", overflow="fold")
    if with_workflow:
        table.add_column("WORKFLOW", overflow="fold")
    table.add_column("STATUS", no_wrap=True)
    table.add_column("CREATED", overflow="fold")
    table.add_column("UPDATED", overflow="fold")
    if with_code:
        table.add_column("CODE", overflow="fold")
    for row, id_text in zip(rows, ids):
        cells = [id_text, Text(str(row["tenant"]) if row["tenant"] is not None else "-")]
        if with_workflow:
            cells.append(Text(row["workflow"]))
        cells += [_status_text(row["status"]), Text(utc_time(row["created_at"]), style="muted"),
                  Text(utc_time(row["updated_at"]), style="muted")]
        if with_code:
            cells.append(Text(row["code_version"] or "-", style="muted"))
        table.add_row(*cells)
    _print_whole(table)
    if len(rows) == limit:
        console.print(Text(f"showing the newest {limit}; use --limit for more", style="muted"))


# ---- describe ---------------------------------------------------------------------------------

@instances_app.command("describe", help=_help(
    "Show one instance: status, tenant, params, output or error, every step with its attempts "
    "and duration, pending timers and buffered events. Ids are unique per workflow: when two "
    "workflows have an instance of the id, say which with --workflow.",
    "dynwf instances describe order-1 --tenant acme\n  "
    "dynwf instances describe order-1 --workflow billing"))
def describe_command(
    instance: IdArgument,
    tenant: TenantOfIdOption = None,
    workflow: WorkflowOfIdOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    with _ops(config, state_dir, database) as ops:
        info = ops.describe(instance, tenant=tenant, workflow=workflow)
    if as_json:
        _print_json(info)
        return
    _print_description(info)


def _print_description(info: dict[str, Any]) -> None:
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="muted", no_wrap=True)
    fields.add_column(overflow="fold")
    fields.add_row("instance", _id_text(info))
    if info["tenant"] is not None:
        tenant = Text(str(info["tenant"]))
        if info["tenant_instance_id"]:
            tenant += Text(f" (its id: {info['tenant_instance_id']})", style="muted")
        fields.add_row("tenant", tenant)
    fields.add_row("workflow", info["workflow"])
    fields.add_row("status", _status_text(info["status"]))
    if info["code_version"]:
        code = Text(info["code_version"])
        current = info.get("current_code_version")
        if current and current != info["code_version"]:
            code += Text(f"  (tenants/{info['tenant']}/ is now {current}: the code changed since "
                         "this instance started)", style="warning")
        elif current:
            code += Text("  (same as tenants/ now)", style="muted")
        fields.add_row("code", code)
    fields.add_row("created", utc_time(info["created_at"]))
    fields.add_row("updated", utc_time(info["updated_at"]))
    if info.get("rerun_of"):
        start = info.get("rerun_from") or {}
        fields.add_row("rerun of", Text(info["rerun_of"], style="bold") + Text(
            f"  from {start.get('kind', 'do')} '{start.get('name')}' #{start.get('count', 1)}"
            + (" (its output replaced)" if start.get("output_replaced") else ""), style="muted"))
    for rerun in info.get("reruns") or []:
        start = rerun.get("from") or {}
        fields.add_row("rerun", Text(rerun["id"], style="bold") + Text(
            f"  from {start.get('kind', 'do')} '{start.get('name')}' #{start.get('count', 1)} "
            f"({rerun['status']})", style="muted"))
    if info["metadata"] is not None and set(info["metadata"]) != {"tenantId"}:
        fields.add_row("metadata", _json_text(info["metadata"]))
    fields.add_row("params", _json_text(info["params"]))
    if info["status"] == states.COMPLETE or info["output"] is not None:
        fields.add_row("output", _json_text(info["output"]))
    if info["error"] is not None:
        fields.add_row("error", Text(_error_line(info["error"]), style="error"))
        if info.get("error_traceback"):
            fields.add_row("", Text("\n".join([traceback_heading(info["error_traceback"]),
                                               *format_traceback(info["error_traceback"])]),
                                    style="muted"))
    if "rollback" in info:
        fields.add_row("rollback", _rollback_text(info["rollback"]))
    _print_whole(fields)

    console.print()
    console.print(Text("steps", style="bold"))
    if not info["steps"]:
        console.print(Text("  none yet", style="muted"))
    else:
        steps = Table.grid(padding=(0, 1))
        steps.add_column(no_wrap=True, width=3)
        steps.add_column(style="muted", no_wrap=True)
        steps.add_column(no_wrap=True)
        steps.add_column(no_wrap=True)
        steps.add_column(overflow="fold")
        for step in info["steps"]:
            state = _STEP_STATES.get(step["status"], "pending")
            label = step["name"] if step["count"] == 1 else f"{step['name']} #{step['count']}"
            if step["kind"] == StepKind.ROLLBACK:
                label = f"{ROLLBACK_MARK} {label}"
            elif step.get("has_rollback"):
                label += f"  ({ROLLBACK_MARK} has rollback)"
            steps.add_row(Text(" " + GLYPHS[state], style=f"step.{state}"), step["kind"], label,
                          Text(step["status"], style=f"step.{state}"), _step_detail(step))
            for line in _attempt_lines(step):
                steps.add_row("", "", "", "", line)
        _print_whole(steps)

    if info["timers"]:
        console.print()
        console.print(Text("timers", style="bold"))
        timers = Table.grid(padding=(0, 2))
        timers.add_column(style="muted", no_wrap=True)
        timers.add_column(no_wrap=True)
        timers.add_column()
        for timer in info["timers"]:
            step = timer["step"]
            label = step["name"] if step["count"] == 1 else f"{step['name']} #{step['count']}"
            due_in = timer["due_in_ms"]
            relative = f"in {format_ms(due_in)}" if due_in > 0 else "now"
            timers.add_row("  " + _TIMER_WORDS.get(timer["kind"], timer["kind"]), label,
                           f"due {utc_time(timer['due_at'])} ({relative})")
        _print_whole(timers)

    if info["events_buffered"]:
        by_type = ", ".join(f"{kind}: {count}" for kind, count in
                            info["events_buffered_by_type"].items())
        console.print()
        console.print(Text(f"events buffered: {info['events_buffered']} ({by_type})"))


def _rollback_text(rollback: dict[str, Any] | None) -> Text:
    """The instance's rollback phase: under way, complete, or failed with the handler's error."""
    if rollback is None:
        return Text("running its rollback handlers", style="warning")
    if rollback["outcome"] == "complete":
        return Text("complete: every handler ran", style="ok")
    text = Text("failed", style="error")
    if rollback.get("error"):
        text += Text(f": {_error_line(rollback['error'])}", style="error")
    return text


def _step_detail(step: dict[str, Any]) -> Text:
    parts: list[Text] = []
    if step["kind"] in (StepKind.DO, StepKind.ROLLBACK) and step["attempts"]:
        parts.append(Text(f"{step['attempts']} attempt{'s' if step['attempts'] != 1 else ''}",
                          style="muted"))
    if step["kind"] == StepKind.SLEEP and step["requested_ms"] is not None:
        if step.get("woken_early"):
            parts.append(Text(f"woken after {format_ms(step['duration_ms'])} of "
                              f"{format_ms(step['requested_ms'])}", style="muted"))
        else:
            parts.append(Text(f"sleep {format_ms(step['requested_ms'])}", style="muted"))
    if step["kind"] == StepKind.WAIT:
        wait = f"for '{step['event_type']}'"
        if step["requested_ms"] is not None and step["status"] == StepStatus.WAITING:
            wait += f", timeout {format_ms(step['requested_ms'])}"
        parts.append(Text(wait, style="muted"))
    if step["duration_ms"] is not None and step["kind"] == StepKind.DO:
        parts.append(Text(format_ms(step["duration_ms"]), style="muted"))
    if step["error"] is not None:
        parts.append(Text(_error_line(step["error"]), style="error"))
    elif step.get("sensitive") and step["result"] is not None:
        parts.append(Text(f"output {step['result']} (sensitive)", style="muted"))
    elif step["result"] is not None:
        parts.append(_json_text(step["result"], limit=_RESULT_CHARS))
    return Text("  ").join(parts)


def _attempt_lines(step: dict[str, Any]) -> list[Text]:
    """Under a step that failed an attempt: each failed attempt's error and the user's frames it
    was raised from, then how the last attempt ended."""
    lines: list[Text] = []
    for failed in step.get("failed_attempts", []):
        error = failed["error"]
        lines.append(Text(f"attempt {failed['attempt']} failed: {_error_line(error)}",
                          style="error"))
        frames = error.get("traceback") if isinstance(error, dict) else None
        if isinstance(frames, list):
            lines += [Text(line, style="muted") for line in format_traceback(frames)]
    if lines and step["status"] == StepStatus.DONE:
        lines.append(Text(f"attempt {step['attempts']} done", style="step.done"))
    return lines


# ---- control ----------------------------------------------------------------------------------

_WAIT_HELP = (" With --wait, wait until a running dynwf dev has moved it on and say where it "
              "rests; when none takes it within a second, run it here to its end or next wait "
              "(as dynwf run --resume does, with its live checklist on a terminal).")


def _control_command(name: str, text: str, example: str, verb: str,
                     call: Callable[[InstanceOps, str, Optional[str], Optional[str]],
                                    dict[str, Any]], *,
                     waits: bool = False) -> None:
    def command(
        instance: IdArgument,
        tenant: TenantOfIdOption = None,
        workflow: WorkflowOfIdOption = None,
        as_json: JsonOption = False,
        config: ConfigOption = None,
        state_dir: StateDirOption = None,
        database: DatabaseOption = None,
    ) -> None:
        with _ops(config, state_dir, database) as ops:
            result = call(ops, instance, tenant, workflow)
        _print_outcome(result, verb, as_json)

    def waiting_command(
        instance: IdArgument,
        tenant: TenantOfIdOption = None,
        workflow: WorkflowOfIdOption = None,
        wait: WaitOption = False,
        timeout: TimeoutOption = WAIT_TIMEOUT_S,
        as_json: JsonOption = False,
        config: ConfigOption = None,
        state_dir: StateDirOption = None,
        database: DatabaseOption = None,
    ) -> None:
        with _ops(config, state_dir, database) as ops:
            _report_change(ops, call(ops, instance, tenant, workflow), verb, as_json,
                           wait=wait, timeout=timeout, opened=(config, state_dir, database))
    chosen = waiting_command if waits else command
    chosen.__name__ = f"{name}_command"
    instances_app.command(name, help=_help(text + (_WAIT_HELP if waits else ""), example))(chosen)


def _report_change(ops: InstanceOps, result: dict[str, Any], verb: str, as_json: bool, *,
                   wait: bool, timeout: float,
                   opened: tuple[Optional[Path], Optional[Path], Optional[str]] | None = None,
                   ) -> None:
    """Print a change's outcome; with ``--wait`` also where the instance rests once an engine
    moved it on (with ``--json`` only that: one document). The exit status says whether that is
    a good place (complete, waiting, paused) or not (errored, terminated).

    When no running engine takes the instance within a moment and its tenant's code is in the
    project (``opened``: the options that name it), this command runs it here (as ``dynwf run
    --resume`` does), so ``--wait`` never just waits on nothing."""
    if not (wait and as_json):
        _print_outcome(result, verb, as_json)
    if not wait:
        return
    final = _moved_on(ops, result, as_json=as_json, timeout=timeout, opened=opened)
    _print_outcome(final, "now", as_json)
    if final["status"] in (states.ERRORED, states.TERMINATED):
        raise typer.Exit(1)


def _moved_on(ops: InstanceOps, result: dict[str, Any], *, as_json: bool, timeout: float,
              opened: tuple[Optional[Path], Optional[Path], Optional[str]] | None) -> dict[str, Any]:
    """The instance of ``result`` where it rests once moved on: by a running engine, or, when
    none takes it within a moment and its tenant's code is in the project, by this process."""
    project = open_project(opened[0], opened[1], database=opened[2]) if opened else None
    if project is not None and _runs_here(ops, result, project):
        if not as_json:
            console.print(Text("  no running dynwf dev took it: running it here", style="muted"))
        from dynwf_cli.commands.run import drive_here
        drive_here(project, result["tenant"], result["tenant_instance_id"],
                   live_view=not as_json and console.is_terminal)
    return ops.settle(result["id"], workflow=result["workflow"], timeout_s=timeout)


#: How long a changed instance is given for a running engine to take it before ``--wait``
#: runs it here: a few of an engine's polls.
ENGINE_NOTICE_S = 4 * POLL_MS / 1000


def _runs_here(ops: InstanceOps, result: dict[str, Any], project: Any) -> bool:
    """True when the instance waits for an engine, none took it within ENGINE_NOTICE_S, and
    this process can run it (a tenant's instance whose code is in the project)."""
    tenant, visible = result.get("tenant"), result.get("tenant_instance_id")
    if not (tenant and visible and (project.tenants_dir / tenant / "index.py").is_file()):
        return False
    deadline = time.monotonic() + ENGINE_NOTICE_S
    while True:
        row = ops.store.get_instance(result["id"])
        if row.lease_owner is not None or not (
                row.status in (states.QUEUED, states.RUNNING)
                or (row.status == states.WAITING and _due(ops, row.id))):
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(POLL_MS / 4000)


def _due(ops: InstanceOps, instance_id: str) -> bool:
    """A waiting instance whose next timer has fired (woken): an engine would run it now."""
    timers = ops.store.timers_of(instance_id)
    return bool(timers) and min(t.due for t in timers) <= ops.clock.now_ms()


_control_command(
    "pause", "Pause an instance. A running one finishes the steps in flight first "
    "(status waitingForPause); a queued or waiting one pauses at once and its sleeps stop "
    "counting. Any other status is left as it is.",
    "dynwf instances pause order-1 --tenant acme", "paused",
    lambda ops, instance, tenant, workflow: ops.pause(instance, tenant=tenant,
                                                        workflow=workflow))
_control_command(
    "resume", "Resume a paused instance; its sleeps keep the time they had left. A no-op for an "
    "instance that is not paused.",
    "dynwf instances resume order-1 --tenant acme --wait", "resumed",
    lambda ops, instance, tenant, workflow: _resume(ops, instance, tenant, workflow), waits=True)


def _resume(ops: InstanceOps, instance: str, tenant: Optional[str],
            workflow: Optional[str]) -> dict[str, Any]:
    """Resume; an instance that was not paused is left as it was, and the outcome says so
    rather than "resumed"."""
    before = ops.where(instance, tenant=tenant, workflow=workflow)["status"]
    result = ops.resume(instance, tenant=tenant, workflow=workflow)
    if before not in (states.PAUSED, states.WAITING_FOR_PAUSE):
        result[_VERB] = "not paused, left as it is:"
    return result


@instances_app.command("terminate", help=_help(
    "Stop an instance for good (status terminated). Refused for an instance that already "
    "finished. With --rollback, a running dynwf dev first runs the rollback handlers of its "
    "steps, latest-started first, then terminates it; --wait waits for that, and when no "
    "dynwf dev takes it within a second, runs the handlers here (as dynwf run --resume does).",
    "dynwf instances terminate order-1 --tenant acme --rollback --wait"))
def terminate_command(
    instance: IdArgument,
    tenant: TenantOfIdOption = None,
    workflow: WorkflowOfIdOption = None,
    rollback: Annotated[bool, typer.Option(
        "--rollback", help="Run the rollback handlers of the instance's steps before it ends "
                           "(none registered: a plain terminate).")] = False,
    wait: WaitOption = False,
    timeout: TimeoutOption = WAIT_TIMEOUT_S,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    with _ops(config, state_dir, database) as ops:
        result = ops.terminate(instance, tenant=tenant, workflow=workflow, rollback=rollback)
        pending = result.get("rollback") == "pending"
        if not (wait and as_json):
            _print_outcome(result, "rolling back, then terminating" if pending else "terminated",
                           as_json)
        if not (wait and pending):
            return
        final = _moved_on(ops, result, as_json=as_json, timeout=timeout,
                          opened=(config, state_dir, database))
        final["rollback"] = ops.control.status(final["id"]).get("rollback")
        if as_json:
            _print_json(final)
        else:
            _print_outcome(final, "now", False)
            outcome = final["rollback"]
            if outcome is not None:
                style = "ok" if outcome["outcome"] == "complete" else "error"
                line = f"  rollback: {outcome['outcome']}"
                if outcome.get("error"):
                    line += f" ({_error_line(outcome['error'])})"
                console.print(Text(line, style=style), soft_wrap=True)
    if final["rollback"] is None or final["rollback"]["outcome"] != "complete":
        raise typer.Exit(1)


@instances_app.command("restart", help=_help(
    "Run an instance again with the same params, whatever its status. Without --from, every "
    "step is erased and it runs from the top; with --from STEP, the steps it reached before "
    "that step keep their results and that step and every later one run again (the step's "
    "occurrence with --count, its kind with --type). It reads running at once." + _WAIT_HELP,
    "dynwf instances restart order-1 --tenant acme --from charge --count 1 --type do --wait"))
def restart_command(
    instance: IdArgument,
    start_from: FromStepOption = None,
    count: Annotated[Optional[int], typer.Option(
        "--count", metavar="N", min=1,
        help="With --from: which occurrence of that step name, from 1 (default: 1).")] = None,
    step_type: StepTypeOption = StepType("do"),
    tenant: TenantOfIdOption = None,
    workflow: WorkflowOfIdOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = WAIT_TIMEOUT_S,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    chosen_type = step_type.value if isinstance(step_type, StepType) else str(step_type)
    if start_from is None and (count is not None or chosen_type != "do"):
        raise typer.BadParameter("--count and --type choose a step for --from; give --from STEP",
                                 param_hint="--from")
    target = None
    if start_from is not None:
        target = {"name": start_from, "count": count or 1, "type": chosen_type}
    with _ops(config, state_dir, database) as ops:
        result = ops.restart(instance, tenant=tenant, workflow=workflow, start_from=target)
        verb = "restarted" if target is None else \
            f"restarted from {target['type']} '{start_from}' #{target['count']} " \
            f"({result['steps_kept']} step{'s' * (result['steps_kept'] != 1)} kept)"
        _report_change(ops, result, verb, as_json, wait=wait, timeout=timeout,
                       opened=(config, state_dir, database))


@instances_app.command("rerun", help=_help(
    "Make a NEW instance from this one's history: the steps it reached before STEP keep their "
    "results (with --output, STEP itself too, with that result), and the new instance continues "
    "from there with the code the tenant runs now. The original is not touched; each names the "
    "other (describe, the dashboard). The new id is printed (--id to choose the tenant's id)."
    + _WAIT_HELP,
    "dynwf instances rerun order-1 --tenant acme --from charge --id order-1-fixed --wait\n  "
    "dynwf instances rerun order-1 --tenant acme --from charge --output '{\"paid\": true}'"))
def rerun_command(
    instance: IdArgument,
    start_from: RequiredFromStepOption,
    index: Annotated[int, typer.Option(
        "--index", metavar="N", min=1,
        help="Which occurrence of that step name, from 1.")] = 1,
    step_type: StepTypeOption = StepType("do"),
    output: Annotated[Optional[str], typer.Option(
        "--output", metavar="JSON",
        help="Keep STEP (a do step) as done with this result instead of running it.")] = None,
    new_id: RerunIdOption = None,
    tenant: TenantOfIdOption = None,
    workflow: WorkflowOfIdOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = WAIT_TIMEOUT_S,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    chosen_type = step_type.value if isinstance(step_type, StepType) else str(step_type)
    target = {"name": start_from, "count": index, "type": chosen_type}
    with _ops(config, state_dir, database) as ops:
        result = ops.rerun(instance, target, tenant=tenant, workflow=workflow, new_id=new_id,
                           output=output)
        kept = result["steps_kept"]
        original = result["rerun_of"]
        verb = (f"rerun of {original['tenant_instance_id'] or original['id']} from "
                f"{chosen_type} '{start_from}' #{index} ({kept} step{'s' * (kept != 1)} kept"
                + (", its output replaced" if output is not None else "") + "):")
        _report_change(ops, result, verb, as_json, wait=wait, timeout=timeout,
                       opened=(config, state_dir, database))


@instances_app.command("export", help=_help(
    "Print an instance's history as JSON (the documented format dynwf.history, version 1): "
    "params, every step with its attempts, result or error, buffered events, timers, the code "
    "fingerprint and, when tenants/<tenant>/ is still the code it started on, that source. Keep "
    "it as a test fixture (the pytest plugin's replay), replay it (dynwf replay --history), or "
    "import it elsewhere. Sensitive step outputs are in it as they are: replay needs them.",
    "dynwf instances export order-42 --tenant acme > tests/histories/order-42.json"))
def export_command(
    instance: IdArgument,
    tenant: TenantOfIdOption = None,
    workflow: WorkflowOfIdOption = None,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    with _ops(config, state_dir, database) as ops:
        history = ops.export(instance, tenant=tenant, workflow=workflow)
    sys.stdout.write(json.dumps(history, indent=2, ensure_ascii=False) + "\n")


@instances_app.command("import", help=_help(
    "Write the instance of a history file (dynwf instances export) into this project's state: "
    "everything is checked first (format, types, sizes, ids, step names), then written in one "
    "transaction, so a refused file leaves nothing behind. An instance that was running is "
    "queued, to be replayed from its last committed step.",
    "dynwf instances import history.json --state-dir /tmp/other"))
def import_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", exists=True, dir_okay=False,
                                         show_default=False, help="The history file.")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    project = open_project(config, state_dir, database=database)
    with InstanceOps.create(project) as ops:
        result = ops.import_history(file.read_bytes(), where=str(file))
    _print_outcome(result, f"imported {result['steps']} step(s) as", as_json)


@instances_app.command("delete", help=_help(
    "Delete instances: each stops at once, without rollback, and everything stored about it "
    "(steps, attempts, timers, events, logs) is erased. Asks first on a terminal; elsewhere "
    "--yes is needed. Prints each id deleted or its error; exits 1 if any failed.",
    "dynwf instances delete order-1 order-2 --tenant acme --yes"))
def delete_command(
    instances: Annotated[list[str], typer.Argument(
        metavar="ID...", show_default=False,
        help="1 to 100 instance ids, or the ids their tenant knows them by.")],
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Delete without asking (needed when no terminal can answer).")] = False,
    tenant: TenantOfIdOption = None,
    workflow: WorkflowOfIdOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    if not yes:
        if not (console.is_terminal and sys.stdin.isatty()):
            raise typer.BadParameter("deleting cannot be undone: add --yes to confirm (no "
                                     "terminal here to ask)", param_hint="--yes")
        named = ", ".join(instances)
        if not typer.confirm(f"Delete {len(instances)} instance"
                             f"{'s' * (len(instances) != 1)} ({named}) and everything stored "
                             "about them? This cannot be undone", default=False):
            console.print(Text("nothing deleted", style="muted"))
            raise typer.Exit(1)
    with _ops(config, state_dir, database) as ops:
        result = ops.delete_many(list(instances), tenant=tenant, workflow=workflow)
    if as_json:
        _print_json(result)
    else:
        deleted, errors = list(result["deleted"]), list(result["errors"])
        for name in instances:   # in the order given
            if deleted and deleted[0]["given"] == name:
                row = deleted.pop(0)
                console.print(Text("✓ ", style="ok") + Text("deleted ")
                              + Text(row["id"], style="bold"), soft_wrap=True)
            elif errors and errors[0]["given"] == name:
                row = errors.pop(0)
                console.print(Text("✗ ", style="error") + Text(f"{name}: ", style="bold")
                              + Text(f"[{row['code']}] {row['message']}"), soft_wrap=True)
    if result["errors"]:
        raise typer.Exit(1)


@instances_app.command("wake", help=_help(
    "End an instance's current sleeps and retry back-offs now (event timeouts are kept), so "
    "the engine runs it at once instead of when the timer would have fired." + _WAIT_HELP,
    "dynwf instances wake order-1 --tenant acme --wait"))
def wake_command(
    instance: IdArgument,
    tenant: TenantOfIdOption = None,
    workflow: WorkflowOfIdOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = WAIT_TIMEOUT_S,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    with _ops(config, state_dir, database) as ops:
        result = ops.wake(instance, tenant=tenant, workflow=workflow)
        woken = result["woken"]
        verb = f"woke {woken} timer{'s' if woken != 1 else ''} of" if woken else \
            "nothing to wake in"
        _report_change(ops, result, verb, as_json, wait=wait, timeout=timeout,
                       opened=(config, state_dir, database))


def _payload(value: Optional[str]) -> Any:
    """``--payload``: JSON text, or ``@file.json``; a JSON error names its position."""
    if value is None:
        return None
    where, text = "", value
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}",
                                     param_hint="'--payload'") from None
        where = f" in {path}"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON{where}: {exc.msg} at line {exc.lineno} "
                                 f"column {exc.colno} (char {exc.pos})",
                                 param_hint="'--payload'") from None


@instances_app.command("send-event", help=_help(
    "Send an event to an instance: it goes to the oldest step waiting for that type, or is "
    "buffered until one asks. PAYLOAD is JSON, or @FILE to read JSON from a file." + _WAIT_HELP,
    """dynwf instances send-event order-1 --tenant acme --type approval --payload '{"ok": true}'"""))
def send_event_command(
    instance: IdArgument,
    event_type: EventTypeOption,
    payload: Annotated[Optional[str], typer.Option(
        "--payload", "-p", metavar="JSON|@FILE",
        help="The event's payload (default: null).")] = None,
    tenant: TenantOfIdOption = None,
    workflow: WorkflowOfIdOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = WAIT_TIMEOUT_S,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    value = _payload(payload)  # before opening anything: a usage error changes nothing
    with _ops(config, state_dir, database) as ops:
        _report_change(ops, ops.send_event(instance, event_type, value, tenant=tenant,
                                           workflow=workflow),
                       f"sent '{event_type}' to", as_json, wait=wait, timeout=timeout,
                       opened=(config, state_dir, database))


# ---- logs -------------------------------------------------------------------------------------

@instances_app.command("logs", help=_help(
    "Print what an instance's code printed or logged, step by step. With --follow, keep "
    "printing new lines until the instance finishes (or Ctrl-C).",
    "dynwf instances logs order-1 --tenant acme --follow"))
def logs_command(
    instance: IdArgument,
    follow: FollowInstanceOption = False,
    tenant: TenantOfIdOption = None,
    workflow: WorkflowOfIdOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    with _ops(config, state_dir, database) as ops:
        chunk = ops.logs(instance, tenant=tenant, workflow=workflow)
        real_id = chunk["id"]  # resolved once: later polls name the instance exactly
        while True:
            for line in chunk["lines"]:
                _print_log_line(line, as_json)
            if not follow or chunk["finished"]:
                break
            time.sleep(FOLLOW_INTERVAL_S)
            chunk = ops.logs(real_id, workflow=chunk["workflow"], after_seq=chunk["last_seq"])
    if follow and not as_json:
        console.print(Text(f"instance {chunk['status']}", style=_STATUS_STYLES.get(
            chunk["status"], "muted")))


def _print_log_line(line: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_plain(json.dumps(line, ensure_ascii=False, separators=(",", ":")))
        return
    text = Text(utc_time(line["at"], precise=True), style="muted") + Text(" ")
    step = line["step"]
    if step is not None:
        label = step["name"] if step["count"] == 1 else f"{step['name']} #{step['count']}"
        text += Text(f"[{label}] ", style="code")
    if line["level"] not in ("info", "log", "stdout", "print"):
        text += Text(f"{line['level']}: ", style="warning" if line["level"] == "warning" else
                     "error" if line["level"] in ("error", "stderr") else "muted")
    text += Text(line["message"])
    console.print(text, soft_wrap=True)


# ---- rendering helpers ------------------------------------------------------------------------

#: A result's own wording of its outcome, over the command's (never printed as a field).
_VERB = "_verb"


def _print_outcome(result: dict[str, Any], verb: str, as_json: bool) -> None:
    verb = result.pop(_VERB, verb)
    if as_json:
        _print_json(result)
        return
    text = Text("✓ ", style="ok") + Text(f"{verb} ") + _id_text(result)
    text += Text(" (status ") + _status_text(result["status"]) + Text(")")
    console.print(text, soft_wrap=True)
    if result.get("next"):
        console.print(Text("  next: " + result["next"], style="muted"), soft_wrap=True)


def _id_text(row: dict[str, Any]) -> Text:
    """The full id, with the part the tenant knows in bold (the prefix is the namespace)."""
    visible = row.get("tenant_instance_id")
    if visible and row["id"].endswith(visible):
        return Text(row["id"][:-len(visible)], style="muted") + Text(visible, style="bold")
    return Text(row["id"], style="bold")


def _status_text(status: str) -> Text:
    return Text(status, style=_STATUS_STYLES.get(status, "muted"))


def _error_line(error: Any) -> str:
    if isinstance(error, dict) and "message" in error:
        return f"{error.get('name') or 'Error'}: {error['message']}"
    return json.dumps(error, ensure_ascii=False)


def _json_text(value: Any, *, limit: int | None = None) -> Text:
    text = json.dumps(value, ensure_ascii=False)
    if limit is not None and len(text) > limit:
        text = text[:limit - 1] + "…"
    return Text(text)


def _print_json(value: Any) -> None:
    print_plain(json.dumps(value, indent=2, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    app.add_typer(instances_app, name="instances", help=HELP, short_help=COMMANDS["instances"])

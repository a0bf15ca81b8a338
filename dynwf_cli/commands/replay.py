"""``dynwf replay``: recorded histories against the tenants' current code, before any instance
wakes on it (emulator/replay.py); the verdicts as text, JSON, or CI annotations."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from dynwf_cli.commands import COMMANDS
from dynwf_cli.console import console
from dynwf_cli.options import (DEFAULT_ISOLATION, ConfigOption, DatabaseOption, FormatOption,
                               IsolationOption,
                               OutputFormat, StateDirOption, TenantsFilterOption,
                               WorkflowFilterOption)
from emulator import open_project, replay_project

HELP = """Replay the recorded histories of instances against the tenants' current code, in
isolates, answering every step from the history: no step body runs, no timer waits, nothing is
written. Each instance is compatible (the code reaches its recorded steps in the recorded order;
where the history ends, the replay stops), diverges (the step expected and the one the code now
runs, with the tenant's file and line) or fails to load. Default: every instance not finished,
in every tenant; --tenant, --instance and --history may each be given several times. Exit 0
when all are compatible, 1 otherwise.

Example:

\b
  dynwf replay --tenant acme --format github
  dynwf replay --history tests/histories/order-42.json
"""


def replay(
    tenant: TenantsFilterOption = None,
    instance: Annotated[Optional[list[str]], typer.Option(
        "--instance", "-i", metavar="ID",
        help="This instance (finished or not); repeatable. With one --tenant, the tenant's id.")
    ] = None,
    history: Annotated[Optional[list[Path]], typer.Option(
        "--history", metavar="FILE", exists=True, dir_okay=False,
        help="A history file (dynwf instances export) to replay too; repeatable.")] = None,
    output_format: FormatOption = OutputFormat.text,
    workflow: WorkflowFilterOption = None,
    isolation: IsolationOption = DEFAULT_ISOLATION,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    project = open_project(config, state_dir, database=database)
    outcomes = asyncio.run(replay_project(
        project, tenants=tenant or [], instances=instance or [], history_files=history or [],
        isolation=isolation.value, workflow=workflow))
    failed = [o for o in outcomes if not o.ok]
    if output_format is OutputFormat.json:
        typer.echo(json.dumps({"compatible": not failed, "checked": len(outcomes),
                               "instances": [o.to_json() for o in outcomes]}, indent=2))
    elif output_format is OutputFormat.github:
        for outcome in failed:
            typer.echo(_annotation(outcome))
        typer.echo(f"{len(outcomes) - len(failed)} of {len(outcomes)} instance(s) compatible")
    else:
        _print_text(outcomes, failed)
    raise typer.Exit(1 if failed else 0)


def _print_text(outcomes: list, failed: list) -> None:
    if not outcomes:
        console.print("no instance to replay: none is in flight (name one with --instance, or a "
                      "file with --history)")
        return
    for outcome in outcomes:
        style = {"compatible": "ok", "diverges": "error"}.get(outcome.verdict, "warning")
        glyph = "✓" if outcome.ok else "✗"
        who = f"{outcome.tenant} " if outcome.tenant is not None else ""
        line = Text(f"{glyph} ", style=style) + Text(who, style="bold") \
            + Text(outcome.instance, style="code") \
            + Text(f"  {outcome.verdict.replace('_', ' ')}: ", style=style) + Text(outcome.message)
        console.print(line, soft_wrap=True)
        where = outcome.path or outcome.file
        if where and not outcome.ok:
            console.print(Text(f"    at {where}:{outcome.line}", style="path"), soft_wrap=True)
    console.print(f"{len(outcomes) - len(failed)} of {len(outcomes)} instance(s) compatible")


def _annotation(outcome) -> str:
    """A GitHub Actions workflow command: ``::error file=F,line=N,title=T::message``."""
    parts = []
    where = outcome.path or outcome.file
    if where:
        parts.append(f"file={_escape(where, True)}")
        if outcome.line:
            parts.append(f"line={outcome.line}")
    parts.append(f"title={_escape('dynwf replay: ' + outcome.verdict.replace('_', ' '), True)}")
    message = f"instance {outcome.instance}" + (f" (tenant {outcome.tenant})"
                                                 if outcome.tenant is not None else "") \
        + f": {outcome.message}"
    return f"::error {','.join(parts)}::{_escape(message, False)}"


def _escape(text: str, is_property: bool) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if is_property else text


def register(app: typer.Typer) -> None:
    app.command("replay", help=HELP, short_help=COMMANDS["replay"])(replay)

"""``dynwf logs``: what every instance's code prints, as it prints it (``wrangler tail`` for a
project's workflows), across instances and tenants or for one tenant."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.text import Text

from dynwf_cli.commands import COMMANDS
from dynwf_cli.commands.instances import FOLLOW_INTERVAL_S
from emulator import InstanceOps, open_project
from dynwf_cli.console import console, print_plain, utc_time
from dynwf_cli.options import (ConfigOption, FollowAllOption, JsonOption, StateDirOption, DatabaseOption,
                               TenantFilterOption)

HELP = """Print the log lines of the project's instances, oldest first: time, tenant, instance,
step and message. With --follow, keep printing new lines as instances write them, until Ctrl-C
(like wrangler tail). Without a terminal, or with --json, one JSON object per line.

Example:

\b
  dynwf logs --tenant acme --follow
"""


def logs(
    tenant: TenantFilterOption = None,
    follow: FollowAllOption = False,
    lines: Annotated[int, typer.Option(
        "--lines", "-n", min=0, help="How many of the latest lines to print first.")] = 50,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
) -> None:
    as_json = as_json or not console.is_terminal
    with InstanceOps.open(open_project(config, state_dir, database=database)) as ops:
        chunk = ops.tail(tenant=tenant, lines=lines)
        if not as_json and not chunk["lines"]:
            # a person reading an empty screen would not know whether anything is coming
            whose = f" of tenant {tenant}" if tenant else ""
            console.print(Text(f"no log lines{whose} yet" + (
                "; waiting for new ones (Ctrl-C to stop)" if follow else ""), style="muted"))
        try:
            while True:
                for line in chunk["lines"]:
                    _print(line, as_json)
                if not follow:
                    break
                time.sleep(FOLLOW_INTERVAL_S)
                chunk = ops.tail(tenant=tenant, after_seq=chunk["last_seq"] or 0)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None


def _print(line: dict, as_json: bool) -> None:
    if as_json:
        print_plain(json.dumps(line, ensure_ascii=False, separators=(",", ":")))
        return
    text = Text(utc_time(line["at"], precise=True), style="muted") + Text(" ")
    if line["tenant"] is not None:
        text += Text(f"{line['tenant']} ", style="bold")
    text += Text(line["tenant_instance_id"] or line["instance"], style="code")
    step = line["step"]
    if step is not None:
        label = step["name"] if step["count"] == 1 else f"{step['name']} #{step['count']}"
        text += Text(f" [{label}]", style="code")
    text += Text(" ")
    if line["level"] not in ("info", "log", "stdout", "print"):
        text += Text(f"{line['level']}: ", style="warning" if line["level"] == "warning" else
                     "error" if line["level"] in ("error", "stderr") else "muted")
    text += Text(line["message"])
    console.print(text, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("logs", help=HELP, short_help=COMMANDS["logs"])(logs)

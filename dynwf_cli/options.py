"""The options several commands share, each declared once: the same name, short flag, metavar
and help text wherever it appears, so ``dynwf run --help`` and ``dynwf instances list --help``
describe ``--config`` in the same words. A command takes one as a parameter annotation:
``config: ConfigOption = None``.

Defaults that a help text names come from where the code takes them (``emulator.defaults``,
``emulator.project``, ``emulator.config``), never from a number typed into the text.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from emulator import (CONFIG_NAMES, DATABASE_ENV, DEV_IP, DEV_PORT, DEV_VARS_NAME, ISOLATION,
                      ISOLATIONS, RESTART_STEP_TYPES, STATE_DIR_ENV, STATE_DIR_NAME, ValidationError,
                      check_event_type)

#: ``--isolation``'s choices (``emulator.defaults.ISOLATIONS``), as typer wants them.
Isolation = Enum("Isolation", {mode: mode for mode in ISOLATIONS}, type=str)
DEFAULT_ISOLATION = Isolation(ISOLATION)
#: ``restart --type``'s choices: the platform's names of step types.
StepType = Enum("StepType", {name: name for name in RESTART_STEP_TYPES}, type=str)

ConfigOption = Annotated[Optional[Path], typer.Option(
    "--config", "-c", metavar="FILE",
    help="The wrangler file, or the folder holding it (default: the first of "
         + ", ".join(CONFIG_NAMES) + " in the current folder or, as wrangler does, the "
         "nearest folder above it).")]

StateDirOption = Annotated[Optional[Path], typer.Option(
    "--state-dir", metavar="DIR",
    help=f"Where the state lives (default: ${STATE_DIR_ENV}, else {STATE_DIR_NAME}/ beside the "
         "config).")]

DatabaseOption = Annotated[Optional[str], typer.Option(
    "--database", metavar="URL",
    help=f"The engine's database (default: ${DATABASE_ENV}, else {STATE_DIR_NAME}/state.sqlite in "
         "the state folder): postgresql://user@host:5432/db[?schema=NAME] for engines on many "
         "hosts, or sqlite:///path / a file path. Example: --database "
         "postgresql://dynwf@db.internal/dynwf")]

IsolationOption = Annotated[Isolation, typer.Option(
    "--isolation", case_sensitive=False,
    help="process: each tenant in its own guarded process; inline: in this process, for pdb "
         "(no isolation).")]

# the address and the bounds of the commands that serve HTTP (dev, serve)

IpOption = Annotated[Optional[str], typer.Option(
    "--ip", metavar="ADDRESS",
    help=f"Address to listen on (default: dev.ip of the config, else {DEV_IP}, loopback only; "
         "0.0.0.0 listens on every interface).")]

PortOption = Annotated[Optional[int], typer.Option(
    "--port", "-p", min=0, max=65_535, metavar="PORT",
    help=f"Port to listen on (default: dev.port of the config, else {DEV_PORT}; 0 picks a "
         "free one).")]

MaxInflightOption = Annotated[int, typer.Option(
    "--max-inflight", min=1, metavar="N",
    help="Requests the dispatcher answers at once; more wait (see --max-queued).")]

MaxQueuedOption = Annotated[int, typer.Option(
    "--max-queued", min=0, metavar="N",
    help="Requests that wait for a turn when --max-inflight are running; beyond them a "
         "request gets 503 dev.overloaded with Retry-After.")]

JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print JSON instead of text (output that streams: NDJSON, one object per line).")]

# --tenant, --workflow and --follow mean one of several things, and say which in the same words.

TenantOption = Annotated[str, typer.Option(
    "--tenant", "-t", metavar="TENANT", show_default=False,
    help="The tenant (its tenantId) whose code runs the instance.")]
TenantOfIdOption = Annotated[Optional[str], typer.Option(
    "--tenant", "-t", metavar="TENANT",
    help="The tenant (its tenantId) that knows the instance as ID.")]
TenantFilterOption = Annotated[Optional[str], typer.Option(
    "--tenant", "-t", metavar="TENANT", help="Only the instances of this tenant (its tenantId).")]
#: the same filter, given several times (dynwf replay)
TenantsFilterOption = Annotated[Optional[list[str]], typer.Option(
    "--tenant", "-t", metavar="TENANT", help="Only the instances of this tenant (its tenantId).")]

WorkflowOption = Annotated[Optional[str], typer.Option(
    "--workflow", "-w", metavar="NAME",
    help="The workflow (its name in the config; default: the first).")]
WorkflowOfIdOption = Annotated[Optional[str], typer.Option(
    "--workflow", "-w", metavar="NAME",
    help="The workflow whose instance ID is: needed when two workflows have an instance of that "
         "id (ids are unique per workflow).")]
WorkflowFilterOption = Annotated[Optional[str], typer.Option(
    "--workflow", "-w", metavar="NAME",
    help="Only the instances of this workflow (its name in the config).")]

FollowInstanceOption = Annotated[bool, typer.Option(
    "--follow", "-f", help="Keep printing new lines until the instance finishes.")]
FollowAllOption = Annotated[bool, typer.Option(
    "--follow", "-f", help="Keep printing new lines as instances write them, until Ctrl-C.")]

VarOption = Annotated[list[str], typer.Option(
    "--var", metavar="KEY:VALUE",
    help=f"A value for the dispatcher's env (repeatable); over {DEV_VARS_NAME} beside the config, "
         "over the config's vars.")]

#: How long ``--wait`` waits by default, in seconds.
WAIT_TIMEOUT_S = 60.0
WaitOption = Annotated[bool, typer.Option(
    "--wait", help="Then wait until a running engine (dynwf dev) has moved the instance on to "
    "where it rests (finished, waiting or paused) and say where: exit 0 complete, waiting or "
    "paused, 1 errored or terminated, or nothing moved it within --timeout. When no engine "
    "takes a tenant's instance within a second, it is run here instead, as dynwf run --resume "
    "does.")]
TimeoutOption = Annotated[float, typer.Option(
    "--timeout", metavar="SECONDS", min=0, help="How long --wait waits.")]


def _event_type(value: Optional[str]) -> Optional[str]:
    if value is None:
        return value
    try:
        return check_event_type(value)
    except ValidationError as exc:
        raise typer.BadParameter(exc.message) from None


# ``--type`` names an event type for send-event and a step type for restart: two meanings of one
# flag, each declared here.
EventTypeOption = Annotated[str, typer.Option(
    "--type", metavar="TYPE", callback=_event_type, show_default=False,
    help="The event type the workflow waits for.")]
StepTypeOption = Annotated[StepType, typer.Option(
    "--type", metavar="TYPE", case_sensitive=True,
    help="With --from: the kind of step, " + ", ".join(RESTART_STEP_TYPES) + " (default: do).")]


class OutputFormat(str, Enum):
    """``--format``'s choices, for the commands that check things (check, replay)."""

    text = "text"
    json = "json"
    github = "github"


FormatOption = Annotated[OutputFormat, typer.Option(
    "--format", "-f", case_sensitive=False,
    help="text for people, json for tools, github for GitHub Actions annotations.")]


# ``--id`` names the id a new instance gets: the one dynwf run creates, or a rerun's.
NewIdOption = Annotated[Optional[str], typer.Option(
    "--id", help="The id the tenant gives it.")]
RerunIdOption = Annotated[Optional[str], typer.Option(
    "--id", metavar="NEW",
    help="The new instance's id (the tenant's id, for a tenant's instance; default: random).")]

# ``--from`` names the step a restart or a rerun runs again from.
_FROM_HELP = "The name of the step to run again from; the steps reached before it keep their results."
FromStepOption = Annotated[Optional[str], typer.Option("--from", metavar="STEP", help=_FROM_HELP)]
RequiredFromStepOption = Annotated[str, typer.Option("--from", metavar="STEP", show_default=False,
                                                     help=_FROM_HELP)]

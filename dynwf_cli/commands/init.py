"""``dynwf init``: write a new project from a template and say what to run next.

Choosing, rendering and writing the files is ``emulator.templates``; this module parses the
options and prints the outcome: each file written (and which ones replaced a file that was
there), then the commands that take a newcomer from an empty folder to a finished workflow.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import typer
from rich.text import Text

from dynwf_cli.commands import COMMANDS
from dynwf_cli.console import console, print_plain
from dynwf_cli.options import JsonOption
from emulator import DEFAULT_TEMPLATE, backup_folder, plan_template, write_template

HELP = """Create a project: a dispatcher that loads each tenant's code at runtime, two tenants
with durable workflows to start from, a wrangler.jsonc and a README.

DIR is created if it does not exist (default: the current folder). A folder that is not empty
is refused and left as it was, unless --force is given: then the template's files are added,
files that differ from the template are overwritten (each one is listed), identical files are
left alone and no other file is touched. The project is named after DIR.

Exit status: 0 when the project was written, 1 when DIR is not empty or a path is in the way,
2 on a usage error such as an unknown --template.

Example:

\b
  dynwf init my-workflows && cd my-workflows && dynwf check
"""

NEXT_STEPS = ["dynwf check", """dynwf run --tenant acme --params '{"name": "Alice"}'"""]


def init(
    directory: Path = typer.Argument(
        Path("."), metavar="DIR", show_default=False,
        help="Folder to create the project in (default: the current folder)."),
    template: str = typer.Option(
        DEFAULT_TEMPLATE, "--template", "-t", metavar="NAME", help="The template to write."),
    force: bool = typer.Option(
        False, "--force", help="Write into a folder that is not empty, overwriting files that "
                               "differ from the template."),
    as_json: JsonOption = False,
) -> None:
    # Planned first only to label the outcome; write_template plans again and decides alone.
    planned = plan_template(template, directory)
    overwriting = {p.path for p in planned if p.state == "overwrite"}
    unchanged = [p.path for p in planned if p.state == "same"]
    backup = backup_folder(directory)
    written = [path.relative_to(directory) for path in
               write_template(template, directory, force=force, backup_to=backup)]
    kept = backup if overwriting and any(p in overwriting for p in written) else None
    if as_json:
        print_plain(json.dumps({
            "directory": os.path.abspath(directory), "template": template,
            "files": [p.as_posix() for p in written],
            "overwritten": [p.as_posix() for p in written if p in overwriting],
            "unchanged": [p.as_posix() for p in unchanged],
            "backup": os.path.abspath(kept) if kept is not None else None,
        }, indent=2))
        return
    _print_text(directory, template, written, overwriting, unchanged, kept)


def _print_text(directory: Path, template: str, written: list[Path], overwriting: set[Path],
                unchanged: list[Path], kept: Path | None) -> None:
    shown = Path(os.path.relpath(os.path.abspath(directory)))
    where = "the current folder" if shown == Path(".") else f"{shown.as_posix()}/"
    if written:
        console.print(Text(f"Wrote the {template} template into {where}:", style="ok"),
                      soft_wrap=True)
    else:
        console.print(Text(f"Nothing to write: {where} already holds the {template} template.",
                           style="ok"), soft_wrap=True)
    for path in written:
        line = Text("  ") + Text(path.as_posix(), style="path")
        if path in overwriting:
            line += Text("  (overwritten)", style="warning")
        console.print(line, soft_wrap=True)
    if kept is not None:
        console.print(Text("  the files it replaced are kept in "
                           + os.path.relpath(kept) + "/", style="warning"), soft_wrap=True)
    if unchanged and written:
        console.print(Text("  already as in the template, left alone: "
                           + ", ".join(p.as_posix() for p in unchanged), style="muted"),
                      soft_wrap=True)
    console.print()
    console.print("Next:")
    steps = ([] if shown == Path(".") else [f"cd {shlex.quote(shown.as_posix())}"]) + NEXT_STEPS
    for step in steps:
        print_plain(f"  {step}")


def register(app: typer.Typer) -> None:
    app.command("init", help=HELP, short_help=COMMANDS["init"])(init)

"""``dynwf check``: run the project's static checks and print them for a person or for CI.

The checks themselves live in ``emulator.analysis.check``; this module parses options, picks an
output format and maps the findings to an exit status (0 clean or warnings only, 1 errors).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from dynwf_cli.commands import COMMANDS
from dynwf_cli.console import console, err_console, print_plain
from dynwf_cli.options import ConfigOption, FormatOption, OutputFormat
from emulator import DEFAULT_ENTRY_CLASS, CheckReport, Diagnostic, Project, run_check

HELP = """Check a project without running it: the wrangler file, the dispatcher module, every
tenant's workflow code (structure, step names, durations, step configs, ids, replay safety).

Exit status: 0 when there are no errors (warnings allowed), 1 when there are errors, or
warnings with --strict, or when no config file is found; 2 on a usage error.

Example:

\b
  dynwf check --config examples/hello/wrangler.jsonc --format github --strict
"""


def check(
    config: ConfigOption = None,
    tenants: Optional[Path] = typer.Option(
        None, "--tenants", metavar="DIR",
        help="Folder with one sub-folder per tenant id (default: tenants/ beside the config)."),
    entrypoint: str = typer.Option(
        DEFAULT_ENTRY_CLASS, "--entrypoint", metavar="CLASS",
        help="The class each tenant's index.py must define."),
    output: FormatOption = OutputFormat.text,
    strict: bool = typer.Option(False, "--strict", help="Fail (exit 1) on warnings too."),
) -> None:
    report = run_check(config, tenants_dir=tenants, entry_class=entrypoint)
    shown = [_relative_to_cwd(report, d) for d in report.diagnostics]
    if output is OutputFormat.json:
        print_plain(json.dumps([d.to_dict() for d in shown], indent=2, ensure_ascii=False))
    elif output is OutputFormat.github:
        for diagnostic in shown:
            print_plain(_github_command(diagnostic))
    else:
        _print_text(report, shown)
    failed = report.errors > 0 or (strict and report.warnings > 0)
    raise typer.Exit(1 if failed else 0)


def _relative_to_cwd(report: CheckReport, diagnostic: Diagnostic) -> Diagnostic:
    """Paths as the user can open them from where they ran the command; GitHub annotations
    also need them relative to the checkout, which is the working folder in CI."""
    return replace(diagnostic, file=Path(os.path.relpath(report.root / diagnostic.file)).as_posix())


def refuse_check_errors(project: Project, *, command: str, tenant: str | None = None) -> None:
    """Exit 1 with the findings of ``dynwf check`` when any is an error that would make
    ``command`` fail, before anything starts: the wrangler file's, the dispatcher's, and those of
    ``tenant`` (every tenant's when None would be too strict: ``dev`` serves the others on).
    The other tenants' folders are not read, nor the wrangler file again."""
    report = run_check(project.config.path, config=project.config,
                       tenants=() if tenant is None else (tenant,))
    relevant = [d for d in report.diagnostics if _concerns(d, tenant)]
    errors = sum(d.severity == "error" for d in relevant)
    if not errors:
        return
    for diagnostic in relevant:
        for line in _diagnostic_lines(_relative_to_cwd(report, diagnostic)):
            err_console.print(line, soft_wrap=True)
    err_console.print(Text(f"dynwf {command}: {_plural(errors, 'error')} in the project; fix "
                           f"{'it' if errors == 1 else 'them'} first (dynwf check lists every "
                           "problem)", style="error"), soft_wrap=True)
    raise typer.Exit(1)


def _concerns(diagnostic: Diagnostic, tenant: str | None) -> bool:
    parts = Path(diagnostic.file).parts
    if not parts or parts[0] != "tenants":
        return True
    return tenant is not None and len(parts) > 1 and parts[1] == tenant


def _diagnostic_lines(diagnostic: Diagnostic) -> list[Text]:
    line = Text("  ")
    line += Text(f"{diagnostic.file}:{diagnostic.line}:{diagnostic.column}", style="muted")
    line += Text("  ")
    line += Text(f"{diagnostic.severity:<7}", style=diagnostic.severity)
    line += Text(f" {diagnostic.code}", style="code")
    line += Text(f"  {diagnostic.message}")
    if not diagnostic.hint:
        return [line]
    return [line, Text(f"      hint: {diagnostic.hint}", style="muted")]


def _print_text(report: CheckReport, shown: list[Diagnostic]) -> None:
    current = None
    for diagnostic in shown:
        if diagnostic.file != current:
            if current is not None:
                console.print()
            current = diagnostic.file
            console.print(Text(current, style="path"))
        for line in _diagnostic_lines(diagnostic):
            console.print(line, soft_wrap=True)
    if shown:
        console.print()
    files = _plural(len(report.files), "file")
    if not shown:
        console.print(Text(f"✓ no problems in {files}", style="ok"))
        return
    summary = f"{_plural(report.errors, 'error')}, {_plural(report.warnings, 'warning')} in {files}"
    console.print(Text(summary, style="error" if report.errors else "warning"))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _github_command(diagnostic: Diagnostic) -> str:
    """One GitHub Actions workflow command, which the runner turns into an annotation."""
    message = diagnostic.message + (f" (hint: {diagnostic.hint})" if diagnostic.hint else "")
    properties = ",".join([f"file={_escape_property(diagnostic.file)}", f"line={diagnostic.line}",
                           f"col={diagnostic.column}", f"title={_escape_property(diagnostic.code)}"])
    return f"::{diagnostic.severity} {properties}::{_escape_data(message)}"


def _escape_data(text: str) -> str:
    # The runner's own escaping rules (actions/toolkit, command.ts escapeData).
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def register(app: typer.Typer) -> None:
    app.command("check", help=HELP, short_help=COMMANDS["check"])(check)

"""The root ``dynwf`` command; each sub-command lives in its own module under ``commands/``,
imported only when that command runs (``dynwf_cli/lazy.py``)."""

from __future__ import annotations

import os
import sys

import typer

from dynwf_cli.lazy import SETTINGS, LazyGroup
from emulator import DynwfError, __version__

app = typer.Typer(
    name="dynwf",
    cls=LazyGroup,
    help="Local emulator and dev loop for Dynamic Workflows: durable workflows whose code is "
         "different for every tenant.\n\nExample:\n\n  dynwf check --config wrangler.jsonc",
    no_args_is_help=True,
    add_completion=True,
    **SETTINGS,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dynwf {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    # a plain bool: typer then has no value to convert when the flag is absent
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Local emulator and dev loop for Dynamic Workflows."""


def main() -> None:
    """Console-script entry: run the app, turning DynwfError into one red line and exit code."""
    from typer.exceptions import TyperException
    _name_the_shell_given()
    try:
        code = app(standalone_mode=False)
    except DynwfError as exc:
        if os.environ.get("DYNWF_DEBUG") == "1":
            raise
        from dynwf_cli.console import print_error
        print_error(exc)
        sys.exit(exit_code_for(exc))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except TyperException as exc:  # usage errors: bad option, bad value, missing argument
        exc.show()
        sys.exit(exc.exit_code)
    # standalone_mode=False hands typer.Exit(n) back as a return value
    sys.exit(code if isinstance(code, int) else 0)


#: The shells typer writes a completion script for.
_SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _name_the_shell_given() -> None:
    """``dynwf --show-completion bash`` (or ``--install-completion zsh``): the shell named is
    the one used. Typer's flags otherwise detect the shell from the parent process and ignore
    the name, which fails ("Shell  not supported") where there is no parent shell to detect (a
    setup script, CI); typer's switch below makes the flags take the name instead."""
    args = sys.argv[1:]
    if len(args) == 2 and args[0] in ("--show-completion", "--install-completion") \
            and args[1] in _SHELLS:
        os.environ["_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"] = "1"


def exit_code_for(exc: DynwfError) -> int:
    """The exit status of ``exc``, from its code's entry in the one table of codes
    (``emulator/error_codes.py``; docs/architecture.md §9)."""
    from emulator import exit_code
    return exit_code(exc.code)

"""The root command: version and help, in-process and through the installed console script."""

import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any, Iterator, get_args, get_origin

import typer
from typer.testing import CliRunner

from dynwf_cli import options
from dynwf_cli.app import app
from emulator import __version__

runner = CliRunner()


def test_version_in_process():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"dynwf {__version__}"


def test_help_shows_an_example():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Example:" in result.stdout
    assert "dynwf check" in result.stdout


def test_installed_console_script_runs():
    exe = Path(sys.executable).with_name("dynwf")
    result = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"dynwf {__version__}"


def test_shell_completion_is_offered_and_completes_commands(tmp_path):
    """`dynwf --install-completion` / `--show-completion` (bash, zsh, fish), as a wrangler user
    expects of a CLI; completing "dynwf ins" offers "instances"."""
    import os
    dynwf = str(Path(sys.executable).parent / "dynwf")
    script = subprocess.run([dynwf, "--show-completion", "bash"], capture_output=True, text=True,
                            timeout=30)
    assert script.returncode == 0 and "_dynwf_completion" in script.stdout
    # the shell named is the one used, whatever shell (if any) started this process
    zsh = subprocess.run([dynwf, "--show-completion", "zsh"], capture_output=True, text=True,
                         timeout=30, start_new_session=True, stdin=subprocess.DEVNULL)
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef dynwf"), zsh.stderr
    env = dict(os.environ, _DYNWF_COMPLETE="complete_bash", COMP_WORDS="dynwf instances se",
               COMP_CWORD="2")
    completed = subprocess.run([dynwf], capture_output=True, text=True, env=env, timeout=30)
    assert completed.stdout.split() == ["send-event"]


def _declarations() -> list[typer.models.OptionInfo]:
    """The options dynwf_cli/options.py declares (each an ``Annotated[type, typer.Option]``)."""
    return [info for value in vars(options).values() if get_origin(value) is Annotated
            for info in get_args(value)[1:] if isinstance(info, typer.models.OptionInfo)]


def _options(command: Any, path: str = "dynwf") -> Iterator[tuple[str, Any]]:
    """(command path, option) of every option in the command tree (typer's own click objects)."""
    for param in command.params:
        if param.param_type_name == "option" and "--help" not in param.opts:
            yield path, param
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _options(sub, f"{path} {name}")


def test_an_option_several_commands_take_is_declared_once():
    """Wherever a flag appears in more than one command, its help is one of the declarations in
    dynwf_cli/options.py; --config, --state-dir, --isolation and --json read the same, flags,
    metavar and help, in every command that takes them."""
    declared = {info.help for info in _declarations()}
    by_flag: dict[str, dict[str, Any]] = defaultdict(dict)
    for path, option in _options(typer.main.get_command(app)):
        by_flag[max(option.opts, key=len)][path] = option
    shared = {flag: seen for flag, seen in by_flag.items() if len(seen) > 1}
    assert {"--config", "--state-dir", "--isolation", "--json", "--tenant", "--workflow",
            "--follow"} <= set(shared)
    for flag, seen in shared.items():
        drifted = {path: option.help for path, option in seen.items()
                   if option.help not in declared}
        assert drifted == {}, flag
    for flag in ("--config", "--state-dir", "--isolation", "--json"):
        forms = {(option.help, tuple(option.opts), option.metavar) for option in shared[flag].values()}
        assert len(forms) == 1, (flag, forms)
    assert {"dynwf run", "dynwf dev", "dynwf init", "dynwf logs",
            "dynwf instances list"} <= set(shared["--json"])

"""The root command: version and help, in-process and through the installed console script."""

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

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
    env = dict(os.environ, _DYNWF_COMPLETE="complete_bash", COMP_WORDS="dynwf instances se",
               COMP_CWORD="2")
    completed = subprocess.run([dynwf], capture_output=True, text=True, env=env, timeout=30)
    assert completed.stdout.split() == ["send-event"]

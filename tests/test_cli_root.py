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

"""Sub-commands. Each module defines ``register(app)``; the list below fixes the help order."""

from __future__ import annotations

import importlib

import typer

COMMANDS: list[str] = ["init", "check", "run", "dev", "serve", "instances", "replay", "logs"]


def register_all(app: typer.Typer) -> None:
    for name in COMMANDS:
        importlib.import_module(f"dynwf_cli.commands.{name}").register(app)

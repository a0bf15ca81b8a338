"""The root command's group, whose sub-commands are imported when one is asked for.

A command's module brings what that command needs (the engine, the dev server, rich's live
display), and importing them all is most of what ``dynwf`` used to take to start. So the group
knows the commands by :data:`dynwf_cli.commands.COMMANDS` alone: ``dynwf --help`` lists them from
it, ``dynwf check`` imports ``dynwf_cli.commands.check`` and nothing of ``run`` or ``dev``, and
completing ``dynwf instances se`` imports ``instances`` only. Whatever walks the whole tree
(``group.commands.items()``) gets every command, loaded.

A command that starts a host with isolates (:data:`STARTS_ISOLATES`) has the isolates' zygote
started before its module is imported (``emulator.isolates.early``): the zygote boots on the
other core while the command imports, parses its options and checks the project, and the
command's pool adopts it. One the command never adopts (it stopped before its host started) is
stopped when the command ends.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any

import typer
from typer.core import TyperGroup

from dynwf_cli.commands import COMMANDS

#: The settings the root app and every command share (``dynwf_cli/app.py``).
SETTINGS: dict[str, Any] = {
    "rich_markup_mode": None,
    "pretty_exceptions_enable": False,
    "context_settings": {"help_option_names": ["-h", "--help"]},
}


#: The commands that start a host whose tenants run in isolates (unless ``--isolation inline``),
#: each with whether it shows its help instead when given no arguments.
STARTS_ISOLATES = {"run": True, "dev": False, "replay": False}


def starts_isolates(name: str, args: list[str]) -> bool:
    """Whether ``dynwf NAME ARGS...`` will start isolates: not for ``--help`` (or no arguments
    where that means help), nor with an ``--isolation`` other than process (the option's value
    is not case-sensitive)."""
    if name not in STARTS_ISOLATES or "--help" in args or "-h" in args \
            or (STARTS_ISOLATES[name] and not args):
        return False
    for index, arg in enumerate(args):
        if arg == "--isolation":
            value = args[index + 1] if index + 1 < len(args) else ""
        elif arg.startswith("--isolation="):
            value = arg.partition("=")[2]
        else:
            continue
        if value.lower() != "process":
            return False
    return True


def load_command(name: str) -> Any:
    """The click command ``name``, its module imported and registered as typer would have."""
    holder = typer.Typer(add_completion=False, **SETTINGS)
    importlib.import_module(f"dynwf_cli.commands.{name}").register(holder)
    return typer.main.get_group(holder).commands[name]


class LazyCommands(MutableMapping[str, Any]):
    """name -> click command, each loaded on first look; the names (and their order) are
    known without loading any."""

    def __init__(self, added: MutableMapping[str, Any]) -> None:
        self._loaded: dict[str, Any] = dict(added)

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            self._loaded[name] = load_command(name)
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self._loaded if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS) + sum(name not in COMMANDS for name in self._loaded)

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self._loaded

    def loaded(self, name: str) -> bool:
        return name in self._loaded


class LazyGroup(TyperGroup):
    """The root group: sub-commands from :class:`LazyCommands`; its help lists each with its
    summary from :data:`~dynwf_cli.commands.COMMANDS` (the line the command registers itself
    with), loading none of them."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(self.commands)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        # not while completing a command line (click resolves commands then too)
        if args and not ctx.resilient_parsing and starts_isolates(args[0], args[1:]):
            from emulator import start_isolates_early
            start_isolates_early()
            ctx.call_on_close(_stop_unadopted)
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        commands: LazyCommands = self.commands  # type: ignore[assignment]
        rows = [(name, commands[name].get_short_help_str(10_000) if commands.loaded(name)
                 else COMMANDS[name]) for name in commands
                if not (commands.loaded(name) and commands[name].hidden)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _stop_unadopted() -> None:
    from emulator import stop_unadopted
    stop_unadopted()

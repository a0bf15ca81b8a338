"""Shared rich consoles and the one way errors are printed."""

from __future__ import annotations

import os

from rich.console import Console
from rich.theme import Theme

THEME = Theme({
    "error": "bold red", "warning": "yellow", "ok": "green", "muted": "grey50",
    "code": "cyan", "path": "bold",
    # the step checklist (dynwf_cli/checklist.py); its glyphs carry the meaning without colour
    "step.pending": "grey50", "step.running": "bold cyan", "step.done": "green",
    "step.retrying": "yellow", "step.failed": "bold red", "step.sleeping": "blue",
    "step.waiting": "magenta", "step.replayed": "grey50", "step.cancelled": "grey62", "step.log": "grey62",
})

console = Console(theme=THEME, highlight=False, no_color=bool(os.environ.get("NO_COLOR")) or None)
err_console = Console(stderr=True, theme=THEME, highlight=False,
                      no_color=bool(os.environ.get("NO_COLOR")) or None)


def print_plain(text: str) -> None:
    """Text exactly as given on stdout: no markup, emoji or highlighting, never wrapped to a width
    (piped output stays whole for scripts)."""
    console.print(text, markup=False, emoji=False, highlight=False, soft_wrap=True)


def utc_time(ms: int | None, *, precise: bool = False) -> str:
    """Epoch ms as UTC, as every table of the CLI shows it (``-`` for none); ``precise``: the time
    of day to the millisecond, for log lines."""
    from datetime import datetime, timezone
    if ms is None:
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    if precise:
        return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def print_error(exc: Exception) -> None:
    """One red line: ``error [code] message (hint: ...)``, never a traceback."""
    from rich.text import Text
    err_console.print(Text("error ", style="error") + Text(str(exc)), soft_wrap=True)

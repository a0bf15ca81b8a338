"""Shared rich consoles and the one way errors are printed."""

from __future__ import annotations

import os
from typing import Iterable

from rich.console import Console
from rich.segment import Segment
from rich.theme import Theme

THEME = Theme({
    "error": "bold red", "warning": "yellow", "ok": "green", "muted": "grey50",
    "code": "cyan", "path": "bold",
    # the step checklist (dynwf_cli/checklist.py); its glyphs carry the meaning without colour
    "step.pending": "grey50", "step.running": "bold cyan", "step.done": "green",
    "step.retrying": "yellow", "step.failed": "bold red", "step.sleeping": "blue",
    "step.waiting": "magenta", "step.replayed": "grey50", "step.cancelled": "grey62", "step.log": "grey62",
})

#: Control characters as what a terminal shows for them, never as what it obeys: C0 but newline and
#: tab as their control pictures (ESC as ␛), DEL as ␡, C1 as the replacement character.
_SHOWN_CONTROLS = {code: 0x2400 + code for code in range(0x20) if code not in (0x09, 0x0A)} | \
    {0x7F: 0x2421} | {code: 0xFFFD for code in range(0x80, 0xA0)}


class TerminalConsole(Console):
    """A console that never lets text it prints drive the terminal: a tenant's log lines, error
    messages and outputs are the tenant's to choose, and an escape sequence among them could set
    the window title, write the clipboard or redraw the screen (with the Python checks switched
    off, an isolate writes any bytes it likes into its log). On a terminal the text's control
    characters are shown, not sent; rich's own styling and cursor control are kept. Piped output
    is left as it is (JSON escapes control characters itself; a script gets the text it asked for)."""

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        if self.is_terminal:
            buffer = [segment if segment.control else
                      Segment(segment.text.translate(_SHOWN_CONTROLS), segment.style)
                      for segment in buffer]
        return super()._render_buffer(buffer)


console = TerminalConsole(theme=THEME, highlight=False,
                          no_color=bool(os.environ.get("NO_COLOR")) or None)
err_console = TerminalConsole(stderr=True, theme=THEME, highlight=False,
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

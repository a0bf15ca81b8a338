"""``dynwf serve``'s log: one JSON object per line on stderr, for a log collector.

Each line is ``{"time", "level", "event", ...fields}``: ``time`` in ISO 8601, UTC, to the
millisecond, read from the host's clock; ``event`` a dotted name (``server.started``,
``http.request``, ``instance.status``, ``server.stopped``). Nothing else is written to stderr
while the server runs: uvicorn's own loggers are routed here too (:func:`capture_logging`), so a
reader can parse every line without meeting a line of plain text or a colour code.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import datetime, timezone
from typing import Any, TextIO

from emulator.clock import Clock, SystemClock

__all__ = ["JsonLog", "capture_logging"]

LEVELS = ("debug", "info", "warning", "error")


class JsonLog:
    """Writes log lines; safe to call from any thread (a line is never split by another)."""

    def __init__(self, stream: TextIO | None = None, clock: Clock | None = None) -> None:
        self._stream = stream
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()

    def line(self, level: str, event: str, **fields: Any) -> None:
        when = datetime.fromtimestamp(self._clock.real_ms() / 1000, tz=timezone.utc)
        record = {"time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                  "level": level, "event": event, **fields}
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        stream = self._stream or sys.stderr
        with self._lock:
            try:
                stream.write(text + "\n")
                stream.flush()
            except (BrokenPipeError, ValueError):   # the reader went away: nothing to tell
                pass

    def info(self, event: str, **fields: Any) -> None:
        self.line("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.line("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.line("error", event, **fields)


class _Handler(logging.Handler):
    def __init__(self, log: JsonLog) -> None:
        super().__init__()
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            fields["error"] = f"{type(exc).__name__}: {exc}"
        self._log.line(level if level in LEVELS else "error", "server.log", **fields)


#: the loggers of libraries the server runs: uvicorn's, asyncio's, and psycopg's (its pool says
#: when it discards a connection the database closed)
CAPTURED = ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncio", "psycopg", "psycopg.pool")


def capture_logging(log: JsonLog, names: tuple[str, ...] = CAPTURED) -> None:
    """Send what these loggers write to ``log`` as JSON lines, and nowhere else (no plain-text
    handler, no propagation to the root logger's last-resort handler)."""
    handler = _Handler(log)
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.WARNING)

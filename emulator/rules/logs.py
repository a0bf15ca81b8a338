"""The levels a log line may have: what ``print``, ``logging`` and the platform's console methods
map to, and the only values the host accepts from an isolate."""

from __future__ import annotations

from enum import StrEnum


class LogLevel(StrEnum):
    """The levels a log line may have."""

    DEBUG = "debug"
    INFO = "info"
    LOG = "log"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"

    @classmethod
    def parse(cls, level: str) -> "LogLevel":
        try:
            return cls(level)
        except ValueError:
            shown = level if len(level) <= 20 else level[:17] + "..."
            raise ValueError(f"log level {shown!r} is not one of "
                             f"{', '.join(member.value for member in cls)}") from None

"""Durations as the Workflows API writes them: ``"10 seconds"``, ``"1 day"``, a number, a timedelta.

The typed grammar is ``"<number> <unit>[s]"`` with units second, minute, hour, day, week, month
(30 days) and year (365.25 days); ``ms``/``millisecond`` is also accepted because the platform's
parser accepts it. A bare number is **milliseconds**, which is what the real runtime does with it
(Cloudflare's Python docs say seconds; ``dynwf check`` warns about that). Unlike the platform's
lenient parser, an unknown unit is an error naming the closest known unit, never a silent guess.
"""

from __future__ import annotations

import difflib
import math
import re
from datetime import timedelta

from emulator.errors import DurationError

MS_PER_UNIT: dict[str, float] = {
    "millisecond": 1,
    "ms": 1,
    "second": 1_000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "week": 7 * 86_400_000,
    "month": 30 * 86_400_000,
    "year": 365.25 * 86_400_000,
}
_SPOKEN_UNITS = [u + "s" for u in MS_PER_UNIT if u != "ms"] + list(MS_PER_UNIT)
_PATTERN = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s+([A-Za-z]+)\s*$")


def unit_of(word: str) -> str | None:
    """The canonical unit for ``word`` ("Minutes" -> "minute"), or None if it is not one."""
    word = word.lower()
    if word in MS_PER_UNIT:
        return word
    if word.endswith("s") and word[:-1] in MS_PER_UNIT:
        return word[:-1]
    return None


def parse_duration(value: object, *, what: str = "duration") -> int:
    """Milliseconds in ``value``; raises DurationError with a precise reason when it is not one."""
    if isinstance(value, bool):
        raise DurationError(f"{what} must be a string like '10 seconds', a number of milliseconds "
                            f"or a timedelta, not a bool")
    if isinstance(value, timedelta):
        ms = value.total_seconds() * 1000
    elif isinstance(value, (int, float)):
        ms = float(value)
    elif isinstance(value, str):
        ms = _parse_text(value, what)
    else:
        raise DurationError(f"{what} must be a string like '10 seconds', a number of milliseconds "
                            f"or a timedelta, not {type(value).__name__}")
    if math.isnan(ms) or math.isinf(ms):
        raise DurationError(f"{what} {value!r} is not a finite duration")
    if ms < 0:
        raise DurationError(f"{what} {value!r} is negative")
    return round(ms)


def _parse_text(text: str, what: str) -> float:
    match = _PATTERN.match(text)
    if not match:
        if re.fullmatch(r"\s*[+-]?\d+(\.\d*)?\s*", text):
            raise DurationError(f"{what} {text!r} has no unit",
                                hint=f"write '{text.strip()} seconds' or pass a number of milliseconds")
        raise DurationError(f"{what} {text!r} is not a duration",
                            hint="use '<number> <unit>', e.g. '10 seconds', '5 minutes', '1 day'")
    number, word = match.groups()
    unit = unit_of(word)
    if unit is None:
        close = difflib.get_close_matches(word.lower(), _SPOKEN_UNITS, n=1, cutoff=0.5)
        suggestion = close[0] if not close or close[0].endswith("s") or float(number) == 1 \
            else close[0] + "s"
        hint = f"did you mean '{number} {suggestion}'?" if close else \
            "units are second, minute, hour, day, week, month, year"
        raise DurationError(f"{what} {text!r} has unknown unit '{word}'", hint=hint)
    return float(number) * MS_PER_UNIT[unit]


def format_ms(ms: float) -> str:
    """A short human form of a millisecond count: 1500 -> '1.5s', 90000 -> '1m30s'."""
    if ms < 1000:
        return f"{ms:.0f}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s" if seconds else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"

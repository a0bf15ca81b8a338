"""Cron expressions of a workflow's ``schedules``, in the platform's dialect (docs/semantics.md
§1.8): five fields (minute, hour, day of month, month, weekday), evaluated in UTC; names of
months and weekdays in any case; ``L`` and ``LW`` in the day of month; ``nL`` (the last such
weekday of the month) and ``n#k`` (the k-th) in the weekday; ranges that wrap (``FRI-SUN``,
``22-2``). Weekdays count as the platform counts them, **1-7 from Sunday** (``1`` is SUN, ``2-6``
MON-FRI), not as Unix cron does (0-6 from Sunday). When both the day of month and the weekday are
restricted (neither is exactly ``*``), a day matching either one fires.

Evaluation is cronsim's. Chosen over croniter: no dependencies (croniter needs dateutil), stable
and maintained, and written to match Debian cron exactly, with tests to hold it there; it
supports ``L``, ``LW``, ``nL`` and ``#``, croniter not ``LW`` nor ``nL``. Daylight saving time,
the usual source of cron bugs, never applies: the platform's schedules run in UTC, and so are
they evaluated here. Each expression is translated first: weekday numbers from the platform's
1-7 to cronsim's 0-6, and every range, step and name spelled out as a list of values, so
wrapping ranges work and only a bare ``*`` counts as unrestricted (cronsim, like Debian, also
counts ``*/2`` as unrestricted when it decides between "both days" and "either day"; the
platform does not). Refused, though the platform takes them: ``nW`` (the weekday nearest day n)
and ``L-n`` (n days before the last): cronsim has neither, and ``dynwf check`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

from cronsim import CronSim, CronSimError

#: The platform's limits: schedules per account (dynwf counts those of the project's config) and
#: characters per expression.
MAX_SCHEDULES = 100
MAX_CRON_CHARS = 256

_FIELDS = ("minute", "hour", "day of month", "month", "weekday")
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (1, 7))
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_NAMES = {3: _MONTHS, 4: _WEEKDAYS}
_MONTH, _WEEKDAY = 3, 4
#: cronsim gives up looking after this many years; an expression with no firing in them is refused.
_SEARCH_FROM = datetime(2026, 1, 1, tzinfo=timezone.utc)


class CronError(ValueError):
    """What is wrong with an expression, in words (the message)."""


@dataclass(frozen=True, slots=True)
class Cron:
    """A valid expression: ``text`` as written, ``translated`` as cronsim reads it."""

    text: str
    translated: str

    def after(self, ms: int) -> Iterator[int]:
        """Firing times (epoch ms, whole minutes) strictly after ``ms``, in order."""
        start = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
        for when in CronSim(self.translated, start):
            yield int(when.timestamp()) * 1000

    def next_after(self, ms: int) -> int | None:
        return next(self.after(ms), None)

    def between(self, after_ms: int, until_ms: int) -> list[int]:
        """Firing times in ``(after_ms, until_ms]``."""
        found = []
        for when in self.after(after_ms):
            if when > until_ms:
                break
            found.append(when)
        return found


def parse_cron(text: str) -> Cron:
    """The expression, checked; raises :class:`CronError` saying what is wrong."""
    if not isinstance(text, str):
        raise CronError(f"a cron expression is a string, not {type(text).__name__}")
    if len(text) > MAX_CRON_CHARS:
        raise CronError(f"it is {len(text)} characters long; the platform allows at most "
                        f"{MAX_CRON_CHARS}")
    fields = text.split()
    if len(fields) != len(_FIELDS):
        raise CronError(f"it has {len(fields)} field{'s' if len(fields) != 1 else ''}; a cron "
                        "expression has 5: minute hour day-of-month month weekday")
    translated = " ".join(_translate(index, field.upper()) for index, field in enumerate(fields))
    try:
        fires = CronSim(translated, _SEARCH_FROM)
    except CronSimError as exc:     # what the translation lets through and cronsim refuses
        if str(exc) == "Bad day-of-month":   # e.g. 31 in February only
            raise CronError("it never fires: no month it names has that day") from None
        raise CronError(f"it cannot be evaluated ({exc})") from None
    if next(fires, None) is None:
        raise CronError("it never fires (no such date in any year)")
    return Cron(text, translated)


def _translate(index: int, field: str) -> str:
    if field == "*":
        return field
    if index == 2 and field in ("L", "LW"):
        return field
    return ",".join(_term(index, term) for term in field.split(","))


def _term(index: int, term: str) -> str:
    name = _FIELDS[index]
    if not term:
        raise CronError(f"the {name} field has an empty item (two commas, or one at an end)")
    if index == 2 and (term.endswith("W") or term.startswith("L")):
        raise CronError(f"'{term}' in the day of month: dynwf supports L and LW there, not nW "
                        "or L-n (the platform does)")
    if index == _WEEKDAY and term.endswith("L"):
        return f"{_value(index, term[:-1]) - 1}L"
    if index == _WEEKDAY and "#" in term:
        day, _, nth = term.partition("#")
        if not nth.isdigit() or not 1 <= int(nth) <= 5:
            raise CronError(f"'{term}': the week after # is 1 to 5")
        return f"{_value(index, day) - 1}#{int(nth)}"
    values = _values(index, term)
    if index == _WEEKDAY:
        values = [v - 1 for v in values]     # the platform's 1-7 from Sunday, cronsim's 0-6
    return ",".join(str(v) for v in sorted(set(values)))


def _values(index: int, term: str) -> list[int]:
    """A range, a step or one value, spelled out; ranges may wrap past the end (``FRI-SUN``)."""
    low, high = _RANGES[index]
    span, slash, step_text = term.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or not 1 <= int(step_text) <= high - low:
            raise CronError(f"'{term}': the step after / in the {_FIELDS[index]} is 1 to "
                            f"{high - low}")
        step = int(step_text)
    if span == "*":
        start, end = low, high
    elif "-" in span:
        first, _, last = span.partition("-")
        start, end = _value(index, first), _value(index, last)
    else:
        start = _value(index, span)
        end = high if slash else start
    if start <= end:
        ordered = list(range(start, end + 1))
    else:                                     # wraps: FRI-SUN is FRI, SAT, SUN
        ordered = list(range(start, high + 1)) + list(range(low, end + 1))
    return ordered[::step]


def _value(index: int, text: str) -> int:
    name = _FIELDS[index]
    low, high = _RANGES[index]
    names = _NAMES.get(index, ())
    if text in names:
        return names.index(text) + 1
    if not text.isdigit():
        known = f" or {names[0]}-{names[-1]}" if names else ""
        raise CronError(f"'{text}' is not a {name} (write {low}-{high}{known})")
    value = int(text)
    if not low <= value <= high:
        extra = " counted from Sunday (1 is SUN, 7 is SAT)" if index == _WEEKDAY else ""
        raise CronError(f"{name} {value} is out of range: {low}-{high}{extra}")
    return value

"""What a stored value may be: JSON, plus datetimes (docs/semantics.md, "Stored values").

On the platform a step's result, ``run()``'s output, params and event payloads are structured
clones, so a ``Date`` (the event's ``timestamp``, or any date a step returns) is stored and comes
back as a ``Date``; the Python SDK turns it into a ``datetime``. dynwf stores JSON, so a datetime
is written as a tagged object, ``{"$datetime": "2026-01-02T03:04:05.678Z"}`` (the text
``JSON.stringify`` gives a ``Date``), and read back as a naive UTC ``datetime`` with millisecond
precision, as a ``Date`` holds it. Surfaces that speak JSON (the CLI, the admin API) show the text.

Tried first: storing the bare ISO text. A step that returned a datetime then returned a datetime
when it ran and a string on every replay, so code took another path after a hibernation. A tag
keeps the type. The key ``$datetime`` alone is reserved: a value that uses it for anything else is
refused when stored, so no stored object is ever read as the wrong thing. Nothing but ``datetime``
itself is accepted (no subclasses, no other objects): the host stores what it can check.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from emulator.errors import NotSerialisableError

DATETIME_TAG = "$datetime"
_TAG_TEXT = '{"' + DATETIME_TAG + '":'


class _Tagger:
    """The ``default`` hook of ``json.dumps``: counts the datetimes it tags, so a reserved key
    used by the value itself can be told apart afterwards (see :func:`check_reserved`)."""

    __slots__ = ("tagged",)

    def __init__(self) -> None:
        self.tagged = 0

    def __call__(self, value: Any) -> Any:
        if type(value) is datetime:
            self.tagged += 1
            return {DATETIME_TAG: datetime_text(value)}
        raise NotSerialisableError(f"values of type {type(value).__name__} cannot be stored")


def datetime_text(value: datetime) -> str:
    """``value`` as a ``Date`` serialises: UTC, milliseconds, ``Z`` (a naive datetime is UTC, as
    ``event["timestamp"]`` is)."""
    try:
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
    except OverflowError:
        raise NotSerialisableError(f"the datetime {value!r} is outside the years 1-9999 in UTC") \
            from None
    value = value.replace(microsecond=value.microsecond // 1000 * 1000)
    return value.isoformat(timespec="milliseconds") + "Z"


def tagger() -> _Tagger:
    return _Tagger()


def check_reserved(text: str, tagger: _Tagger) -> None:
    """Refuse encoded ``text`` when it holds an object keyed ``$datetime`` that is not a tag."""
    if tagger.tagged != text.count(_TAG_TEXT):
        raise NotSerialisableError(f"the key {DATETIME_TAG!r} is reserved for datetimes; "
                                   "rename it")


def _read_tag(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        text = obj.get(DATETIME_TAG)
        if isinstance(text, str) and text.endswith("Z"):
            try:
                return datetime.fromisoformat(text[:-1])
            except ValueError:
                pass   # not one of ours (an isolate may send any JSON): left as it is
    return obj


def _show_tag(obj: dict[str, Any]) -> Any:
    value = _read_tag(obj)
    return obj[DATETIME_TAG] if value is not obj else obj


def decode_json(text: str) -> Any:
    """A stored value as workflow code sees it: datetimes as naive UTC ``datetime``."""
    if _TAG_TEXT not in text:
        return json.loads(text)
    return json.loads(text, object_hook=_read_tag)


def display_json(text: str) -> Any:
    """A stored value ready for JSON output: datetimes as their ISO 8601 text."""
    if _TAG_TEXT not in text:
        return json.loads(text)
    return json.loads(text, object_hook=_show_tag)


__all__ = ["DATETIME_TAG", "check_reserved", "datetime_text", "decode_json", "display_json",
           "tagger"]

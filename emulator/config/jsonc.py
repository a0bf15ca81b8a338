"""JSONC (JSON with comments and trailing commas), as wrangler writes and reads it.

Why a hand scanner: the PyPI ``jsonc-parser`` package rejects trailing commas (wrangler's own
generated ``wrangler.jsonc`` has them), mishandles ``//`` comments in CRLF files and ``\\"``
before a comment marker inside a string, and reports error positions in the comment-stripped
text. Here one pass blanks every comment *in place* (each comment character becomes a space,
each ``\\n`` and ``\\r`` stays) and turns trailing commas into spaces, so the text keeps its length
and its line breaks; the standard library's ``json`` then parses it, and every offset it reports
is an offset in the user's file.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from json.decoder import scanstring
from typing import Any, NamedTuple

from emulator.errors import ConfigError

__all__ = ["JsonPath", "Location", "blank_jsonc", "line_col", "locate_values", "parse_jsonc"]

JsonPath = tuple[str | int, ...]

_BOM = "\ufeff"
_WHITESPACE = " \t\n\r"          # JSON's whitespace; anything else is a token for json to judge
_NEWLINES = "\n\r"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SCALAR = re.compile(r"[^\s,\]}]+")


class Location(NamedTuple):
    """Where a member starts: its key, and its value (both ``(line, column)``, 1-based).

    For array items and the root, which have no key, ``key`` is the value's position.
    """

    key: tuple[int, int]
    value: tuple[int, int]


def parse_jsonc(text: str, *, source: str = "wrangler.jsonc") -> Any:
    """Parse JSONC *text*; errors are ``ConfigError`` located in *source* at the original line/column."""
    text = text.removeprefix(_BOM)
    clean = blank_jsonc(text, source=source)
    if not clean.strip(_WHITESPACE):
        line, column = line_col(text, len(text))
        raise ConfigError("no JSON value: the file is empty or holds only comments",
                          path=source, line=line, column=column)
    try:
        return json.loads(clean)
    except json.JSONDecodeError as exc:
        line, column = line_col(text, exc.pos)
        raise ConfigError(_explain(exc, clean), path=source, line=line, column=column) from None


def blank_jsonc(text: str, *, source: str = "wrangler.jsonc") -> str:
    """Return *text* with comments and trailing commas replaced by spaces.

    The result has the same length and the same line breaks, so offsets into it are offsets into
    *text*. Only commas that follow a value and precede ``}`` or ``]`` are dropped: ``[,]`` and
    ``[1,,]`` stay invalid for ``json`` to report.
    """
    out = list(text)
    end = len(text)
    last = ""               # last significant character seen outside comments ('"' ends a string)
    pending_comma = -1      # a comma that is trailing if the next token closes a container
    i = 0
    while i < end:
        ch = text[i]
        if ch in _WHITESPACE:
            i += 1
            continue
        if ch == "/" and i + 1 < end and text[i + 1] in "/*":
            i = _blank_comment(text, out, i, source)
            continue
        if pending_comma >= 0:
            if ch in "}]":
                out[pending_comma] = " "
            pending_comma = -1
        if ch == ",":
            if last and last not in "[{,:":
                pending_comma = i
        elif ch == '"':
            i = _string_end(text, i)
            last = '"'
            continue
        last = ch
        i += 1
    return "".join(out)


def line_col(text: str, pos: int) -> tuple[int, int]:
    """1-based line and column of offset *pos*; ``\\r\\n``, ``\\n`` and a lone ``\\r`` each end a line."""
    starts = _line_starts(text)
    line = bisect_right(starts, pos)
    return line, pos - starts[line - 1] + 1


def locate_values(text: str) -> dict[JsonPath, Location]:
    """Map each key path of a JSONC document to where its key and value start.

    The document must already parse (call ``parse_jsonc`` first): this walk trusts its syntax.
    Paths are tuples of keys and list indices, ``("workflows", 0, "class_name")``; the root is
    ``()``. With duplicate keys the last one wins, as it does in ``json``.
    """
    text = text.removeprefix(_BOM)
    offsets: dict[JsonPath, tuple[int, int]] = {}
    _walk(blank_jsonc(text), 0, (), None, offsets)
    starts = _line_starts(text)

    def at(pos: int) -> tuple[int, int]:
        line = bisect_right(starts, pos)
        return line, pos - starts[line - 1] + 1

    return {path: Location(at(key), at(value)) for path, (key, value) in offsets.items()}


def _blank_comment(text: str, out: list[str], start: int, source: str) -> int:
    """Blank the comment opening at *start*; return the offset just past it."""
    if text[start + 1] == "/":
        stop = start
        while stop < len(text) and text[stop] not in _NEWLINES:
            stop += 1
    else:
        close = text.find("*/", start + 2)
        if close < 0:
            line, column = line_col(text, start)
            raise ConfigError("unterminated /* comment", path=source, line=line, column=column)
        stop = close + 2
    for j in range(start, stop):
        if text[j] not in _NEWLINES:
            out[j] = " "
    return stop


def _string_end(text: str, start: int) -> int:
    """Offset just past the string opening at *start*.

    A backslash always takes the next character with it, so ``"a\\"//b"`` is one string. A line
    break ends the scan early: JSON strings cannot hold one, ``json`` reports it where it is, and
    the comments on the following lines are still recognised.
    """
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
        elif ch == '"':
            return i + 1
        elif ch in _NEWLINES:
            return i
        else:
            i += 1
    return len(text)


def _explain(exc: json.JSONDecodeError, clean: str) -> str:
    """``json``'s message, reworded where it would puzzle someone editing a config file."""
    found = clean[exc.pos] if exc.pos < len(clean) else ""
    if found == "'":
        return "strings and keys must use double quotes, not single quotes"
    if exc.msg.startswith("Invalid control character") and found in _NEWLINES:
        return "line break inside a string (is a closing quote missing?)"
    if exc.msg == "Extra data":
        return "unexpected text after the end of the top-level value"
    return exc.msg


def _line_starts(text: str) -> list[int]:
    return [0] + [match.end() for match in _LINE_BREAK.finditer(text)]


def _skip_whitespace(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _walk(text: str, pos: int, path: JsonPath, key_at: int | None,
          offsets: dict[JsonPath, tuple[int, int]]) -> int:
    """Record where the value at *pos* (and each value inside it) starts; return its end."""
    pos = _skip_whitespace(text, pos)
    offsets[path] = (pos if key_at is None else key_at, pos)
    opener = text[pos]
    if opener == "{":
        pos = _skip_whitespace(text, pos + 1)
        while text[pos] != "}":
            key, after_key = scanstring(text, pos + 1)
            colon = _skip_whitespace(text, after_key)
            pos = _skip_whitespace(text, _walk(text, colon + 1, (*path, key), pos, offsets))
            if text[pos] == ",":
                pos = _skip_whitespace(text, pos + 1)
        return pos + 1
    if opener == "[":
        pos = _skip_whitespace(text, pos + 1)
        index = 0
        while text[pos] != "]":
            pos = _skip_whitespace(text, _walk(text, pos, (*path, index), None, offsets))
            index += 1
            if text[pos] == ",":
                pos = _skip_whitespace(text, pos + 1)
        return pos + 1
    if opener == '"':
        return scanstring(text, pos + 1)[1]
    match = _SCALAR.match(text, pos)
    assert match is not None, "locate_values() needs a document that parses"
    return match.end()

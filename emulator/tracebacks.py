"""A failure's traceback in the user's own terms: a step attempt's, and ``run()``'s.

The step client catches a body's exception in its own frame, so Python's traceback starts in
dynwf (``StepClient.do``, the mocks, ``asyncio.timeout``) before it reaches the tenant's code, and
may end in the standard library (``json.loads`` raising). Only the user's frames help: each is
kept with its file, line, function and source line; each run of other frames becomes one entry
that says how many were left out and whose they were::

    [{"elided": 2, "of": "dynwf"},
     {"file": "acme/index.py", "line": 12, "function": "charge", "source": "return lookup(k)"},
     {"file": "acme/lib/util.py", "line": 3, "function": "lookup", "source": "return t[k]"}]

Files are named as the tenant knows them: a module served from memory as
``<tenant:LOADER:acme>/lib/util.py`` shows as ``acme/lib/util.py`` (the worker's id the dispatcher
loaded it under, then the path in its code: for a project's ``tenants/acme/lib/util.py``, the path
under ``tenants/``); a file of the project (a workflow the host runs itself) shows relative to the current
folder. The list is bounded (``rules/limits.py``): it travels from an isolate to the host with a
step attempt's error (checked in ``sdk/remote.py``) and with the error ``run()`` raised (an RPC
error answer, checked in ``rpc/peer.py``), both with :func:`traceback_fault`; it is kept with the
attempt (the ``attempts`` table) and with the instance (``instances.error_traceback``).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any

from emulator.rules.limits import (MAX_TRACEBACK_FILE_CHARS, MAX_TRACEBACK_FRAMES,
                                   MAX_TRACEBACK_FUNCTION_CHARS, MAX_TRACEBACK_NUMBER,
                                   MAX_TRACEBACK_SOURCE_CHARS,
                                   cut_text)

#: Folders whose frames are dynwf's own: the package of this module and its siblings.
_DYNWF_ROOT = Path(__file__).resolve().parent.parent
_DYNWF_FOLDERS = tuple(str(_DYNWF_ROOT / name) + os.sep
                       for name in ("emulator", "dynwf_cli", "dynwf_pytest"))
_PYTHON_FOLDERS = tuple(sorted({str(Path(p).resolve()) + os.sep for p in (
    sysconfig.get_paths().get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib"))
    if p}))
_TENANT_PREFIX = "<tenant:"


def _owner(filename: str) -> str | None:
    """None for a user's frame, else whose it is: ``dynwf`` or ``Python``."""
    if filename.startswith(_TENANT_PREFIX):
        return None
    if filename.startswith("<"):   # <frozen importlib._bootstrap>, <string>
        return "Python"
    resolved = str(Path(filename).resolve())
    if resolved.startswith(_DYNWF_FOLDERS):
        return "dynwf"
    if resolved.startswith(_PYTHON_FOLDERS) or resolved.startswith(sys.prefix + os.sep):
        return "Python"
    return None


def shown_file(filename: str) -> str:
    """``<tenant:LOADER:acme>/lib/util.py`` -> ``acme/lib/util.py``; a project file relative to
    the current folder when it is under it."""
    if filename.startswith(_TENANT_PREFIX):
        label, _, path = filename[len(_TENANT_PREFIX):].partition(">")
        # the label is the loader binding's name and the worker's id (``LOADER:acme``): a
        # binding name has no colon, so the id is what follows the first one
        binding, colon, worker = label.partition(":")
        return f"{worker if colon else binding}{path}"
    try:
        return str(Path(filename).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return filename


def user_traceback(exc: BaseException) -> list[dict[str, Any]]:
    """The bounded traceback of ``exc`` in the user's terms (see the module's note); empty when
    it holds no user frame."""
    entries: list[dict[str, Any]] = []
    users = 0
    for frame in traceback.extract_tb(exc.__traceback__):
        owner = _owner(frame.filename)
        if owner is None:
            users += 1
            entries.append({
                "file": cut_text(shown_file(frame.filename), MAX_TRACEBACK_FILE_CHARS),
                "line": frame.lineno or 0,
                "function": cut_text(frame.name, MAX_TRACEBACK_FUNCTION_CHARS),
                "source": cut_text((frame.line or "").strip(), MAX_TRACEBACK_SOURCE_CHARS)})
        else:
            _elide(entries, 1, owner)
    if not users:
        return []
    return _bounded(entries)


def _elide(entries: list[dict[str, Any]], count: int, owner: str) -> None:
    """Add ``count`` frames of ``owner`` left out: one entry per run of frames that are not the
    user's, whoever's they are (``dynwf and Python``), so a gap reads as one line."""
    if entries and "elided" in entries[-1] and entries[-1]["of"] != "the traceback":
        last = entries[-1]
        last["elided"] = min(last["elided"] + count, MAX_TRACEBACK_NUMBER)
        owners = last["of"].split(" and ")
        if owner not in owners:   # within the bounds a traceback is checked against
            last["of"] = cut_text(" and ".join([*owners, owner]), MAX_TRACEBACK_FUNCTION_CHARS)
    else:
        entries.append({"elided": count, "of": owner})


def _bounded(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(entries) > MAX_TRACEBACK_FRAMES:
        # the outermost entry says where the user's code was entered, the innermost where it
        # failed: the middle of a deep recursion goes
        tail = entries[-(MAX_TRACEBACK_FRAMES - 2):]
        dropped = len(entries) - len(tail) - 1
        entries = [entries[0], {"elided": dropped, "of": "the traceback"}, *tail]
    return entries


def joined(outer: list[dict[str, Any]], inner: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One traceback of ``outer`` (the frames of the side that called) then ``inner`` (those
    the other side raised from): a dispatcher's ``fetch`` then the tenant's it called."""
    entries: list[dict[str, Any]] = []
    for entry in (*outer, *inner):
        if "elided" in entry and entry["of"] != "the traceback":
            for owner in entry["of"].split(" and "):
                _elide(entries, 0, owner)
            _elide(entries, entry["elided"], entries[-1]["of"].split(" and ")[0])
        else:
            entries.append(dict(entry))
    return _bounded(entries)


def traceback_heading(frames: list[dict[str, Any]]) -> str:
    """The line over the frames an instance's error was raised from: loading the tenant's
    modules (the first user frame is a module's top level) or ``run()``."""
    first = next((entry for entry in frames if "file" in entry), None)
    if first is not None and first["function"] == "<module>":
        return "loading the code raised it (most recent call last):"
    return "run() raised it (most recent call last):"


def format_traceback(entries: list[dict[str, Any]], indent: str = "  ") -> list[str]:
    """The lines a person reads, innermost call last, as Python prints them::

        acme/lib/util.py:3 in lookup
            return t[k]
        ... 2 frames of dynwf
    """
    lines = []
    for entry in entries:
        if "elided" in entry:
            count = entry["elided"]
            what = "entries" if entry["of"] == "the traceback" else "frames"
            lines.append(f"{indent}... {count} {what[:-1] if count == 1 else what} "
                         f"of {entry['of']}")
            continue
        lines.append(f"{indent}{entry['file']}:{entry['line']} in {entry['function']}")
        if entry["source"]:
            lines.append(f"{indent}    {entry['source']}")
    return lines


_FRAME_FIELDS = {"file": (str, MAX_TRACEBACK_FILE_CHARS), "line": (int, None),
                 "function": (str, MAX_TRACEBACK_FUNCTION_CHARS),
                 "source": (str, MAX_TRACEBACK_SOURCE_CHARS)}
_ELIDED_FIELDS = {"elided": (int, None), "of": (str, MAX_TRACEBACK_FUNCTION_CHARS)}
_LOWEST = {"line": 0, "elided": 1}     # Python reports line 0 for a frame it cannot place


def traceback_fault(frames: Any) -> tuple[str, str] | None:
    """None for a traceback as :func:`user_traceback` makes it; else ``("shape", why)`` for a
    value of another shape (fields or types), ``("size", why)`` for one past the bounds (the
    maker cuts to them, so only a sender that is not dynwf's goes past)."""
    if type(frames) is not list:
        return "shape", f"a traceback is a {type(frames).__name__}, not a list"
    if len(frames) > MAX_TRACEBACK_FRAMES:
        return "size", f"a traceback of {len(frames):,} entries is over the limit of " \
                       f"{MAX_TRACEBACK_FRAMES}"
    for entry in frames:
        if type(entry) is not dict:
            return "shape", f"a traceback entry is a {type(entry).__name__}, not an object"
        fields = _ELIDED_FIELDS if "elided" in entry else _FRAME_FIELDS
        if entry.keys() != fields.keys():
            return "shape", f"a traceback entry has the fields {sorted(map(str, entry))[:8]}, " \
                            f"not {sorted(fields)}"
        for name, (kind, limit) in fields.items():
            if type(entry[name]) is not kind:
                return "shape", f"a traceback entry's {name} is a {type(entry[name]).__name__}, " \
                                f"not {kind.__name__}"
            if kind is str and len(entry[name]) > limit:
                return "size", f"a traceback entry's {name} is over {limit} characters"
            if kind is int and not _LOWEST[name] <= entry[name] <= MAX_TRACEBACK_NUMBER:
                return "size", f"a traceback entry's {name} {entry[name]} is outside " \
                               f"{_LOWEST[name]} to {MAX_TRACEBACK_NUMBER:,}"
    return None


#: The attribute an exception rebuilt from the wire keeps its sender's traceback in.
_CARRIED = "__dynwf_traceback__"


def carry(exc: BaseException, frames: list[dict[str, Any]]) -> BaseException:
    """``exc`` (rebuilt from an RPC answer) remembers the traceback its sender captured."""
    try:
        setattr(exc, _CARRIED, frames)
    except AttributeError:  # an exception class with __slots__
        pass
    return exc


def traceback_of(exc: BaseException) -> list[dict[str, Any]]:
    """The user's traceback of ``exc``: its own user frames (a dispatcher's), then those it
    carries from the process that raised it (a tenant's isolate)."""
    carried = getattr(exc, _CARRIED, None)
    own = user_traceback(exc)
    if not isinstance(carried, list):
        return own
    return joined(own, carried) if own else carried


def with_traceback(error: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """``error`` (a step error's ``{"name", "message"}``) with ``exc``'s user traceback, if any."""
    frames = user_traceback(exc)
    return {**error, "traceback": frames} if frames else error


__all__ = ["carry", "format_traceback", "joined", "shown_file", "traceback_fault",
           "traceback_heading", "traceback_of", "user_traceback", "with_traceback"]

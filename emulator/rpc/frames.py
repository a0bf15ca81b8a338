"""What a frame may hold, checked before and while it is decoded.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON (``transport.py``). The
two directions are not alike. The host trusts nothing an isolate sends: tenant code may have
switched off every check inside its isolate and write any bytes to its socket. An isolate trusts
the host, which sends it large frames on purpose (the step cache goes with every run).

The problem, measured (Python 3.11 on one core of the shared 2-core machine these figures come
from): a frame costs the host's event loop what ``json.loads`` spends building its values, and
that depends on its shape far more than its size. One MiB of text in one string parses in
1.2 ms; of ``0,`` in 18 ms; of ``{},`` in 17 ms, plus 5 ms to free; of floats like ``1e-300,``
in 39 ms (~260 ns each); of ten-deep ``[[[...]]]`` in ~100 ms; a 4,300-digit integer alone takes
75 us. A 4 MiB frame of ``{},`` took 67-80 ms and 123 MB of peak memory; the reported 63 MiB one
took the host from ~50 MB to ~1.9 GB. No bound on size alone keeps the loop free.

Chosen, for frames from an isolate (:data:`FROM_ISOLATE`); breaking any rule is a
:class:`~emulator.rpc.errors.ProtocolViolation` and the host kills the isolate:

- at most :data:`ISOLATE_FRAME_BYTES` (4 MiB), checked on the length prefix before the frame is
  buffered (``transport.py``). The largest legitimate frame is a step's 1 MiB result sent as a
  JSON string: escaping ``"`` and ``\\`` at most doubles it, to 2 MiB; a 1 MiB payload sent as
  a value takes 1 MiB. The other direction keeps 64 MiB;
- from :data:`SCAN_FROM_BYTES` up, a pre-scan that counts characters in C (``bytes.count``, 2.6 ms
  for 4 MiB): at most :data:`MAX_FRAME_CONTAINERS` lists and objects and
  :data:`MAX_FRAME_SEPARATORS` separators, counted anywhere in the frame, strings included (a
  step result is JSON in a string, which the host parses again to check it). Together with the
  integer bound these cap the costliest frame the host accepts at ~110 ms here (64 Ki lists
  nested 100 deep and 254 Ki ``1e-300``), and the memory its values take at a few tens of MB;
- in the same frames, integers of at most :data:`MAX_INT_DIGITS` digits (parsing one is
  quadratic), checked one by one only when the text holds such a run of digits (a translation
  and a search in C); a smaller frame holds too few to matter, up to Python's own 4,300;
- nesting of at most :data:`MAX_DEPTH` levels (the admin API allows bodies 100 deep; the message
  envelope adds a few): first from the brackets, by removing innermost pairs in C; the decoded
  value is walked (breadth first, no recursion) only when the brackets say deeper. A
  ``RecursionError`` from ``json.loads`` on a deeper frame is refused too, so none reaches the loop
  or the code that walks values later;
- no ``NaN``/``Infinity`` (our encoder never writes them), valid UTF-8, and no lone surrogate
  (``"\\ud800"`` decodes to a ``str`` no UTF-8 store can hold: it would fail a group commit).

Tried first: one bound of 1.1 Mi on separators and brackets together, which every payload the
platform accepts passes whatever its shape, and a walk of the decoded value for depth. It let
through a 2 MiB frame of nested lists that cost the host 657 ms (the walk as much as the parse).
The bounds now refuse payloads denser than ~4 bytes a value or 64 Ki lists and objects, which
the platform would take: an isolate checks what it sends by the same rules
(:func:`check_outgoing`), so an honest tenant gets ``payload.too_large`` or
``payload.too_deep`` on its own side, never a dead isolate. What an accepted frame still costs is
bounded in rate by the loop budget of the isolate's connection (``budget.py``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import compress
from typing import Any

from emulator.errors import PayloadTooDeepError, PayloadTooLargeError
from emulator.rpc import codec
from emulator.rpc.errors import ProtocolViolation

KiB = 1024
MiB = 1024 * KiB
#: The largest frame an isolate may send the host.
ISOLATE_FRAME_BYTES = 4 * MiB
#: The largest frame the host may send an isolate (a run's step cache can be large).
HOST_FRAME_BYTES = 64 * MiB
#: Frames from this size up are pre-scanned; below it a frame's parse costs at most a few ms.
SCAN_FROM_BYTES = 64 * KiB
#: Separators (``,`` ``:``) a frame from an isolate may hold: about its count of values.
MAX_FRAME_SEPARATORS = 256 * KiB
#: Lists and objects (``[`` ``{``) a frame from an isolate may hold.
MAX_FRAME_CONTAINERS = 64 * KiB
#: Nesting levels a frame from an isolate may hold, the message envelope included.
MAX_DEPTH = 128
#: Digits an integer in a large frame from an isolate may have (parsing one is quadratic).
MAX_INT_DIGITS = 1000


@dataclass(frozen=True, slots=True)
class FrameRules:
    """What the frames of one direction may be."""

    max_bytes: int
    #: apply the structure rules (counts, depth, constants, integers, surrogates) on receipt
    strict: bool
    #: who sends these frames, as messages name it
    sender: str


FROM_ISOLATE = FrameRules(ISOLATE_FRAME_BYTES, True, "an isolate")
FROM_HOST = FrameRules(HOST_FRAME_BYTES, False, "the host")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _short_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(digits.lstrip('-')):,} digits is over the limit of "
                         f"{MAX_INT_DIGITS:,}")
    return int(digits)


_STRICT = json.JSONDecoder(parse_constant=_refuse_constant)
_STRICT_SHORT_INTS = json.JSONDecoder(parse_constant=_refuse_constant, parse_int=_short_int)
_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_IS_CONTAINER = frozenset({list, dict}).__contains__
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN = b"0" * (MAX_INT_DIGITS + 1)
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def decode(frame: bytes | bytearray, rules: FrameRules) -> tuple[Any, bool]:
    """The message in ``frame`` (its length already checked), and whether it is *plain* (holds
    no tagged value: its values are the values sent, with no decoding walk)."""
    try:
        text = frame.decode()
    except UnicodeDecodeError as exc:
        raise ProtocolViolation(f"a frame is not UTF-8 (byte {exc.start}: {exc.reason})") from None
    if not rules.strict:
        try:
            return json.loads(text), codec.is_plain_text(text)
        except (ValueError, RecursionError) as exc:
            raise ProtocolViolation(f"a frame is not JSON: {exc}") from None
    containers = frame.count(b"[") + frame.count(b"{")
    decoder = _STRICT
    if len(frame) > SCAN_FROM_BYTES:
        problem = _count_problem(frame, containers)
        if problem:
            raise ProtocolViolation(f"a frame of {len(frame):,} bytes {problem}")
        # a long run of digits somewhere (in a string, most likely): parse integers one by one
        if _LONG_DIGIT_RUN in frame.translate(_DIGITS):
            decoder = _STRICT_SHORT_INTS
    try:
        message = decoder.decode(text)
    except RecursionError:
        raise ProtocolViolation(f"a frame nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:       # not JSON, NaN or Infinity, an integer too long
        raise ProtocolViolation(f"a frame is not JSON: {exc}") from None
    if containers > MAX_DEPTH and _nests_deeper(frame, message):
        raise ProtocolViolation(f"a frame nests deeper than {MAX_DEPTH} levels")
    escapes = "\\u" in text
    if escapes and _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(message):
        raise ProtocolViolation("a frame holds a lone surrogate escape (\\ud800-\\udfff), which "
                                "is not Unicode text")
    return message, not escapes and codec.MARK not in text


def check_outgoing(data: bytes, message: Any, rules: FrameRules, what: str) -> None:
    """Refuse, on the sending side, a message the other side's ``rules`` would take for a
    protocol violation (the same checks on the same bytes): the sender's caller gets a coded
    payload error instead."""
    size = len(data)
    if size > rules.max_bytes:
        raise PayloadTooLargeError(
            f"{what}: {size:,} bytes as a message to the host, over the limit of "
            f"{rules.max_bytes:,} bytes ({rules.max_bytes // MiB} MiB)",
            hint="store large data elsewhere and pass a reference")
    if not rules.strict:
        return
    containers = data.count(b"[") + data.count(b"{")
    if size > SCAN_FROM_BYTES:
        problem = _count_problem(data, containers)
        if problem:
            raise PayloadTooLargeError(f"{what} take {size:,} bytes and {problem} for one message "
                                       "to the host", hint="send fewer values, or store them elsewhere")
        if _LONG_DIGIT_RUN in data.translate(_DIGITS):
            try:
                _STRICT_SHORT_INTS.decode(data.decode())
            except ValueError as exc:
                raise PayloadTooLargeError(f"{what} cannot be sent to the host: {exc}") from None
    if containers > MAX_DEPTH and _nests_deeper(data, message):
        raise PayloadTooDeepError(f"{what} nest deeper than the {MAX_DEPTH} levels a message to "
                                  "the host may hold")


def _count_problem(frame: bytes | bytearray, containers: int) -> str | None:
    """What is wrong with the counts of a large frame's structural characters, if anything.
    They bound what parsing it can cost and the memory its values take."""
    if containers > MAX_FRAME_CONTAINERS:
        return (f"holds {containers:,} lists and objects ('[' and '{{'), over the limit of "
                f"{MAX_FRAME_CONTAINERS:,}")
    separators = frame.count(b",") + frame.count(b":")
    if separators > MAX_FRAME_SEPARATORS:
        return (f"holds {separators:,} separators (',' and ':'), over the limit of "
                f"{MAX_FRAME_SEPARATORS:,}")
    return None


def _nests_deeper(frame: bytes | bytearray, message: Any) -> bool:
    """Whether ``message`` (decoded from ``frame``) nests deeper than :data:`MAX_DEPTH`. First
    from the brackets of the text, in C: each ``replace`` pass removes the innermost pairs, so
    pairs left after ``MAX_DEPTH`` passes mean that deep or deeper (brackets inside strings
    count too, so only then is the decoded value walked to be sure)."""
    brackets = frame.translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH):
        fewer = brackets.replace(b"()", b"")
        if len(fewer) == len(brackets):
            return False
        brackets = fewer
    return b"()" in brackets and is_deeper_than(message, MAX_DEPTH)


def is_deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and dicts in ``value`` nest more than ``limit`` levels, found breadth first
    (no recursion); the items of each container are sorted by type in C, not one by one."""
    level = [value] if _IS_CONTAINER(type(value)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for container in level:
            items = container.values() if type(container) is dict else container
            below.extend(compress(items, map(_IS_CONTAINER, map(type, items))))
        level = below
    return False


def _has_lone_surrogate(message: Any) -> bool:
    try:
        _ENCODER.encode(message).encode()
    except UnicodeEncodeError:
        return True
    return False

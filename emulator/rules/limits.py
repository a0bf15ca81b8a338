"""The platform's limits on names and sizes (docs/semantics.md §5), checked before anything is written."""

from __future__ import annotations

import json
import re
from typing import Any

from emulator.errors import (InvalidEventTypeError, InvalidIdError, InvalidStepNameError,
                             NotSerialisableError, PayloadTooLargeError)
from emulator.rules.values import check_reserved, tagger

ID_PATTERN = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9\-_]*")  # always used with fullmatch
MAX_ID_LENGTH = 100
MAX_WORKFLOW_NAME_LENGTH = 64
MAX_EVENT_TYPE_LENGTH = 100
MAX_STEP_NAME_LENGTH = 256
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_BATCH = 100
DEFAULT_STEP_LIMIT = 10_000
#: The longest wait the platform permits: a sleep, an event wait, a retry's back-off, and so the
#: furthest the virtual clock may jump at once.
MAX_SLEEP_MS = 365 * 86_400_000
MIN_EVENT_TIMEOUT_MS = 1_000
#: How long ``wait_for_event`` waits when no timeout is given (the SDK's default).
DEFAULT_EVENT_TIMEOUT = "24 hours"
#: Occurrences of one sleep or event-wait name in an instance (``do`` steps have the step limit).
MAX_WAIT_OCCURRENCES = 1_000_000
#: A step config as an isolate sends it (the canonical JSON of ``StepConfig``: ~120 bytes).
MAX_CONFIG_JSON_BYTES = 4096
MAX_CODE_VERSION_CHARS = 64
#: A step error's name and message, cut with a mark where they are made.
MAX_ERROR_NAME_CHARS = 256
MAX_ERROR_MESSAGE_CHARS = 16_384
#: A failed attempt's traceback (``tracebacks.py``): the frames kept (the innermost, with the
#: outermost user frame), and each field of a frame, cut with a mark. 40 frames of ~600 characters
#: is ~24 KiB per attempt at most; a recursion error's thousand frames would be ~600 KiB.
MAX_TRACEBACK_FRAMES = 40
MAX_TRACEBACK_FILE_CHARS = 256
MAX_TRACEBACK_FUNCTION_CHARS = 128
MAX_TRACEBACK_SOURCE_CHARS = 240
#: a frame's line number, and a count of frames left out, are at most this (no file is longer,
#: no stack deeper)
MAX_TRACEBACK_NUMBER = 10_000_000

# Log lines, and how much of them each tenant may write (``engine/logs.py``). A line past its
# length is cut; lines past a quota are dropped and one line says so.
MAX_LOG_LINE_CHARS = 16_384
LOG_BYTES_PER_STEP = 64 * 1024
LOG_BYTES_PER_INSTANCE = 1024 * 1024
#: Lines an isolate prints outside any step (in ``fetch``, at import), per isolate and minute.
LOG_BYTES_OUTSIDE_STEPS_PER_MINUTE = 1024 * 1024
_CONTROL_CHARS = re.compile(r"[\x00-\x1f]")


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and bool(ID_PATTERN.fullmatch(value))


def is_valid_workflow_name(value: object) -> bool:
    """A workflow's ``name`` in the wrangler file: 1-64 characters of the id alphabet."""
    return isinstance(value, str) and 0 < len(value) <= MAX_WORKFLOW_NAME_LENGTH \
        and bool(ID_PATTERN.fullmatch(value))


def check_instance_id(value: object) -> str:
    if not is_valid_id(value):
        raise InvalidIdError(
            f"Workflow instance has invalid id {value!r}: ids are 1-{MAX_ID_LENGTH} characters "
            "matching ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$")
    return value  # type: ignore[return-value]


def check_event_type(value: object) -> str:
    if not (isinstance(value, str) and 0 < len(value) <= MAX_EVENT_TYPE_LENGTH
            and ID_PATTERN.fullmatch(value)):
        raise InvalidEventTypeError(
            f"Event type {value!r} is invalid: event types are 1-{MAX_EVENT_TYPE_LENGTH} characters "
            "matching ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$ (no dots)")
    return value


def check_step_name(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_STEP_NAME_LENGTH \
            or _CONTROL_CHARS.search(value):
        shown = value if not isinstance(value, str) or len(value) <= 60 else value[:57] + "..."
        raise InvalidStepNameError(
            f"Step name {shown!r} is invalid: step names are 1-{MAX_STEP_NAME_LENGTH} characters "
            "without control characters")
    return value


def encode_json(value: Any, *, what: str, limit: int = MAX_PAYLOAD_BYTES) -> str:
    """``value`` as compact JSON (datetimes tagged, ``rules/values.py``), refusing what cannot be
    stored durably or exceeds ``limit`` bytes."""
    tags = tagger()   # datetimes are stored tagged (rules/values.py)
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=tags)
        check_reserved(text, tags)
    except NotSerialisableError as exc:
        raise NotSerialisableError(f"{what} is not JSON-serialisable: {exc.message}") from None
    except (TypeError, ValueError) as exc:
        raise NotSerialisableError(f"{what} is not JSON-serialisable: {exc}") from None
    size = len(text.encode())
    if size > limit:
        raise payload_too_large(what, size, limit)
    return text


def payload_too_large(what: str, size: int, limit: int = MAX_PAYLOAD_BYTES) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"{what} is {size:,} bytes, over the limit of {limit:,} bytes (1 MiB)",
                                hint="store large data elsewhere and pass a reference")


def step_output_too_large(name: str, count: int, size: int) -> PayloadTooLargeError:
    """The platform's error for a step whose output is over the payload limit."""
    inner = payload_too_large(f'The output of step "{name}"', size)
    return PayloadTooLargeError(f"Step {name}-{count} output is too large: {inner.message}",
                                hint=inner.hint)


def cut_text(text: str, limit: int) -> str:
    """``text``, or its start and a mark saying how much was cut, in at most ``limit`` chars."""
    if len(text) <= limit:
        return text
    mark = f"... [{len(text) - limit + 40:,} characters cut]"
    return text[:max(0, limit - len(mark))] + mark


def utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (``isascii`` reads a flag: no copy for ASCII text)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))

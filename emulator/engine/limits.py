"""The platform's limits on names and sizes (spec §5), checked before anything is written."""

from __future__ import annotations

import json
import re
from typing import Any

from emulator.errors import (InvalidEventTypeError, InvalidIdError, InvalidStepNameError,
                             NotSerialisableError, PayloadTooLargeError)

ID_PATTERN = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9\-_]*")  # always used with fullmatch
MAX_ID_LENGTH = 100
MAX_EVENT_TYPE_LENGTH = 100
MAX_STEP_NAME_LENGTH = 256
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_BATCH = 100
DEFAULT_STEP_LIMIT = 10_000
MAX_SLEEP_MS = 365 * 86_400_000
MIN_EVENT_TIMEOUT_MS = 1_000
_CONTROL_CHARS = re.compile(r"[\x00-\x1f]")


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and bool(ID_PATTERN.fullmatch(value))


def check_instance_id(value: object) -> str:
    if not is_valid_id(value):
        raise InvalidIdError(
            f"Workflow instance has invalid id {value!r}: ids are 1-{MAX_ID_LENGTH} characters "
            "matching ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$")
    return value  # type: ignore[return-value]


def check_event_type(value: object) -> str:
    if not (isinstance(value, str) and 0 < len(value) <= MAX_EVENT_TYPE_LENGTH and ID_PATTERN.fullmatch(value)):
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
    """``value`` as compact JSON, refusing what cannot be stored durably or exceeds ``limit`` bytes."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=_refuse)
    except NotSerialisableError as exc:
        raise NotSerialisableError(f"{what} is not JSON-serialisable: {exc.message}") from None
    except (TypeError, ValueError) as exc:
        raise NotSerialisableError(f"{what} is not JSON-serialisable: {exc}") from None
    size = len(text.encode())
    if size > limit:
        raise PayloadTooLargeError(
            f"{what} is {size:,} bytes, over the limit of {limit:,} bytes (1 MiB)",
            hint="store large data elsewhere and pass a reference")
    return text


def _refuse(value: Any) -> Any:
    raise NotSerialisableError(f"values of type {type(value).__name__} cannot be stored")

"""The one error family of dynwf.

Every failure a user can meet carries a stable dotted ``code`` (``instance.not_found``), a
message, and optionally a ``hint`` saying what to do next. The command line prints the three
on one line; the HTTP API returns them as JSON. Codes are part of the public surface: tests
and users match on them, so they never change meaning.
"""

from __future__ import annotations


class DynwfError(Exception):
    """Root of every error dynwf raises on purpose."""

    code: str = "dynwf.error"
    #: Whether a step that fails with this error may be retried by the step's retry policy.
    retryable: bool = True

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.hint = hint

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class UsageError(DynwfError):
    code = "usage.invalid"


class ConfigError(DynwfError):
    """The project's wrangler file is missing, unreadable or wrong."""

    code = "config.invalid"

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None,
                 path: str | None = None, line: int | None = None, column: int | None = None) -> None:
        self.path, self.line, self.column = path, line, column
        if path is not None:
            where = path if line is None else f"{path}:{line}:{column or 1}"
            message = f"{where}: {message}"
        super().__init__(message, code=code, hint=hint)


class ValidationError(DynwfError):
    """User input to a workflow API (ids, durations, step configs, payloads) is invalid."""

    code = "input.invalid"
    retryable = False


class DurationError(ValidationError):
    code = "duration.invalid"


class StepConfigError(ValidationError):
    code = "step.invalid_config"


class InvalidIdError(ValidationError):
    code = "instance.invalid_id"


class InvalidEventTypeError(ValidationError):
    code = "event.invalid_type"


class InvalidStepNameError(ValidationError):
    code = "step.invalid_name"


class PayloadError(ValidationError):
    """A value that must cross a durable boundary is too large or not JSON-serialisable."""

    code = "payload.invalid"


class PayloadTooLargeError(PayloadError):
    code = "payload.too_large"


class NotSerialisableError(PayloadError):
    code = "payload.not_serialisable"


class PayloadTooDeepError(PayloadError):
    """A value nests deeper than a message between an isolate and the host may."""

    code = "payload.too_deep"


class StepCallError(ValidationError):
    """A call on a step handle whose values the platform refuses (and a step client never
    sends): an attempt number out of range, a step key of the wrong kind, an error too long."""

    code = "step.invalid_call"


class InstanceError(DynwfError):
    code = "instance.error"

    def __init__(self, message: str, *, instance_id: str | None = None, code: str | None = None,
                 hint: str | None = None) -> None:
        self.instance_id = instance_id
        super().__init__(message, code=code, hint=hint)


class InstanceNotFoundError(InstanceError):
    code = "instance.not_found"


class InstanceAlreadyExistsError(InstanceError):
    code = "instance.already_exists"


class InvalidTransitionError(InstanceError):
    """A status change the transition table does not allow (or another writer got there first)."""

    code = "instance.invalid_transition"


class InstanceFinishedError(InstanceError):
    """The operation needs a live instance but this one is complete, errored or terminated."""

    code = "instance.finished"


class StepLimitError(DynwfError):
    code = "step.limit_exceeded"
    retryable = False


__all__ = [
    "ConfigError", "DurationError", "DynwfError", "InstanceAlreadyExistsError", "InstanceError",
    "InstanceFinishedError", "InstanceNotFoundError", "InvalidEventTypeError", "InvalidIdError",
    "InvalidStepNameError", "InvalidTransitionError", "NotSerialisableError", "PayloadError",
    "PayloadTooDeepError", "PayloadTooLargeError", "StepCallError", "StepConfigError",
    "StepLimitError", "UsageError", "ValidationError",
]

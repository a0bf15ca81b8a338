"""The one error family of dynwf.

Every failure a user can meet carries a stable dotted ``code`` (``instance.not_found``), a
message, and optionally a ``hint`` saying what to do next. The command line prints the three
on one line; the HTTP API returns them as JSON. Codes are part of the public surface: tests
and users match on them, so they never change meaning.

A class names its code (one of :class:`~emulator.error_codes.Code`, where each code's meaning,
HTTP status, exit status and retryability are declared); a raise site names the class, never a
code. A code needed by one kind of failure only gets a subclass of its own.
"""

from __future__ import annotations

from emulator.error_codes import Code


class DynwfError(Exception):
    """Root of every error dynwf raises on purpose."""

    code: Code = Code.DYNWF_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    @property
    def retryable(self) -> bool:
        """Whether the same call, repeated unchanged, may succeed (from the code's entry)."""
        return self.code.retryable

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def to_dict(self) -> dict[str, str | None]:
        return {"code": str(self.code), "message": self.message, "hint": self.hint}


class UsageError(DynwfError):
    code = Code.USAGE_INVALID


class DatabaseUrlError(UsageError):
    """``--database`` / ``DYNWF_DATABASE_URL`` names a database dynwf cannot open."""

    code = Code.DATABASE_URL_INVALID


class DatabaseUnavailableError(DynwfError):
    """The database server cannot be reached or dropped the connection; the URL is named
    without its password."""

    code = Code.DATABASE_UNAVAILABLE


class ConfigError(DynwfError):
    """The project's wrangler file is missing, unreadable or wrong."""

    code = Code.CONFIG_INVALID

    def __init__(self, message: str, *, hint: str | None = None, path: str | None = None,
                 line: int | None = None, column: int | None = None) -> None:
        self.path, self.line, self.column = path, line, column
        if path is not None:
            where = path if line is None else f"{path}:{line}:{column or 1}"
            message = f"{where}: {message}"
        super().__init__(message, hint=hint)


class InvalidScheduleError(ConfigError):
    """A workflow's ``schedules`` holds an expression the platform (or dynwf) cannot run, or more
    of them than the platform allows."""

    code = Code.CONFIG_INVALID_SCHEDULE


class ConfigNotFoundError(ConfigError):
    """There is no wrangler file where one was looked for."""

    code = Code.CONFIG_NOT_FOUND


class ValidationError(DynwfError):
    """User input to a workflow API (ids, durations, step configs, payloads) is invalid."""

    code = Code.INPUT_INVALID


class DurationError(ValidationError):
    code = Code.DURATION_INVALID


class StepConfigError(ValidationError):
    code = Code.STEP_INVALID_CONFIG


class InvalidIdError(ValidationError):
    code = Code.INSTANCE_INVALID_ID


class InvalidEventTypeError(ValidationError):
    code = Code.EVENT_INVALID_TYPE


class InvalidStepNameError(ValidationError):
    code = Code.STEP_INVALID_NAME


class UnknownStatusError(ValidationError):
    """A status filter that names no instance status."""

    code = Code.STATUS_INVALID

    def __init__(self, *, status: str, known: tuple[str, ...]) -> None:
        self.status = status
        super().__init__(f"unknown status '{status}'", hint="one of: " + ", ".join(known))


class PayloadError(ValidationError):
    """A value that must cross a durable boundary is too large or not JSON-serialisable."""

    code = Code.PAYLOAD_INVALID


class PayloadTooLargeError(PayloadError):
    code = Code.PAYLOAD_TOO_LARGE


class NotSerialisableError(PayloadError):
    code = Code.PAYLOAD_NOT_SERIALISABLE


class PayloadTooDeepError(PayloadError):
    """A value nests deeper than a message between an isolate and the host may."""

    code = Code.PAYLOAD_TOO_DEEP


class StepCallError(ValidationError):
    """A call on a step handle whose values the platform refuses (and a step client never
    sends): an attempt number out of range, a step key of the wrong kind, an error too long."""

    code = Code.STEP_INVALID_CALL


class InstanceError(DynwfError):
    code = Code.INSTANCE_ERROR

    def __init__(self, message: str, *, instance_id: str | None = None,
                 hint: str | None = None) -> None:
        self.instance_id = instance_id
        super().__init__(message, hint=hint)


class InstanceNotFoundError(InstanceError):
    code = Code.INSTANCE_NOT_FOUND


class InstanceAlreadyExistsError(InstanceError):
    code = Code.INSTANCE_ALREADY_EXISTS


class AmbiguousInstanceError(InstanceError):
    """A short id that several instances answer to (of different tenants)."""

    code = Code.INSTANCE_AMBIGUOUS


class InvalidTransitionError(InstanceError):
    """A status change the transition table does not allow (or another writer got there first)."""

    code = Code.INSTANCE_INVALID_TRANSITION


class InstanceFinishedError(InstanceError):
    """The operation needs a live instance but this one is complete, errored or terminated."""

    code = Code.INSTANCE_FINISHED


class InstanceNotRunningError(InstanceFinishedError):
    """An event or a wake for an instance that has finished."""

    code = Code.INSTANCE_NOT_RUNNING


class CannotTerminateError(InstanceFinishedError):
    """Terminate of an instance that has finished (``status``)."""

    code = Code.INSTANCE_CANNOT_TERMINATE

    def __init__(self, *, instance_id: str, status: str) -> None:
        self.status = status
        super().__init__(f"Cannot terminate instance '{instance_id}' since it is {status}",
                         instance_id=instance_id)


class CannotRestartError(InstanceError):
    """``restart({"from": ...})`` names a step the instance never reached: nothing was changed."""

    code = Code.INSTANCE_CANNOT_RESTART

    def __init__(self, *, instance_id: str, name: str, count: int, type: str) -> None:
        self.step_name, self.count, self.type = name, count, type
        super().__init__(
            f'Step "{name}" not found in execution history of instance \'{instance_id}\' '
            f"(type {type}, occurrence {count})", instance_id=instance_id,
            hint="name a step the instance has reached, as dynwf instances describe lists them")


class StepLimitError(DynwfError):
    """The instance reached its limit of ``limit`` steps."""

    code = Code.STEP_LIMIT_EXCEEDED

    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        super().__init__(f"The limit of {limit} steps has been reached. This limit can be "
                         "changed in your worker configuration.")



class HistoryError(ValidationError):
    """A history file (``dynwf instances import``, ``dynwf replay --history``) that is not the
    documented format: nothing was written."""

    code = Code.HISTORY_INVALID


class ReplayDivergedError(DynwfError):
    """A recorded history, replayed against the current code, left the path it recorded."""

    code = Code.REPLAY_DIVERGED


#: This module's class for each code (the first, where a subclass keeps its parent's): an error
#: sent over RPC with one of these codes is rebuilt as its class. These are the errors of the APIs
#: tenant code calls; any other comes back as the RPC's ``RemoteError``, carrying its code.
_CLASS_OF: dict[str, type[DynwfError]] = {}
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, DynwfError):
        _CLASS_OF.setdefault(_cls.code, _cls)
del _cls


def class_of(code: str) -> type[DynwfError] | None:
    """The class of this module that declares ``code``, or None."""
    return _CLASS_OF.get(code)


__all__ = [
    "AmbiguousInstanceError", "CannotRestartError", "CannotTerminateError", "ConfigError",
    "ConfigNotFoundError", "DurationError", "DynwfError", "InstanceAlreadyExistsError", "InstanceError",
    "InstanceFinishedError", "InstanceNotFoundError", "InstanceNotRunningError",
    "InvalidEventTypeError", "InvalidIdError", "InvalidStepNameError", "InvalidTransitionError",
    "NotSerialisableError", "PayloadError", "PayloadTooDeepError", "PayloadTooLargeError",
    "HistoryError", "ReplayDivergedError", "StepCallError", "StepConfigError", "StepLimitError",
    "UnknownStatusError", "UsageError", "ValidationError", "class_of",
]


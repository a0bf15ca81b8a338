"""How errors cross a durable step boundary, and the engine's own control-flow signals.

A step's failure is persisted as ``{"name", "message"}`` (the platform's error shape) and raised
into ``run()`` as a rebuilt exception, the same on the first run and on every replay, so a
``try``/``except`` around a step takes the same path each time. Built-in exception names
(``ValueError``, ``KeyError``...) and ``NonRetryableError`` come back as their own class; any other
name comes back as :class:`StepError` carrying ``name``. On the first run the original exception is
attached as ``__cause__`` so its traceback is not lost. The conversion both ways is
:mod:`emulator.error_wire`'s, shared with the RPC.

``WorkflowFatalError`` derives from ``BaseException``: it ends the instance ``errored`` and user
code cannot swallow it with ``except Exception`` (the platform's fatal errors cannot be caught
either).
"""

from __future__ import annotations

from typing import Any, cast

from emulator.error_codes import Code, lookup
from emulator.error_wire import from_wire, is_non_retryable, register, to_wire


INTERNAL_ATTEMPT_ERROR = {"name": "WorkflowInternalError",
                          "message": "Attempt failed due to internal workflows error"}


class WorkflowFatalError(BaseException):
    """An error that ends the instance at once: invalid step name/config, step limit, a value
    that cannot be stored, a duration that does not parse. Every kind is recorded (and crosses
    an RPC) under this one name, with its own code."""

    code: Code = Code.WORKFLOW_FATAL
    name = "WorkflowFatalError"
    carries_name = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @classmethod
    def carrying(cls, message: str, code: str | None) -> "WorkflowFatalError":
        """A fatal error with the code of the error that made it fatal (a step name the platform
        refuses: ``step.invalid_name``), or of one rebuilt from the wire. A code that is not
        dynwf's leaves the class's own."""
        fatal = cls(message)
        known = lookup(code)
        if known is not None:
            fatal.code = known
        return fatal


class ReplayMismatchError(WorkflowFatalError):
    """A replay reached a step other than the one the instance recorded next."""

    code = Code.REPLAY_MISMATCH

    def __init__(self, *, expected: str, reached: str, why: str) -> None:
        super().__init__(f"replay does not match the steps this instance recorded: expected "
                         f"{expected} but the code now runs {reached} ({why})")


class NotSerialisableOutputError(WorkflowFatalError):
    """A step returned a value that is not JSON: the platform ends the instance."""

    code = Code.STEP_NOT_SERIALISABLE

    def __init__(self, *, step: str, reason: str) -> None:
        super().__init__(f'The execution of the Workflow instance was terminated, as the step '
                         f'"{step}" returned a value which is not serialisable: {reason}')


class UnknownWorkflowError(WorkflowFatalError):
    """An instance of a workflow the engine has no definition of."""

    code = Code.WORKFLOW_NOT_FOUND

    def __init__(self, *, workflow: str) -> None:
        super().__init__(f"Workflow '{workflow}' is not registered with this engine")


class StepError(Exception):
    """A step failure whose original class cannot be rebuilt; ``name`` is that class's name."""

    carries_name = True

    def __init__(self, message: str, name: str = "Error") -> None:
        super().__init__(message)
        self.name = name


class WorkflowTimeoutError(Exception):
    """A step attempt or a ``wait_for_event`` ran past its timeout."""

    name = "WorkflowTimeoutError"
    carries_name = True


def non_retryable_class() -> type[Exception]:
    from emulator.runtime.workers.workflows import NonRetryableError
    return NonRetryableError


# Errors that come back as themselves, not as StepError or RemoteError: a NonRetryableError still
# stops retries, a timeout is still a WorkflowTimeoutError, and (over RPC only, where it carries
# its code) a fatal error still ends the instance.
register("NonRetryableError", lambda message, code: non_retryable_class()(message))
register("WorkflowTimeoutError", lambda message, code: WorkflowTimeoutError(message))
register("WorkflowFatalError",
         lambda message, code: WorkflowFatalError.carrying(message, code) if code else None)


def error_dict(exc: BaseException) -> dict[str, str]:
    """The persisted form of ``exc``; its name and message are cut to the platform's bounds (the
    host refuses longer ones from an isolate)."""
    wire = to_wire(exc)
    return {"name": str(wire["name"]), "message": str(wire["message"])}


def rebuild(error: dict[str, Any], cause: BaseException | None = None) -> Exception:
    """The exception to raise into ``run()`` for a persisted step error (which has no code)."""
    # without a code nothing rebuilds as a fatal error: every outcome is an Exception
    exc = cast(Exception, from_wire(
        {"name": error.get("name", "Error"), "message": error.get("message", "")},
        lambda message, name, code: StepError(message, name)))
    if cause is not None:
        exc.__cause__ = cause
    return exc


__all__ = ["INTERNAL_ATTEMPT_ERROR", "NotSerialisableOutputError", "ReplayMismatchError",
           "StepError", "UnknownWorkflowError", "WorkflowFatalError", "WorkflowTimeoutError",
           "error_dict", "is_non_retryable", "non_retryable_class", "rebuild"]

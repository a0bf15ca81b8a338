"""How errors cross a durable step boundary, and the engine's own control-flow signals.

A step's failure is persisted as ``{"name", "message"}`` (the platform's error shape) and raised
into ``run()`` as a rebuilt exception, the same on the first run and on every replay, so a
``try``/``except`` around a step takes the same path each time. Built-in exception names
(``ValueError``, ``KeyError``...) and ``NonRetryableError`` come back as their own class; any other
name comes back as :class:`StepError` carrying ``name``. On the first run the original exception is
attached as ``__cause__`` so its traceback is not lost.

``WorkflowFatalError`` derives from ``BaseException``: it ends the instance ``errored`` and user
code cannot swallow it with ``except Exception`` (the platform's fatal errors cannot be caught
either).
"""

from __future__ import annotations

import builtins
from typing import Any

from emulator.rules.limits import MAX_ERROR_MESSAGE_CHARS, MAX_ERROR_NAME_CHARS, cut_text


INTERNAL_ATTEMPT_ERROR = {"name": "WorkflowInternalError",
                          "message": "Attempt failed due to internal workflows error"}


class WorkflowFatalError(BaseException):
    """An error that ends the instance at once: invalid step name/config, step limit, a value
    that cannot be stored, a duration that does not parse."""

    def __init__(self, message: str, *, code: str = "workflow.fatal") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


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


def is_non_retryable(exc: BaseException) -> bool:
    """The platform detects NonRetryableError by name; so do we (any module's class of that name)."""
    return any(cls.__name__ == "NonRetryableError" for cls in type(exc).__mro__)


def error_dict(exc: BaseException) -> dict[str, str]:
    """The persisted form of ``exc``; its name and message are cut to the platform's bounds (the
    host refuses longer ones from an isolate)."""
    name = getattr(exc, "name", None) if getattr(type(exc), "carries_name", False) else None
    if is_non_retryable(exc):
        name = "NonRetryableError"
    own = getattr(exc, "message", None)  # coded errors: the message alone, no "[code]" prefix
    message = own if isinstance(own, str) and isinstance(exc, (WorkflowFatalError, _coded())) \
        else str(exc)
    if isinstance(exc, KeyError) and exc.args:
        message = str(exc.args[0])
    return {"name": cut_text(str(name or type(exc).__name__), MAX_ERROR_NAME_CHARS),
            "message": cut_text(message, MAX_ERROR_MESSAGE_CHARS)}


def _coded() -> type:
    from emulator.errors import DynwfError
    return DynwfError


def rebuild(error: dict[str, Any], cause: BaseException | None = None) -> Exception:
    """The exception to raise into ``run()`` for a persisted step error."""
    name, message = str(error.get("name", "Error")), str(error.get("message", ""))
    cls: Any = None
    if name == "NonRetryableError":
        cls = non_retryable_class()
    elif name == "WorkflowTimeoutError":
        cls = WorkflowTimeoutError
    else:
        candidate = getattr(builtins, name, None)
        if isinstance(candidate, type) and issubclass(candidate, Exception):
            cls = candidate
    try:
        exc = cls(message) if cls is not None else StepError(message, name)
    except Exception:
        exc = StepError(message, name)
    if cause is not None:
        exc.__cause__ = cause
    return exc


__all__ = ["INTERNAL_ATTEMPT_ERROR", "StepError", "WorkflowFatalError", "WorkflowTimeoutError",
           "error_dict", "is_non_retryable", "non_retryable_class", "rebuild"]

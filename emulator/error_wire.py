"""An exception as the JSON object that carries it across a boundary, and back.

An error crosses two boundaries, and both go through this one converter:

- a step's failure is persisted as ``{"name", "message"}`` (the platform's error shape) and raised
  into ``run()`` rebuilt from it, on the first run and on every replay (``sdk/failures.py``);
- an RPC call's error is answered as ``{"name", "message", "code"}`` and raised in the caller
  rebuilt from it (``rpc/peer.py``).

Out (:func:`to_wire`): ``name`` is the class's name, or the ``name`` of an error that carries one
(``carries_name``: a step error or remote error rebuilt under another's name, a fatal error of any
kind), and ``NonRetryableError`` for any subclass of it (the platform finds it by name);
``message`` is a coded error's own message (``str()`` of a dynwf error adds ``[code]`` and the
hint), else ``str(exc)`` (a ``KeyError``'s key unquoted); ``code`` is the error's code, if it has
one (:mod:`emulator.error_codes`). Name and message are cut to the platform's bounds.

Back (:func:`from_wire`), the first of these that applies:

1. a name registered with :func:`register` (``NonRetryableError``, ``WorkflowTimeoutError``, and
   ``WorkflowFatalError``, which comes back only with a code, so a persisted one never does);
2. with a code, the dynwf error class declaring it, made from the message; else the caller's
   fallback carrying the code (the name alone is not trusted to mean a built-in then);
3. the built-in exception of that name, unless the caller refuses it;
4. the caller's fallback, carrying the name (``StepError`` for a step, ``RemoteError`` over RPC).

Tried first: each boundary had its converter; they drifted (one read ``.message`` on any error,
the other only on coded ones; one knew codes, the other did not).
"""

from __future__ import annotations

import builtins
from typing import Any, Callable

from emulator.errors import class_of
from emulator.rules.limits import MAX_ERROR_MESSAGE_CHARS, MAX_ERROR_NAME_CHARS, cut_text

#: ``rebuild(message, code)``: the error to raise, or None to let the later rules decide.
Rebuild = Callable[[str, "str | None"], "BaseException | None"]
#: ``fallback(message, name, code)``: the error for one no rule rebuilds.
Fallback = Callable[[str, str, "str | None"], BaseException]

_REBUILDS: dict[str, Rebuild] = {}


def register(name: str, rebuild: Rebuild) -> None:
    """Errors named ``name`` come back through ``rebuild(message, code)``."""
    _REBUILDS[name] = rebuild


def is_non_retryable(exc: BaseException) -> bool:
    """The platform detects NonRetryableError by name; so do we (any module's class of that name)."""
    return any(cls.__name__ == "NonRetryableError" for cls in type(exc).__mro__)


def to_wire(exc: BaseException) -> dict[str, str | None]:
    """``{"name", "message", "code"}`` of ``exc``; ``code`` is None for an error without one."""
    # ``name`` is a class name only on errors that carry one (ImportError.name is a module name)
    name = getattr(exc, "name", None) if getattr(type(exc), "carries_name", False) else None
    if is_non_retryable(exc):
        name = "NonRetryableError"
    if not isinstance(name, str) or not name:
        name = type(exc).__name__
    code = getattr(exc, "code", None)
    coded = isinstance(code, str)
    own = getattr(exc, "message", None)
    if coded and isinstance(own, str):
        message = own
    elif isinstance(exc, KeyError) and exc.args:
        message = str(exc.args[0])
    else:
        message = str(exc)
    return {"name": cut_text(name, MAX_ERROR_NAME_CHARS),
            "message": cut_text(message, MAX_ERROR_MESSAGE_CHARS),
            "code": cut_text(str(code), MAX_ERROR_NAME_CHARS) if coded else None}


def from_wire(error: dict[str, Any], fallback: Fallback, *,
              refused: frozenset[str] = frozenset()) -> BaseException:
    """The exception to raise for ``error`` (what :func:`to_wire` made, or a persisted
    ``{"name", "message"}``); ``refused`` names built-in errors never rebuilt."""
    name, message = str(error.get("name", "Error")), str(error.get("message", ""))
    code = error.get("code")
    code = code if isinstance(code, str) and code else None
    rebuild = _REBUILDS.get(name)
    if rebuild is not None:
        rebuilt = rebuild(message, code)
        if rebuilt is not None:
            return rebuilt
    if code is not None:
        cls = class_of(code)
        if cls is not None:
            try:
                return cls(message)
            except TypeError:  # a class that builds its message from fields the wire lacks
                pass
        return fallback(message, name, code)
    candidate = getattr(builtins, name, None) if name not in refused else None
    if isinstance(candidate, type) and issubclass(candidate, Exception):
        try:
            return candidate(message)
        except Exception:  # noqa: BLE001 - a built-in that cannot be made from a message
            pass
    return fallback(message, name, None)


__all__ = ["Fallback", "Rebuild", "from_wire", "is_non_retryable", "register", "to_wire"]

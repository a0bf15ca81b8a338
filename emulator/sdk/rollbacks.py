"""Rollbacks on the workflow's side: compensation handlers registered by ``step.do`` and the
rollback phase that runs them (docs/semantics.md, "Rollbacks").

Handlers are functions of the workflow's code, so they live where that code runs (the host, or a
tenant's isolate) and cannot be stored. The choice: the engine never calls a handler itself. When
an instance fails (or is terminated with rollback), the engine records the phase on the instance
and runs ``run()`` again as a replay in *rollback mode*. Replayed steps register their handlers
again, with the output the store holds; once every step the store marks as having a handler is
registered, or the replay reaches the present (a step that has not ended), the step client runs
the handlers, latest-started first, each as a durable step of kind ``rollback``, then tells the
engine, which writes the outcome from its own rows and ends the instance. A handler that ended is
answered from the store on any later replay, so after a crash only the rest run.

The alternative, keeping the handlers of the failing run and calling them after ``run()``
raised, was set aside: in an isolate it needs a way back into tenant code after its call has
returned, and handlers held in memory are lost with the engine (a crash between two handlers, a
terminate sent from another process); the replay rebuilds them in every one of those cases.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any, Callable

from emulator.rules.steps import StepKey, StepKind

#: The parameters a handler may declare; each is filled by name.
HANDLER_PARAMETERS = ("ctx", "output", "error")


@dataclass(frozen=True, slots=True)
class RollbackHandler:
    """What ``step.do(..., rollback=fn, rollback_config=...)`` hands the step client."""

    fn: Callable[..., Any]
    config: Any = None

    def __post_init__(self) -> None:
        check_handler(self.fn)


def check_handler(fn: Any) -> tuple[str, ...]:
    """The handler's parameter names, or TypeError naming what is wrong."""
    if not callable(fn):
        raise TypeError(f"a rollback handler must be a function, not {type(fn).__name__}")
    names = tuple(inspect.signature(fn).parameters)
    unknown = [n for n in names if n not in HANDLER_PARAMETERS]
    if unknown:
        raise TypeError(f"rollback handler {getattr(fn, '__name__', fn)!r} has parameter(s) "
                        f"{', '.join(unknown)}; a handler may take only "
                        f"{', '.join(HANDLER_PARAMETERS)} (filled by name)")
    return names


@dataclass(slots=True)
class Registration:
    """A handler registered again by the replay, with what it will be called with."""

    key: StepKey              # the do step it undoes
    order: int                # the step's place in call order (start order)
    handler: RollbackHandler
    ctx: dict[str, Any]
    output: Any
    config_json: str          # the persisted rollback config

    async def call(self, error: dict[str, str] | None) -> None:
        values = {"ctx": json.loads(json.dumps(self.ctx)), "output": self.output, "error": error}
        fn = self.handler.fn
        result = fn(**{name: values[name] for name in check_handler(fn)})
        if inspect.isawaitable(result):
            await result


class RollbackPhase:
    """The rollback mode of one replay: which handlers the store expects, which came back."""

    def __init__(self, trigger: dict[str, str] | None, pending: set[StepKey]) -> None:
        self.trigger = trigger
        self.pending = pending      # do steps with a handler whose rollback has not ended well
        self.registered: dict[StepKey, Registration] = {}
        self.started = False

    def register(self, registration: Registration) -> None:
        self.registered.setdefault(registration.key, registration)

    @property
    def ready(self) -> bool:
        """Every handler the store expects is registered again: the phase may run."""
        return self.pending <= self.registered.keys()

    def latest_first(self) -> list[Registration]:
        return sorted(self.registered.values(), key=lambda r: r.order, reverse=True)


def rollback_key(key: StepKey) -> StepKey:
    """The key of the rollback step that undoes do step ``key``."""
    return (StepKind.ROLLBACK, key[1], key[2])

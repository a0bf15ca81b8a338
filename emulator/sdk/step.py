"""``step``: the object a workflow's ``run(event, step)`` receives (Python Workflows SDK shape).

``@step.do(name=None, *, concurrent=False, config=None)`` decorates a function; the step runs when
the returned callable is called and awaited. Parameters are filled by matching earlier step
*names* (implicit dependencies, the SDK's mode since compatibility date 2026-02-25); a ``ctx``
parameter receives ``{"step": {"name", "count"}, "attempt", "config"}``. Before that date the
legacy form applies: ``step.do(name, depends=[...], concurrent=False, config=None)`` fills the
non-``ctx`` parameters positionally from ``depends``. Error texts follow the SDK (docs/semantics.md
§3.2-§3.3).

Step semantics live in :class:`~emulator.sdk.client.StepClient` (beside the code) and
:class:`~emulator.engine.lifetime.Lifetime` (in the engine); this module is only the SDK's surface
and its dependency resolution.
"""

from __future__ import annotations

import asyncio
import inspect
from datetime import date
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from emulator.rules.limits import DEFAULT_EVENT_TIMEOUT
from emulator.sdk.rollbacks import RollbackHandler

if TYPE_CHECKING:
    from emulator.sdk.client import StepClient

IMPLICIT_DEPENDENCIES_SINCE = date(2026, 2, 25)


def uses_implicit_dependencies(compatibility_date: str | None) -> bool:
    if not compatibility_date:
        return True
    try:
        return date.fromisoformat(compatibility_date) >= IMPLICIT_DEPENDENCIES_SINCE
    except ValueError:
        return True


class StepCallable:
    """What ``@step.do(...)`` returns: call and await it to run (or replay) the step."""

    def __init__(self, step: "WorkflowStep", name: str, func: Callable[..., Any], *,
                 concurrent: bool, config: Any, depends: list["StepCallable"] | None,
                 rollback: RollbackHandler | None = None, rollback_config: Any = None) -> None:
        self._step = step
        self._rollback = rollback
        self._rollback_config = rollback_config
        self._step_name = name
        self._func = func
        self._concurrent = concurrent
        self._config = config
        self._depends = depends
        self._params = _parameter_names(func)
        self.__name__ = getattr(func, "__name__", name)
        self.__doc__ = getattr(func, "__doc__", None)

    @property
    def step_name(self) -> str:
        return self._step_name

    def __repr__(self) -> str:
        return f"<step {self._step_name!r}>"

    def __call__(self) -> Awaitable[Any]:
        return self._step._run(self)

    def rollback(self, handler: Callable[..., Any] | None = None, *, config: Any = None) -> Any:
        """Register the step's compensation handler: ``@charge.rollback`` or
        ``@charge.rollback(config={"retries": ..., "timeout": ...})``. The handler takes any of
        ``ctx``, ``output``, ``error`` by name (docs/semantics.md, "Rollbacks")."""
        if handler is None:
            return lambda fn: self.rollback(fn, config=config)
        if config is None:
            config = self._rollback_config
        self._rollback = RollbackHandler(handler, config)
        return handler

    async def _arguments(self) -> list[Any]:
        """Dependency values in parameter order; ``ctx`` slots hold a placeholder filled later."""
        if self._depends is None:
            deps = [None if p == "ctx" else self._step._resolve_name(p) for p in self._params]
        else:
            deps = self._legacy_dependencies()
        todo = [d for d in deps if d is not None]
        if self._concurrent:
            values = await asyncio.gather(*(self._step._dependency_value(d) for d in todo))
        else:
            values = [await self._step._dependency_value(d) for d in todo]
        filled = iter(values)
        return [_CTX if d is None else next(filled) for d in deps]

    def _legacy_dependencies(self) -> list["StepCallable | None"]:
        assert self._depends is not None
        non_ctx = [p for p in self._params if p != "ctx"]
        if non_ctx and not self._depends:
            raise TypeError(f"Step has {len(non_ctx)} non-ctx parameter(s) but no 'depends' list provided")
        if len(non_ctx) != len(self._depends):
            raise TypeError(f"Step declares {len(non_ctx)} non-ctx parameter(s) but 'depends' has "
                            f"{len(self._depends)} item(s)")
        given = iter(self._depends)
        return [None if p == "ctx" else next(given) for p in self._params]


_CTX = object()
_PARAMETERS: dict[Any, tuple[str, ...]] = {}


def _parameter_names(func: Callable[..., Any]) -> tuple[str, ...]:
    """Parameter names of a step function. A step declared in a loop is a new closure over the
    same code each time, so the answer is cached by code object."""
    code = getattr(func, "__code__", None)
    names = _PARAMETERS.get(code) if code is not None else None
    if names is None:
        names = tuple(inspect.signature(func).parameters)
        if code is not None and len(_PARAMETERS) < 10_000:
            _PARAMETERS[code] = names
    return names


class WorkflowStep:
    """The ``step`` argument of ``run``; one per run of an instance (a new one on every replay)."""

    def __init__(self, client: "StepClient", *, implicit_dependencies: bool = True) -> None:
        self._client = client
        self._implicit = implicit_dependencies
        self._closures: dict[str, StepCallable] = {}
        self._memo: dict[str, Any] = {}
        self._running: dict[str, asyncio.Future[Any]] = {}

    def __rpc_proxy__(self) -> Any:
        """Sent to an isolate as the engine's step backend plus the step cache."""
        from emulator.sdk.remote import StepBackendTarget
        return StepBackendTarget(self._client)

    # ---- the SDK surface -------------------------------------------------------------------

    def do(self, name: Any = None, depends: Any = None, concurrent: bool = False,
           config: Any = None, *, rollback: Callable[..., Any] | None = None,
           rollback_config: Any = None) -> Any:
        """Decorate a step function. ``@step.do``, ``@step.do()`` and ``@step.do("name")`` all work.
        ``rollback=`` registers a compensation handler, ``rollback_config=`` its retries and
        timeout (docs/semantics.md, "Rollbacks")."""
        if callable(name) and not isinstance(name, str) and depends is None:
            return self.do()(name)  # bare @step.do
        # rollback_config alone is kept for a handler registered later with @<step>.rollback
        handler = RollbackHandler(rollback, rollback_config) if rollback is not None else None
        if self._implicit and depends is not None:
            raise TypeError("step.do() got 'depends', which needs a compatibility_date before "
                            "2026-02-25; name the earlier steps as parameters instead")
        if not self._implicit and name is None:
            raise TypeError("step.do() missing required argument: 'name'")
        legacy_depends = None if self._implicit else list(depends or [])

        def decorator(func: Callable[..., Any]) -> StepCallable:
            step_name = name if name is not None else getattr(func, "__name__", None)
            callable_ = StepCallable(self, step_name, func, concurrent=concurrent, config=config,
                                     depends=legacy_depends, rollback=handler,
                                     rollback_config=rollback_config)
            self._closures[step_name] = callable_
            return callable_
        return decorator

    async def sleep(self, name: str, duration: Any) -> None:
        await self._client.sleep(name, duration)

    async def sleep_until(self, name: str, timestamp: Any) -> None:
        await self._client.sleep_until(name, timestamp)

    async def wait_for_event(self, name: str, event_type: str, /,
                             timeout: Any = DEFAULT_EVENT_TIMEOUT) -> dict:
        return await self._client.wait_for_event(name, event_type, timeout)

    # ---- dependency resolution -------------------------------------------------------------

    def _resolve_name(self, parameter: str) -> StepCallable:
        try:
            return self._closures[parameter]
        except KeyError:
            raise TypeError(f"Received unexpected parameter {parameter}") from None

    async def _dependency_value(self, dep: StepCallable) -> Any:
        name = dep.step_name
        if name in self._memo:
            return self._memo[name]
        if name in self._running:
            return await asyncio.shield(self._running[name])
        return await dep()

    async def _run(self, callable_: StepCallable) -> Any:
        name = callable_.step_name
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._running[name] = future
        try:
            args = await callable_._arguments()

            async def body(ctx: dict[str, Any]) -> Any:
                result = callable_._func(*(ctx if a is _CTX else a for a in args))
                if inspect.isawaitable(result):
                    result = await result
                return result

            value = await self._client.do(name, body, callable_._config, callable_._rollback)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: dependants that await it re-raise it
            raise
        finally:
            if self._running.get(name) is future:
                del self._running[name]
        self._memo[name] = value
        future.set_result(value)
        return value

"""The half of step semantics that runs where the workflow's code runs.

A step body runs next to the code that declared it: in the host for workflows the engine runs
directly, in the tenant's isolate for dynamic workflows. So the logic split is:

- here (``StepClient``): step identity (kind, name, occurrence count in call order), answering
  replays from the step cache without asking anyone, validating names, configs and durations,
  running the body with its ``ctx`` and timeout, and turning its value into JSON;
- in the engine (``Lifetime``, the :class:`StepBackend`): recording attempts, deciding and waiting
  out retries, sleeps and event waits, committing results.

Tried first: the engine ran bodies by calling back into the isolate. That costs two round trips
per step and an RPC for every function; this split costs one round trip (plus a one-way notice
when an attempt starts, so a body that kills its isolate is still counted as an attempt).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Protocol

from emulator.clock import to_datetime
from emulator.rules.durations import parse_duration
from emulator.sdk.failures import (INTERNAL_ATTEMPT_ERROR, NotSerialisableOutputError,
                                   ReplayMismatchError, StepError, WorkflowFatalError,
                                   WorkflowTimeoutError, error_dict, is_non_retryable, rebuild)
from emulator.rules.limits import (MAX_SLEEP_MS, MIN_EVENT_TIMEOUT_MS, check_event_type,
                                    check_step_name, encode_json)
from emulator.sdk.mocks import StepMocks
from emulator.tracebacks import with_traceback
from emulator.rules.retries import StepConfig, delay_function_arguments, resolve_step_config
from emulator.rules.values import decode_json
from emulator.errors import DynwfError, NotSerialisableError, PayloadTooLargeError, StepLimitError
from emulator.rules.steps import ENDED, StepKey, StepKind, StepStatus
from emulator.rules.retries import resolve_rollback_config
from emulator.sdk.rollbacks import Registration, RollbackHandler, RollbackPhase, rollback_key

#: How long a step's delay function may take to return (the platform's 5 seconds).
DELAY_FUNCTION_TIMEOUT_S = 5.0
#: The error a step fails with when its delay function cannot give a delay.
NON_RETRYABLE_DELAY_ERROR = "NonRetryableDelayError"

#: Loop iterations a new step waits for gathered siblings to replay (see _check_replay).
_SIBLING_ITERATIONS = 5

#: Called with any exception a step body raises, before it is recorded (an isolate exits on
#: MemoryError here, so the engine sees ``isolate.memory_limit``).
on_body_error: Callable[[BaseException], None] | None = None

#: (instance id, step key, backend) of the step body running in this task, for log capture.
current_step: contextvars.ContextVar[tuple[str, StepKey, Any] | None] = \
    contextvars.ContextVar("dynwf_current_step", default=None)


class StepBackend(Protocol):
    """What the engine offers the client; every method is about one step key."""

    def begin(self, key: StepKey, attempt: int, config_json: str,
              rollback_json: str | None = None) -> None:
        """An attempt starts (one-way); ``rollback_json`` is the rollback config of a do step
        that registered a handler."""

    async def settle(self, key: StepKey, attempt: int, config_json: str, result: str | None,
                     error: dict[str, str] | None, retryable: bool,
                     delay_ms: int | None = None) -> dict[str, Any]:
        """Record an attempt's outcome: ``{"status": "done"|"failed"|"retry"}``; for retry,
        after the back-off has passed. ``delay_ms`` is what the step's delay function returned
        for this failure (a dynamic delay only)."""

    async def await_retry(self, key: StepKey) -> None:
        """The step is backing off: return when its next attempt may start."""

    async def sleep(self, key: StepKey, duration_ms: int | None, due: int | None) -> None:
        """Sleep ``duration_ms`` from now, or until ``due`` (epoch ms)."""

    async def wait_for_event(self, key: StepKey, event_type: str, timeout_ms: int) -> dict[str, Any]:
        """``{"status": "done"|"failed", "result"?, "error"?}`` once the wait is over."""

    async def boundary(self) -> None:
        """Called before new work starts (pause takes effect here)."""

    def cancelled(self, key: StepKey, attempt: int) -> None:
        """The workflow's own code cancelled the task awaiting this attempt (one-way)."""

    def log(self, key: StepKey | None, level: str, message: str) -> None:
        """A line the step's code printed or logged (one-way)."""

    async def end_rollbacks(self) -> None:
        """The rollback phase ran what it could: the engine writes its outcome and ends the
        instance (this never returns)."""

    async def history_end(self, key: StepKey) -> None:
        """A replay check reached ``key``, past what the history holds (replay checks only)."""


class CachedStep:
    """What the client knows of a step from before this run (a row of the step table)."""

    __slots__ = ("status", "attempts", "config", "result", "error", "rollback")

    def __init__(self, status: str, attempts: int = 0, config: str | None = None,
                 result: str | None = None, error: str | None = None,
                 rollback: str | None = None) -> None:
        self.status, self.attempts, self.config = status, attempts, config
        self.result, self.error, self.rollback = result, error, rollback

    def to_wire(self) -> list[Any]:
        return [self.status, self.attempts, self.config, self.result, self.error, self.rollback]

    @classmethod
    def from_wire(cls, data: list[Any]) -> "CachedStep":
        return cls(*data)


def show_step(key: StepKey) -> str:
    """How errors name a step: ``step.do "fetch" (occurrence 2)``."""
    kind = {StepKind.DO: "step.do", StepKind.SLEEP: "step.sleep", StepKind.WAIT: "step.wait_for_event",
            StepKind.ROLLBACK: "rollback of"}[key[0]]
    return f'{kind} "{key[1]}"' + (f" (occurrence {key[2]})" if key[2] > 1 else "")


def fatal(exc: DynwfError | str) -> WorkflowFatalError:
    """The error that ends the run for ``exc``: a coded error keeps its code."""
    if isinstance(exc, DynwfError):
        return WorkflowFatalError.carrying(exc.message + (f" ({exc.hint})" if exc.hint else ""),
                                           exc.code)
    return WorkflowFatalError(exc)


class StepClient:
    """Step primitives for one run of one instance."""

    def __init__(self, backend: StepBackend, instance_id: str, cache: dict[StepKey, CachedStep], *,
                 step_limit: int, on_replay: Callable[[StepKey], None] | None = None,
                 code_version: str | None = None, running_version: str | None = None,
                 mocks: StepMocks | None = None,
                 rollback_phase: dict[str, Any] | None = None, replay_only: bool = False) -> None:
        self.backend = backend
        self.instance_id = instance_id
        self.cache = cache              # in the order the steps were first reached
        self.step_limit = step_limit
        self.on_replay = on_replay
        #: the code the instance started on, and the code running now (when known)
        self.code_version = code_version
        self.running_version = running_version
        #: attempt outcomes a test decided in advance (test modifiers; None in normal runs)
        self.mocks = mocks
        self._counts: dict[tuple[str, str], int] = {}
        self._do_steps = 0
        self._visited: set[StepKey] = set()
        # recorded steps (done or failed) this run has not reached yet: a count, so that the
        # replay check costs nothing per step until one is left behind
        self._recorded = {k for k, step in cache.items() if step.status in ENDED}
        self._unreached = len(self._recorded)
        #: set when this run is a replay in rollback mode (docs/semantics.md, "Rollbacks")
        self.rollbacks: RollbackPhase | None = None
        if rollback_phase is not None:
            pending = {k for k, step in cache.items() if k[0] == StepKind.DO and step.rollback
                       and getattr(cache.get(rollback_key(k)), "status", None) != StepStatus.DONE}
            self.rollbacks = RollbackPhase(rollback_phase.get("trigger"), pending)
        self._order: dict[StepKey, int] = {}
        #: a replay check (``dynwf replay``): every step is answered from the cache, in the order
        #: recorded, and the run stops where the history ends; no body runs, nothing is written
        self.replay_only = replay_only
        self._position = {k: i for i, k in enumerate(cache)}

    def _key(self, kind: str, name: str) -> StepKey:
        count = self._counts.get((kind, name), 0) + 1
        self._counts[(kind, name)] = count
        key = (kind, name, count)
        self._order.setdefault(key, len(self._order))
        if key not in self._visited:
            self._visited.add(key)
            if key in self._recorded:
                self._unreached -= 1
        return key

    async def _check_replay(self, key: StepKey) -> None:
        """A new step while recorded ones are still ahead means the code no longer takes the path
        the instance took: running on would mix two histories, so the run stops naming both steps.
        Checked on every replay, changed code or not (step names built from random values, the
        time or data read outside a step diverge without any change). Steps gathered in parallel
        replay their recorded parts without waiting, so a few loop iterations let siblings catch
        up before a recorded step counts as skipped."""
        for _ in range(_SIBLING_ITERATIONS):
            if not self._unreached:
                return
            await asyncio.sleep(0)
        expected = self._next_recorded()
        if expected is None:
            return
        if self.code_version and self.running_version and \
                self.code_version != self.running_version:
            why = (f"the tenant's code changed from {self.code_version} to "
                   f"{self.running_version} since the instance started; restart it to run the "
                   "new code from the top")
        else:
            why = ("the code is the one the instance started on, so its steps depend on something "
                   "that differs between runs: random values, the time, or data read outside a "
                   "step; build step names and their order only from the event and earlier "
                   "steps' results")
        raise ReplayMismatchError(expected=show_step(expected), reached=show_step(key), why=why)

    async def _check_order(self, key: StepKey) -> None:
        """A replay check also wants the recorded steps in their recorded order: a step answered
        from the cache while a step recorded before it was never reached means the code now
        runs them in another order (or no longer runs the earlier one). Gathered siblings get
        the same few loop iterations as in :meth:`_check_replay`."""
        position = self._position.get(key)
        if position is None:
            return
        def earlier_unreached() -> StepKey | None:
            return next((k for k in self.cache if self._position[k] < position
                         and k not in self._visited
                         and self.cache[k].status in ENDED), None)
        for _ in range(_SIBLING_ITERATIONS):
            if earlier_unreached() is None:
                return
            await asyncio.sleep(0)
        earlier = earlier_unreached()
        if earlier is None:
            return
        raise ReplayMismatchError(
            expected=show_step(earlier), reached=show_step(key),
            why="the code now reaches the recorded steps in another order, or no longer runs "
                "the step expected; a step run on changed code would get results computed "
                "for another path")

    async def _history_end(self, key: StepKey) -> None:
        """A replay check reached a step the history holds no outcome for: the instance had not
        got this far, so what follows is new ground; the run stops here."""
        await self.backend.history_end(key)   # type: ignore[attr-defined]
        await asyncio.get_running_loop().create_future()

    def _next_recorded(self) -> StepKey | None:
        return next((k for k, step in self.cache.items()
                     if k not in self._visited and step.status in ENDED), None)

    def _replayed(self, key: StepKey) -> None:
        if self.on_replay is not None:
            self.on_replay(key)

    # ---- step.do ---------------------------------------------------------------------------

    async def do(self, name: str, body: Callable[[dict[str, Any]], Awaitable[Any]],
                 raw_config: Any, rollback: RollbackHandler | None = None) -> Any:
        try:
            check_step_name(name)
        except DynwfError as exc:
            raise fatal(exc) from None
        key = self._key(StepKind.DO, name)
        self._do_steps += 1  # replayed steps count too: the limit is per instance, not per run
        cached = self.cache.get(key)
        if self.rollbacks is not None:
            return await self._do_in_rollback(key, cached, rollback)
        if cached is None:
            await self._check_replay(key)
        if self.replay_only:
            await self._check_order(key)
            if cached is None or cached.status not in ENDED:
                await self._history_end(key)
        if cached is not None and cached.status == StepStatus.DONE:
            self._replayed(key)
            return decode_json(cached.result) if cached.result is not None else None
        if cached is not None and cached.status == StepStatus.FAILED:
            self._replayed(key)
            raise rebuild(json.loads(cached.error))
        if cached is not None and cached.status == StepStatus.CANCELLED:
            # as on its first run: pending until the code cancels it again (docs/semantics.md,
            # "Cancelled steps"); its body never runs again
            self._replayed(key)
            await asyncio.get_running_loop().create_future()
        await self.backend.boundary()
        if self._do_steps > self.step_limit:
            raise fatal(StepLimitError(limit=self.step_limit))
        if cached is not None and cached.config:
            config = StepConfig.from_dict(json.loads(cached.config))
        else:
            try:
                config = resolve_step_config(raw_config, name)
            except DynwfError as exc:
                raise fatal(exc) from None
        rollback_json = None
        if rollback is not None:
            if cached is not None and cached.rollback:
                rollback_json = cached.rollback
            else:
                try:
                    rollback_json = resolve_rollback_config(rollback.config, name).json
                except DynwfError as exc:
                    raise fatal(exc) from None
        delay_function = _delay_function(raw_config) if config.dynamic_delay else None
        return await self._attempts(key, config, cached, body, rollback_json, delay_function)

    async def _attempts(self, key: StepKey, config: StepConfig, cached: CachedStep | None,
                        body: Callable[[dict[str, Any]], Awaitable[Any]],
                        rollback_json: str | None = None,
                        delay_function: Callable[..., Any] | None = None) -> Any:
        """Run ``body`` under ``config``'s retries and timeout until it succeeds or fails for
        good, each attempt recorded by the engine; a do step's and a rollback handler's alike."""
        name = key[1]
        config_json = config.json
        attempts = cached.attempts if cached is not None else 0
        if cached is not None and cached.status == StepStatus.RUNNING:
            # The attempt was cut off (engine or isolate died): it counts as a failed attempt.
            outcome = await self.backend.settle(key, attempts, config_json, None,
                                                INTERNAL_ATTEMPT_ERROR, True)
            if outcome["status"] == StepStatus.FAILED:
                raise rebuild(INTERNAL_ATTEMPT_ERROR)
        elif cached is not None and cached.status == StepStatus.BACKOFF:
            await self.backend.await_retry(key)
        mocks = self.mocks if key[0] == StepKind.DO else None
        while True:
            attempts += 1
            if rollback_json is None:
                self.backend.begin(key, attempts, config_json)
            else:
                self.backend.begin(key, attempts, config_json, rollback_json)
            ctx = {"step": {"name": name, "count": key[2]}, "attempt": attempts,
                   "config": config.ctx_dict()}
            token = current_step.set((self.instance_id, key, self.backend))
            try:
                async with asyncio.timeout(config.timeout_ms / 1000):
                    value = await (body(ctx) if mocks is None
                                   else mocks.run(key, attempts, body, ctx))
                encoded = encode_json(value, what=f'The output of step "{name}"')
            except asyncio.CancelledError:
                # the code cancelled the task awaiting this step (a lost race, a timeout around
                # it, a failing task group), or the engine is stopping the run: the engine tells
                # the two apart and records the first as cancelled
                self.backend.cancelled(key, attempts)
                raise
            except NotSerialisableError as exc:
                raise NotSerialisableOutputError(step=name, reason=exc.message) from None
            except Exception as exc:  # noqa: BLE001 - any error of the body is a failed attempt
                if on_body_error is not None:
                    on_body_error(exc)
                raised = exc   # its traceback, before a timeout or size error replaces it
                if isinstance(exc, TimeoutError):
                    exc = WorkflowTimeoutError(f'Step "{name}" attempt {attempts} timed out after '
                                               f"{config.timeout_ms}ms")
                elif isinstance(exc, PayloadTooLargeError):  # the platform's words and class
                    exc = StepError(f"Step {name}-{key[2]} output is too large. Maximum allowed "
                                    "size is 1MiB.", "WorkflowInternalError")
                error = with_traceback(error_dict(exc), raised)
                retryable, delay_ms = not is_non_retryable(exc), None
                if retryable and delay_function is not None and config.will_retry(attempts):
                    try:
                        fresh = {"step": {"name": name, "count": key[2]}, "attempt": attempts,
                                 "config": config.ctx_dict()}    # not the body's, which it may change
                        delay_ms = await _run_delay_function(delay_function, fresh, exc, key)
                    except StepError as broken:   # the step fails for good, with this error
                        error, retryable = with_traceback(error_dict(broken), raised), False
                outcome = await self.backend.settle(key, attempts, config_json, None, error,
                                                    retryable, delay_ms)
                if outcome["status"] == StepStatus.FAILED:
                    raise rebuild(error, exc) from exc
                continue
            finally:
                current_step.reset(token)
            await self.backend.settle(key, attempts, config_json, encoded, None, False)
            return decode_json(encoded)

    # ---- rollback mode (docs/semantics.md, "Rollbacks"; sdk/rollbacks.py) ------------------

    async def _do_in_rollback(self, key: StepKey, cached: CachedStep | None,
                              rollback: RollbackHandler | None) -> Any:
        """A do step reached by a replay in rollback mode: register its handler again; run the
        phase once every expected handler is back, or here, where the replay meets the present."""
        phase = self.rollbacks
        assert phase is not None
        ended = cached is not None and cached.status in ENDED
        if cached is not None and cached.rollback and rollback is not None:
            output = decode_json(cached.result) if ended and cached.status == StepStatus.DONE \
                and cached.result is not None else None
            # as the body's ctx shows it: a delay function is left out (docs/semantics.md §2.4)
            config = StepConfig.from_dict(json.loads(cached.config)).ctx_dict() \
                if cached.config else None
            phase.register(Registration(
                key, self._order[key], rollback,
                {"step": {"name": key[1], "count": key[2]}, "attempt": max(cached.attempts, 1),
                 "config": config}, output, cached.rollback))
        if cached is not None and cached.status == StepStatus.CANCELLED:
            # as in any replay (docs/semantics.md, "Cancelled steps"): pending until the code
            # cancels it again, while its siblings go on registering their handlers
            self._replayed(key)
            if phase.ready:
                await self._roll_back()
            await asyncio.get_running_loop().create_future()
        if not ended:
            await self._roll_back()
        assert cached is not None
        self._replayed(key)
        if phase.ready:
            await self._roll_back()
        if cached.status == StepStatus.DONE:
            return decode_json(cached.result) if cached.result is not None else None
        raise rebuild(json.loads(cached.error))

    async def _roll_back(self) -> None:
        """Run the registered handlers, latest-started first, each a durable step of kind
        ``rollback``; stop at the first that fails for good. Never returns: the engine ends the
        instance."""
        phase = self.rollbacks
        assert phase is not None
        if not phase.started:
            phase.started = True
            for registration in phase.latest_first():
                key = rollback_key(registration.key)
                cached = self.cache.get(key)
                if cached is not None and cached.status == StepStatus.DONE:
                    continue                      # ran to its end before: never again
                if cached is not None and cached.status == StepStatus.FAILED:
                    break
                config = StepConfig.from_dict(json.loads(registration.config_json))

                async def body(_ctx: dict[str, Any], registration: Registration = registration) -> None:
                    await registration.call(phase.trigger)
                try:
                    await self._attempts(key, config, cached, body)
                except Exception:  # noqa: BLE001 - recorded by the engine; the phase halts
                    break
            await self.backend.end_rollbacks()
        await asyncio.get_running_loop().create_future()   # the engine stops this run

    # ---- sleeps ----------------------------------------------------------------------------

    async def sleep(self, name: str, duration: Any) -> None:
        try:
            check_step_name(name)
            ms = parse_duration(duration, what=f'sleep "{name}" duration')
        except DynwfError as exc:
            raise fatal(exc) from None
        if ms > MAX_SLEEP_MS:
            raise fatal(f'sleep "{name}" of {duration!r} is longer than the limit of 365 days')
        await self._sleep(self._key(StepKind.SLEEP, name), ms, None)

    async def sleep_until(self, name: str, timestamp: Any) -> None:
        try:
            check_step_name(name)
        except DynwfError as exc:
            raise fatal(exc) from None
        if isinstance(timestamp, datetime):
            aware = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=timezone.utc)
            due = round(aware.timestamp() * 1000)
        elif isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool):
            due = round(timestamp)  # epoch milliseconds, as the runtime reads a number
        else:
            raise fatal(f'sleep_until "{name}" needs a datetime or epoch milliseconds, '
                        f"not {type(timestamp).__name__}")
        await self._sleep(self._key(StepKind.SLEEP, name), None, due)

    async def _sleep(self, key: StepKey, ms: int | None, due: int | None) -> None:
        """``due`` is None for a relative sleep: the engine's clock decides when it ends."""
        cached = self.cache.get(key)
        if self.replay_only:
            if cached is None:
                await self._check_replay(key)
            await self._check_order(key)
            if cached is None or cached.status != StepStatus.DONE:
                await self._history_end(key)
        if cached is not None and cached.status == StepStatus.DONE:
            self._replayed(key)
            return
        if self.rollbacks is not None:
            await self._roll_back()    # the replay has reached the present
        if cached is None:
            await self._check_replay(key)
        await self.backend.boundary()
        await self.backend.sleep(key, ms, due)

    # ---- events ----------------------------------------------------------------------------

    async def wait_for_event(self, name: str, event_type: Any, timeout: Any) -> dict[str, Any]:
        try:
            check_step_name(name)
            check_event_type(event_type)
            timeout_ms = parse_duration(timeout, what=f'wait_for_event "{name}" timeout')
        except DynwfError as exc:
            raise fatal(exc) from None
        if not MIN_EVENT_TIMEOUT_MS <= timeout_ms <= MAX_SLEEP_MS:
            raise fatal(f'wait_for_event "{name}" timeout {timeout!r} is outside the allowed range '
                        "of 1 second to 365 days")
        key = self._key(StepKind.WAIT, name)
        cached = self.cache.get(key)
        if self.rollbacks is not None and (cached is None or cached.status not in ENDED):
            await self._roll_back()    # the replay has reached the present
        if cached is None:
            await self._check_replay(key)
        if self.replay_only:
            await self._check_order(key)
            if cached is None or cached.status not in ENDED:
                await self._history_end(key)
        if cached is not None and cached.status in ENDED:
            self._replayed(key)
            outcome = {"status": cached.status, "result": cached.result, "error": cached.error}
        else:
            await self.backend.boundary()
            outcome = await self.backend.wait_for_event(key, event_type, timeout_ms)
        if outcome["status"] == StepStatus.FAILED:
            raise _crossed(rebuild(json.loads(outcome["error"])))
        value = decode_json(outcome["result"])
        value["timestamp"] = to_datetime(value["timestamp"])
        return value


def _delay_function(raw_config: Any) -> Callable[..., Any] | None:
    """The delay function of the code running now: a stored config records only that there was
    one, so a replay takes the live one (none left in the code: the fallback delay applies)."""
    retries = raw_config.get("retries") if isinstance(raw_config, dict) else None
    delay = retries.get("delay") if isinstance(retries, dict) else None
    return delay if callable(delay) else None


async def _run_delay_function(function: Callable[..., Any], ctx: dict[str, Any],
                              error: BaseException, key: StepKey) -> int:
    """The milliseconds a step's delay function asks for after a failed attempt (semantics §2.4),
    before any back-off. It runs here, next to the step body; the engine gets only the number.
    A function that raises, takes over ``DELAY_FUNCTION_TIMEOUT_S`` or returns no valid duration
    of at most 365 days raises a ``NonRetryableDelayError`` (a :class:`StepError`)."""
    def broken(why: str) -> StepError:
        return StepError(f'The delay function for step "{key[1]}-{key[2]}" {why}',
                         NON_RETRYABLE_DELAY_ERROR)
    try:
        async with asyncio.timeout(DELAY_FUNCTION_TIMEOUT_S):
            value = function(**delay_function_arguments(function, ctx, error))
            if inspect.isawaitable(value):
                value = await value
    except TimeoutError:
        raise broken(f"did not return within {DELAY_FUNCTION_TIMEOUT_S:g} seconds") from None
    except Exception as exc:  # noqa: BLE001 - whatever the function raises breaks the retry
        raise broken(f"threw an error: {exc}") from None
    try:
        ms = parse_duration(value, what="the delay")
    except DynwfError:
        raise broken('returned an invalid delay value (expected a number of ms or a duration '
                     'string like "30 seconds")') from None
    if ms > MAX_SLEEP_MS:
        raise broken(f"returned a delay of {ms} ms, over the longest wait of 365 days")
    return ms


def _crossed(exc: Exception) -> Exception:
    """A timed-out wait as ``run()`` gets it: still a ``WorkflowTimeoutError`` to catch, named
    ``Error`` as on the platform, where the engine's error reaches the workflow across RPC and
    keeps only the built-in name (what an uncaught one leaves on the instance; semantics §2.8)."""
    if isinstance(exc, WorkflowTimeoutError):
        exc.name = "Error"   # type: ignore[misc] - the instance's, the class keeps its own
    return exc

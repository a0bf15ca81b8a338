"""One lifetime of an instance: a single execution of ``run()`` from the top, replaying what is
already committed and executing what is not.

Hibernation, the choice behind this module: a lifetime holds a coroutine only while it has work.
A sleep, a retry back-off or an event wait first writes its step row and a timer row, then waits
on an in-memory future. When no step attempt is in flight and the run is blocked on such waits
only, the lifetime *hibernates*: the run task is cancelled, the instance becomes ``waiting`` and
its lease is released, so a sleeping instance costs one row. When a timer fires (or an event
arrives) the step row is resolved in the database and the instance is queued; the next lifetime
replays ``run()`` and finds the step resolved. Keeping waits in memory instead was simpler but
made 10,000 sleeping tenants cost 10,000 coroutines and lost them on every restart.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from emulator.engine import progress
from emulator.engine.clock import to_datetime
from emulator.engine.control import event_value
from emulator.engine.durations import parse_duration
from emulator.engine.failures import (WorkflowFatalError, WorkflowTimeoutError, error_dict,
                                      is_non_retryable, rebuild)
from emulator.engine.limits import check_event_type, check_step_name, encode_json
from emulator.engine.retries import StepConfig, resolve_step_config
from emulator.engine.step import WorkflowStep
from emulator.engine.store import InstanceRow, StepKey, StepRow, Store
from emulator.engine.writes import LostOwnership
from emulator.errors import DynwfError, NotSerialisableError, PayloadTooLargeError

if TYPE_CHECKING:
    from emulator.engine.engine import Engine

RESOLVED = frozenset({"done", "failed", "ready"})
INTERNAL_ATTEMPT_ERROR = {"name": "WorkflowInternalError",
                          "message": "Attempt failed due to internal workflows error"}


class Lifetime:
    def __init__(self, engine: "Engine", row: InstanceRow, steps: dict[StepKey, StepRow], *,
                 step_limit: int, implicit_dependencies: bool) -> None:
        self.engine = engine
        self.row = row
        self.id = row.id
        self.generation = row.generation
        self.steps = steps
        self.step_limit = step_limit
        self.step = WorkflowStep(self, implicit_dependencies=implicit_dependencies)
        self._counts: dict[tuple[str, str], int] = {}
        self._do_steps = 0
        self.in_flight = 0
        self.waits: dict[StepKey, asyncio.Future[StepRow]] = {}
        self.pause_requested = row.status == "waitingForPause"
        self.stop_reason: str | None = None   # hibernate | pause | abandon | shutdown
        self.task: asyncio.Task[Any] | None = None
        self._check_scheduled = False
        self._guard = (row.id, engine.owner, row.generation)

    # ---- small helpers ---------------------------------------------------------------------

    @property
    def clock(self):
        return self.engine.clock

    def _key(self, kind: str, name: str) -> StepKey:
        count = self._counts.get((kind, name), 0) + 1
        self._counts[(kind, name)] = count
        return (kind, name, count)

    def _publish(self, kind: str, key: StepKey | None = None, **data: Any) -> None:
        if self.engine.progress.active:
            self.engine.progress.publish(progress.Progress(kind, self.id, self.clock.now_ms(), key, data))

    async def _commit(self, op: Callable[[Store], Any], key: StepKey | None = None) -> Any:
        """Run ``op`` in the next group commit if this lifetime still owns the instance."""
        try:
            return await self.engine.writes.submit(op, guard=self._guard,
                                                   key=(self.id, key) if key else None)
        except LostOwnership:
            self.stop("abandon")
            raise asyncio.CancelledError() from None

    def _note(self, op: Callable[[Store], Any], key: StepKey) -> None:
        """Queue a write without waiting for it (an attempt's start: bookkeeping, not a result)."""
        self.engine.writes.submit(op, wait=False, guard=self._guard, key=(self.id, key), note=True)

    async def _boundary(self) -> None:
        """Called before a step starts: a requested pause lets in-flight steps finish, starts
        nothing new, and takes effect when the last one commits."""
        if self.stop_reason:
            raise asyncio.CancelledError()
        if self.pause_requested:
            self.schedule_check()
            await asyncio.get_running_loop().create_future()  # cancelled when the pause lands

    def fatal(self, exc: DynwfError | str) -> WorkflowFatalError:
        message = exc.message if isinstance(exc, DynwfError) else exc
        code = exc.code if isinstance(exc, DynwfError) else "workflow.fatal"
        return WorkflowFatalError(message, code=code)

    # ---- quiescence: hibernate or pause ----------------------------------------------------

    def schedule_check(self) -> None:
        """Look again after the tasks that are ready now have run (gathered siblings start in
        the next loop iteration, so one iteration is not enough)."""
        if self._check_scheduled or self.stop_reason:
            return
        self._check_scheduled = True
        loop = asyncio.get_running_loop()
        loop.call_soon(loop.call_soon, self._check)

    def _check(self) -> None:
        self._check_scheduled = False
        if self.stop_reason or self.task is None or self.task.done() or self.in_flight:
            return
        if self.pause_requested:
            self.stop("pause")
        elif self.waits and all(not f.done() for f in self.waits.values()):
            self.stop("hibernate")

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            if self.task is not None and not self.task.done():
                self.task.cancel()

    def request_pause(self, requested: bool) -> None:
        self.pause_requested = requested
        if requested:
            self.schedule_check()

    async def _wait(self, key: StepKey) -> StepRow:
        current = self.engine.store.get_step(self.id, key)
        if current is not None and current.status in RESOLVED:
            self.steps[key] = current  # resolved before we got here (timer, or another process)
            return current
        future = asyncio.get_running_loop().create_future()
        self.waits[key] = future
        self.schedule_check()
        try:
            row = await future
        finally:
            self.waits.pop(key, None)
        self.steps[key] = row
        return row

    def wake(self, key: StepKey, row: StepRow) -> bool:
        """A timer or event resolved ``key``; True when this lifetime was waiting for it."""
        self.steps[key] = row
        future = self.waits.get(key)
        if future is None or future.done():
            return False
        future.set_result(row)
        return True

    # ---- step.do ---------------------------------------------------------------------------

    async def do(self, name: str, body: Callable[[dict[str, Any]], Awaitable[Any]],
                 raw_config: Any) -> Any:
        try:
            check_step_name(name)
        except DynwfError as exc:
            raise self.fatal(exc) from None
        key = self._key("do", name)
        await self._boundary()
        row = self.steps.get(key)
        if row is not None and row.status == "done":
            self._publish(progress.STEP_REPLAYED, key)
            return json.loads(row.result) if row.result is not None else None
        if row is not None and row.status == "failed":
            self._publish(progress.STEP_REPLAYED, key, failed=True)
            raise rebuild(json.loads(row.error))
        self._do_steps += 1
        if self._do_steps > self.step_limit:
            raise WorkflowFatalError(f"The limit of {self.step_limit} steps has been reached. This "
                                     "limit can be changed in your worker configuration.",
                                     code="step.limit_exceeded")
        if row is not None and row.config:
            config = StepConfig.from_dict(json.loads(row.config))
        else:
            try:
                config = resolve_step_config(raw_config, name)
            except DynwfError as exc:
                raise self.fatal(exc) from None
        config_json = config.json
        attempts = row.attempts if row is not None else 0
        if row is not None and row.status == "running":
            # The engine died during this attempt: it counts as failed, like the platform's
            # "Attempt failed due to internal workflows error".
            outcome = await self._after_failure(key, config, attempts, INTERNAL_ATTEMPT_ERROR, None)
            if outcome is not None:
                raise outcome
        elif row is not None and row.status == "backoff":
            await self._wait(key)
        while True:
            attempts += 1
            started = self.clock.now_ms()
            self._note(lambda s, a=attempts, t=started: s.put_step_txn(
                self.id, key, "running", t, attempts=a, config=config_json), key)
            self._publish(progress.STEP_STARTED, key, attempt=attempts, max_attempts=config.limit + 1)
            ctx = {"step": {"name": name, "count": key[2]}, "attempt": attempts,
                   "config": json.loads(config_json)}
            self.in_flight += 1
            try:
                try:
                    value = await self._attempt(body, ctx, config, name)
                    encoded = encode_json(value, what=f'The output of step "{name}"')
                finally:
                    self.in_flight -= 1
            except NotSerialisableError as exc:
                raise WorkflowFatalError(
                    f'The execution of the Workflow instance was terminated, as the step "{name}" '
                    f"returned a value which is not serialisable: {exc.message}",
                    code="step.not_serialisable") from None
            except Exception as exc:  # noqa: BLE001 - any user error is a failed attempt
                if isinstance(exc, PayloadTooLargeError):
                    exc = PayloadTooLargeError(f"Step {name}-{key[2]} output is too large: {exc.message}")
                outcome = await self._after_failure(key, config, attempts, error_dict(exc), exc)
                if outcome is not None:
                    raise outcome from exc
                continue
            finished = self.clock.now_ms()
            row = await self._commit(lambda s: self._store_step(
                s, key, "done", finished, attempts, config_json, result=encoded, ended=True), key)
            self._publish(progress.STEP_COMMITTED, key, attempt=attempts,
                          duration_ms=finished - started)
            self.schedule_check()
            return json.loads(encoded)

    async def _attempt(self, body: Callable[[dict[str, Any]], Awaitable[Any]], ctx: dict[str, Any],
                       config: StepConfig, name: str) -> Any:
        try:
            async with asyncio.timeout(config.timeout_ms / 1000):
                return await self.engine.run_step_body(self, body, ctx)
        except TimeoutError:
            raise WorkflowTimeoutError(f'Step "{name}" attempt {ctx["attempt"]} timed out after '
                                       f"{config.timeout_ms}ms") from None

    async def _after_failure(self, key: StepKey, config: StepConfig, attempts: int,
                             error: dict[str, str], exc: BaseException | None) -> Exception | None:
        """Record a failed attempt. Returns the error to raise into ``run()`` when the step is
        finished failing, or None after waiting out the back-off when it will be retried."""
        now = self.clock.now_ms()
        config_json = config.json
        error_json = json.dumps(error)
        retry = exc is None or not is_non_retryable(exc)
        if not retry or not config.will_retry(attempts):
            await self._commit(lambda s: self._store_step(
                s, key, "failed", now, attempts, config_json, error=error_json, ended=True), key)
            self._publish(progress.STEP_FAILED, key, attempt=attempts, error=error)
            self.schedule_check()
            return rebuild(error, exc)
        delay = config.delay_before_retry(attempts)
        due = now + delay
        self._publish(progress.STEP_ATTEMPT_FAILED, key, attempt=attempts,
                      max_attempts=config.limit + 1, error=error, next_attempt_at=due)
        if delay <= 0:
            return None

        def backoff(s: Store) -> StepRow:
            row = self._store_step(s, key, "backoff", now, attempts, config_json, error=error_json)
            s.add_timer_txn(self.id, "retry", key, due)
            return row
        await self._commit(backoff, key)
        self.engine.timer_added(due)
        await self._wait(key)
        return None

    def _store_step(self, store: Store, key: StepKey, status: str, now: int, attempts: int,
                    config: str | None, *, result: str | None = None, error: str | None = None,
                    event_type: str | None = None, duration_ms: int | None = None,
                    ended: bool = False) -> StepRow:
        store.put_step_txn(self.id, key, status, now, attempts=attempts, config=config, result=result,
                           error=error, event_type=event_type, duration_ms=duration_ms, ended=ended)
        row = StepRow(key[0], key[1], key[2], status, attempts, config, result, error, event_type,
                      duration_ms, now, now if ended else None)
        self.steps[key] = row
        return row

    # ---- sleeps ----------------------------------------------------------------------------

    async def sleep(self, name: str, duration: Any) -> None:
        try:
            check_step_name(name)
            ms = parse_duration(duration, what=f'sleep "{name}" duration')
        except DynwfError as exc:
            raise self.fatal(exc) from None
        await self._sleep(self._key("sleep", name), ms, self.clock.now_ms() + ms)

    async def sleep_until(self, name: str, timestamp: Any) -> None:
        try:
            check_step_name(name)
        except DynwfError as exc:
            raise self.fatal(exc) from None
        if isinstance(timestamp, datetime):
            aware = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=timezone.utc)
            due = round(aware.timestamp() * 1000)
        elif isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool):
            due = round(timestamp)  # epoch milliseconds, as the runtime reads a number
        else:
            raise self.fatal(f'sleep_until "{name}" needs a datetime or epoch milliseconds, '
                             f"not {type(timestamp).__name__}")
        await self._sleep(self._key("sleep", name), None, due)

    async def _sleep(self, key: StepKey, ms: int | None, due: int) -> None:
        await self._boundary()
        row = self.steps.get(key)
        if row is not None:
            if ms is not None and row.duration_ms is not None and row.duration_ms != ms:
                self.engine.log(self.id, key, "warning",
                                f'sleep "{key[1]}" changed from {row.duration_ms}ms to {ms}ms since '
                                "it started; the original duration is kept")
            if row.status == "done":
                self._publish(progress.STEP_REPLAYED, key)
                return
            self._publish(progress.STEP_SLEEPING, key, until=self._timer_due(key))
            await self._wait(key)
            return
        now = self.clock.now_ms()
        if due <= now:
            await self._commit(lambda s: self._store_step(s, key, "done", now, 0, None,
                                                          duration_ms=ms, ended=True))
            return

        def start(s: Store) -> None:
            self._store_step(s, key, "sleeping", now, 0, None, duration_ms=ms)
            s.add_timer_txn(self.id, "sleep", key, due)
        await self._commit(start)
        self.engine.timer_added(due)
        self._publish(progress.STEP_SLEEPING, key, until=due)
        await self._wait(key)

    def _timer_due(self, key: StepKey) -> int | None:
        timers = [t.due for t in self.engine.store.timers_of(self.id) if t.step == key]
        return timers[0] if timers else None

    # ---- events ----------------------------------------------------------------------------

    async def wait_for_event(self, name: str, event_type: Any, timeout: Any) -> dict[str, Any]:
        try:
            check_step_name(name)
            check_event_type(event_type)
            timeout_ms = parse_duration(timeout, what=f'wait_for_event "{name}" timeout')
        except DynwfError as exc:
            raise self.fatal(exc) from None
        key = self._key("wait", name)
        await self._boundary()
        row = self.steps.get(key)
        if row is None:
            now = self.clock.now_ms()

            def start(s: Store) -> StepRow:
                taken = s.take_event_txn(self.id, event_type)
                if taken is not None:
                    value = event_value(json.loads(taken[0]), event_type, taken[1])
                    return self._store_step(s, key, "done", now, 0, None, result=json.dumps(value),
                                            event_type=event_type, ended=True)
                s.add_timer_txn(self.id, "event_timeout", key, now + timeout_ms)
                return self._store_step(s, key, "waiting", now, 0, None, event_type=event_type,
                                        duration_ms=timeout_ms)
            row = await self._commit(start)
            if row.status == "waiting":
                self.engine.timer_added(now + timeout_ms)
        elif row.status in ("done", "failed"):
            self._publish(progress.STEP_REPLAYED, key)
        if row.status == "waiting":
            self._publish(progress.STEP_WAITING, key, event_type=event_type,
                          timeout_at=self._timer_due(key))
            row = await self._wait(key)
        if row.status == "failed":
            raise rebuild(json.loads(row.error))
        value = json.loads(row.result)
        value["timestamp"] = to_datetime(value["timestamp"])
        return value


def timeout_error(timeout_ms: int | None) -> dict[str, str]:
    return {"name": "WorkflowTimeoutError", "message": f"Execution timed out after {timeout_ms}ms"}


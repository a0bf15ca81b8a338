"""One lifetime of an instance: a single execution of ``run()`` from the top, replaying what is
already committed and executing what is not. The engine's half of the step semantics lives here
(see ``client.py`` for the half that runs beside the workflow's code).

Hibernation, the choice behind this module: a lifetime holds a coroutine only while it has work.
A sleep, a retry back-off or an event wait first writes its step row and a timer row, then waits
on an in-memory future. When no step attempt is in flight and the run is blocked on such waits
only, the lifetime *hibernates*: its tasks are cancelled, the instance becomes ``waiting`` and its
lease is released, so a sleeping instance costs one row. When a timer fires (or an event arrives)
the step row is resolved in the database and the instance is queued; the next lifetime replays
``run()`` and finds the step resolved. Keeping waits in memory instead was simpler but made
10,000 sleeping tenants cost 10,000 coroutines and lost them on every restart.

One wait is *held* instead: a retry back-off no longer than ``RETRY_IN_INVOCATION_MS``. On the
platform a step's retries happen inside the same invocation, so ``run()``'s closure survives
them; replaying after each back-off lost that state. A held back-off is written exactly like
any other (the failed attempt, the step's ``backoff`` row and its timer commit before the wait),
so a crash during it loses nothing and the next lifetime makes the retry when its time comes;
only the lifetime stays, ``running``, with its lease, until the timer fires. The engine's
fast-forward counts a lifetime that holds nothing but such waits as idle (``is_holding``).
"""

from __future__ import annotations

import asyncio
import json
import weakref
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Callable

from emulator.defaults import RETRY_IN_INVOCATION_MS
from emulator.engine import progress
from emulator.sdk.client import CachedStep, StepClient
from emulator.engine.control import event_value
from emulator.rules import states
from emulator.rules.redaction import is_output_sensitive
from emulator.rules.limits import encode_json
from emulator.rules.retries import StepConfig, config_from_json
from emulator.rules.steps import StepStatus, TimerKind
from emulator.sdk.step import WorkflowStep
from emulator.engine.store import InstanceRow, StepKey, StepRow, Store
from emulator.engine.writes import LostOwnership

if TYPE_CHECKING:
    from emulator.engine.engine import Engine

RESOLVED = frozenset({StepStatus.DONE, StepStatus.FAILED, StepStatus.READY})


class StopReason(StrEnum):
    """Why a lifetime cancelled its run; the engine writes what each means (``Engine._stopped``)."""

    HIBERNATE = "hibernate"   # every wait of the run is long: the run ends, a timer or event resumes it
    PAUSE = "pause"           # a pause was requested and no step is in flight
    ABANDON = "abandon"       # the lease is lost (another engine, a restart): write nothing more
    SHUTDOWN = "shutdown"     # the engine stops: the instance is left for the next to claim
    ISOLATE = "isolate"       # the isolate died under the run (``Engine._isolate_lost``)
    ROLLBACK = "rollback"     # the rollback phase is over: the engine ends the instance


class Lifetime:
    """The engine side of one run: the :class:`~emulator.sdk.client.StepBackend` of its client."""

    def __init__(self, engine: "Engine", row: InstanceRow, steps: dict[StepKey, StepRow], *,
                 step_limit: int, implicit_dependencies: bool) -> None:
        self.engine = engine
        self.row = row
        self.id = row.id
        self.generation = row.generation
        self.steps = steps
        cache = {key: CachedStep(r.status, r.attempts, r.config, r.result, r.error, r.rollback)
                 for key, r in steps.items()}
        #: the rollback phase this lifetime runs, when its instance is in one (sdk/rollbacks.py)
        self.rollback_phase: dict[str, Any] | None = rollback_in_progress(row.rollback)
        self.client = StepClient(self, row.id, cache, step_limit=step_limit,
                                 on_replay=self._on_replay, code_version=row.code_version,
                                 mocks=engine.modifiers.step_mocks(row.id),
                                 rollback_phase=self.rollback_phase)
        self.step = WorkflowStep(self.client, implicit_dependencies=implicit_dependencies)
        self.attempting: dict[StepKey, tuple[int, str, int]] = {}  # key -> attempt, config, start
        # steps the code cancelled in this lifetime: known at once, before the write lands
        self.cancelled_keys: set[StepKey] = set()
        #: steps whose attempt has ended and whose outcome is being committed: still in flight
        #: for a pause or a hibernation, which must not land before the outcome is recorded
        self.committing: set[StepKey] = set()
        self.waits: dict[StepKey, asyncio.Future[StepRow]] = {}
        self.held: set[StepKey] = set()   # waits that keep the invocation: short back-offs
        self.pause_requested = row.status == states.WAITING_FOR_PAUSE
        self.stop_reason: StopReason | None = None
        self.task: asyncio.Task[Any] | None = None       # run()'s own task
        self.runner: asyncio.Task[Any] | None = None     # the engine's task around it
        self.handlers: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._check_scheduled = False
        self.hibernated_waits: list[StepKey] = []
        self._guard = (row.id, engine.owner, row.generation)

    # ---- small helpers ---------------------------------------------------------------------

    @property
    def clock(self):
        return self.engine.clock

    @property
    def in_flight(self) -> int:
        return len(self.attempting)

    def now_ms(self) -> int:
        return self.clock.now_ms()

    @property
    def is_holding(self) -> bool:
        """Alive only to wait out back-offs held in the invocation: nothing runs until a timer
        fires, so fast-forward may end one now (``Engine.drain``)."""
        return bool(self.held) and not self.attempting and not self.stop_reason \
            and not self.pause_requested and not self._check_scheduled \
            and all(not f.done() for f in self.waits.values())

    def _publish(self, kind: str, key: StepKey | None = None, *, at: int | None = None,
                 **data: Any) -> None:
        """Tell subscribers; ``at`` is when it happened (the time its figures were computed
        from), read from the clock when not given."""
        if self.engine.progress.active:
            when = self.clock.now_ms() if at is None else at
            self.engine.progress.publish(progress.Progress(kind, self.id, when, key, data))

    def _on_replay(self, key: StepKey) -> None:
        self._publish(progress.STEP_REPLAYED, key)

    def _enter(self) -> None:
        """Remember the calling task: stopping the lifetime cancels it too (remote callers and
        gathered branches run in tasks of their own)."""
        task = asyncio.current_task()
        if task is not None and task is not self.task:
            self.handlers.add(task)
        if self.stop_reason:
            raise asyncio.CancelledError()

    async def _commit(self, op: Callable[[Store], Any], key: StepKey | None = None) -> Any:
        """Run ``op`` in the next group commit if this lifetime still owns the instance."""
        try:
            return await self.engine.writes.submit(op, guard=self._guard,
                                                   key=(self.id, key) if key else None)
        except LostOwnership:
            self.stop(StopReason.ABANDON)
            raise asyncio.CancelledError() from None

    async def _commit_outcome(self, op: Callable[[Store], Any], key: StepKey) -> Any:
        self.committing.add(key)
        try:
            return await self._commit(op, key)
        finally:
            self.committing.discard(key)

    def _note(self, op: Callable[[Store], Any], key: StepKey) -> None:
        """Queue a write without waiting for it (an attempt's start: bookkeeping, not a result)."""
        self.engine.writes.submit(op, wait=False, guard=self._guard, key=(self.id, key), note=True)

    def _store_step(self, store: Store, key: StepKey, status: str, now: int, attempts: int,
                    config: str | None, *, result: str | None = None, error: str | None = None,
                    event_type: str | None = None, duration_ms: int | None = None,
                    ended: bool = False) -> StepRow:
        before = self.steps.get(key)
        # the rollback config too: the attempt's start note that carried it may be superseded
        store.put_step_txn(self.id, key, status, now, attempts=attempts, config=config, result=result,
                           error=error, event_type=event_type, duration_ms=duration_ms, ended=ended,
                           rollback=before.rollback if before is not None else None)
        row = StepRow(key[0], key[1], key[2], status, attempts, config, result, error, event_type,
                      duration_ms, now, now if ended else None,
                      before.rollback if before is not None else None)
        self.steps[key] = row
        return row

    # ---- quiescence: hibernate or pause ----------------------------------------------------

    async def boundary(self) -> None:
        """Before a step starts: a requested pause lets in-flight steps finish, starts nothing
        new, and takes effect when the last one commits; an engine that drains holds the step
        the same way until it stops the lifetime."""
        self._enter()
        if self.pause_requested:
            self.schedule_check()
            await asyncio.get_running_loop().create_future()  # cancelled when the pause lands
        if self.engine.draining:
            # the engine is stopping (Engine.drain_steps): hold here until it stops this lifetime
            await asyncio.get_running_loop().create_future()

    async def _answer(self, value: Any = None) -> Any:
        """Return ``value`` to the workflow's code, unless a pause was requested: then hold it
        back until the pause lands (which stops this lifetime; the next one replays up to here).
        Holding the answer is what keeps a pause a step boundary where the code runs apart from
        the engine (an isolate, inline or not): its next step cannot start without it."""
        if self.pause_requested or self.engine.draining:
            await self.boundary()
        return value

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
        if self.stop_reason or self.task is None or self.task.done() or self.attempting \
                or self.committing:
            return
        if self.pause_requested:
            self.stop(StopReason.PAUSE)
        elif self.waits and not self.held and all(not f.done() for f in self.waits.values()):
            # cancelling empties self.waits: keep the keys, so the engine can see whether one of
            # them was resolved while the lifetime was stopping
            self.hibernated_waits = list(self.waits)
            self.stop(StopReason.HIBERNATE)

    def stop(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            for task in (self.task, *self.handlers):
                if task is not None and not task.done():
                    task.cancel()

    def request_pause(self, requested: bool) -> None:
        self.pause_requested = requested
        if requested:
            self.schedule_check()

    async def _wait(self, key: StepKey, *, hold: bool = False) -> StepRow:
        """Wait until ``key`` is resolved; ``hold`` keeps the invocation meanwhile (a short
        back-off) where any other wait lets the lifetime hibernate."""
        current = self.engine.store.get_step(self.id, key)
        if current is not None and current.status in RESOLVED:
            self.steps[key] = current  # resolved before we got here (timer, or another process)
            return current
        future = asyncio.get_running_loop().create_future()
        self.waits[key] = future
        if hold:
            self.held.add(key)
        self.schedule_check()
        try:
            row = await future
        finally:
            self.waits.pop(key, None)
            self.held.discard(key)
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

    # ---- the StepBackend ---------------------------------------------------------------------

    def log(self, key: StepKey | None, level: str, message: str) -> None:
        self.engine.log(self.id, key, level, message)

    def record_code_version(self, version: str) -> None:
        if self.row.code_version is None:
            self.row.code_version = version
            self.engine.writes.submit(lambda s: s.set_code_version_txn(self.id, version), wait=False)

    def begin(self, key: StepKey, attempt: int, config_json: str,
              rollback_json: str | None = None) -> None:
        started = self.clock.now_ms()
        self.attempting[key] = (attempt, config_json, started)
        self.cancelled_keys.discard(key)
        before = self.steps.get(key)
        if rollback_json is not None and before is None:
            self.steps[key] = StepRow(key[0], key[1], key[2], StepStatus.RUNNING, attempt, config_json,
                                      None, None, None, None, started, None, rollback_json)
        elif rollback_json is not None and before is not None and before.rollback is None:
            before.rollback = rollback_json
        self._note(lambda s: s.put_step_txn(self.id, key, StepStatus.RUNNING, started, attempts=attempt,
                                            config=config_json, rollback=rollback_json), key)
        self._publish(progress.STEP_STARTED, key, attempt=attempt,
                      max_attempts=config_from_json(config_json).limit + 1)

    def cancelled(self, key: StepKey, attempt: int) -> None:
        """The workflow's code cancelled an attempt in flight: recorded as ``cancelled`` (never
        retried; a result arriving later is dropped), so the instance's status follows its real
        waits again. A cancellation caused by this lifetime stopping is not the code's doing: the
        attempt stays ``running`` and counts as cut off."""
        if self.stop_reason or key not in self.attempting:
            return
        # the attempt this lifetime began is the one recorded: the caller's number is not trusted
        attempt, config_json, started = self.attempting.pop(key)
        self.cancelled_keys.add(key)
        now = self.clock.now_ms()
        self._note(lambda s: self._store_step(s, key, StepStatus.CANCELLED, now, attempt, config_json,
                                              ended=True), key)
        self._publish(progress.STEP_CANCELLED, key, attempt=attempt,
                      duration_ms=now - started if started is not None else None)
        self.schedule_check()

    async def end_rollbacks(self) -> None:
        """The step client ran the rollback phase: the engine writes its outcome and ends the
        instance (``Engine._end_rollback_phase``)."""
        self._enter()
        if self.rollback_phase is not None:
            self.stop(StopReason.ROLLBACK)
        await asyncio.get_running_loop().create_future()

    async def settle(self, key: StepKey, attempt: int, config_json: str, result: str | None,
                     error: dict[str, str] | None, retryable: bool,
                     delay_ms: int | None = None) -> dict[str, Any]:
        self._enter()
        if key not in self.attempting and (key in self.cancelled_keys or (
                self.steps.get(key) is not None and self.steps[key].status == StepStatus.CANCELLED)):
            return {"status": StepStatus.CANCELLED}   # its code gave up on it: the outcome is dropped
        started = self.attempting.pop(key, (0, "", None))[2]
        now = self.clock.now_ms()
        if error is None:
            await self._commit_outcome(lambda s: self._store_step(
                s, key, StepStatus.DONE, now, attempt, config_json, result=result, ended=True), key)
            # a progress event never carries a step's output; a sensitive one says it is
            # redacted, so a viewer can say why none is shown (rules/redaction.py)
            flags = {"sensitive": True} if is_output_sensitive(config_json) else {}
            self._publish(progress.STEP_COMMITTED, key, at=now, attempt=attempt,
                          duration_ms=now - started if started is not None else None, **flags)
            self.schedule_check()
            return await self._answer({"status": StepStatus.DONE})
        config = config_from_json(config_json)
        # the step's row keeps the platform's {"name", "message"} (what replays raise and
        # status() shows); the attempt's row keeps all of it, its traceback too
        error_json = json.dumps({"name": error["name"], "message": error["message"]})
        attempt_json = json.dumps(error)
        delay = self.retry_delay(key, config, attempt, retryable=retryable, base_ms=delay_ms)
        if delay is None:
            def failed(s: Store) -> StepRow:
                s.add_attempt_txn(self.id, key, attempt, attempt_json, now)
                return self._store_step(s, key, StepStatus.FAILED, now, attempt, config_json,
                                        error=error_json, ended=True)
            await self._commit_outcome(failed, key)
            self._publish(progress.STEP_FAILED, key, attempt=attempt, error=error)
            self.schedule_check()
            return await self._answer({"status": StepStatus.FAILED})
        due = now + delay
        self._publish(progress.STEP_ATTEMPT_FAILED, key, at=now, attempt=attempt,
                      max_attempts=config.limit + 1, error=error, next_attempt_at=due)
        if delay <= 0:
            # no back-off to record on the step's row: the failed attempt alone is kept
            self._note(lambda s: s.add_attempt_txn(self.id, key, attempt, attempt_json, now), key)
            return await self._answer({"status": "retry"})

        def backoff(s: Store) -> StepRow:
            s.add_attempt_txn(self.id, key, attempt, attempt_json, now)
            row = self._store_step(s, key, StepStatus.BACKOFF, now, attempt, config_json, error=error_json)
            s.add_timer_txn(self.id, TimerKind.RETRY, key, due)
            return row
        await self._commit(backoff, key)
        self.engine.timer_added(due)
        await self._wait(key, hold=delay <= RETRY_IN_INVOCATION_MS)
        return await self._answer({"status": "retry"})

    def retry_delay(self, key: StepKey, config: StepConfig, failed_attempt: int, *,
                    retryable: bool = True, base_ms: int | None = None) -> int | None:
        """The engine's answer to a failed attempt of step ``key``: None when the step has failed
        for good, else the milliseconds before its next attempt: the config's back-off
        (``rules/retries.py``), or none at all when a test modifier disables the step's retry
        delays. For an attempt that failed here and one lost with its isolate alike. ``base_ms`` is
        what the step's delay function returned (the back-off applies to it)."""
        delay = config.retry_delay(failed_attempt, retryable=retryable, base_ms=base_ms)
        if delay and self.engine.modifiers.retry_delay_disabled(self.id, key):
            return 0  # a test modifier: retry at once
        return delay

    async def await_retry(self, key: StepKey) -> None:
        """A replay reached a step backing off (after an engine stop, a crash, a pause, or a
        hibernated long back-off): what is left of it is held when short enough."""
        self._enter()
        due = self._timer_due(key)
        await self._wait(key, hold=due is not None and due - self.now_ms() <= RETRY_IN_INVOCATION_MS)
        await self._answer()

    async def sleep(self, key: StepKey, duration_ms: int | None, due: int | None) -> None:
        self._enter()
        row = self.steps.get(key)
        if row is not None:
            if duration_ms is not None and row.duration_ms is not None and row.duration_ms != duration_ms:
                self.engine.log(self.id, key, "warning",
                                f'sleep "{key[1]}" changed from {row.duration_ms}ms to {duration_ms}ms '
                                "since it started; the original duration is kept")
            if row.status == StepStatus.DONE:
                return await self._answer()
            self._publish(progress.STEP_SLEEPING, key, until=self._timer_due(key))
            await self._wait(key)
            return await self._answer()
        now = self.clock.now_ms()
        if due is None:
            due = now + (duration_ms or 0)
        if self.engine.modifiers.sleep_disabled(self.id, key):
            due = now  # a test modifier: the sleep ends at once
        if due <= now:
            await self._commit(lambda s: self._store_step(s, key, StepStatus.DONE, now, 0, None,
                                                          duration_ms=duration_ms, ended=True))
            return await self._answer()

        # the length asked for, also for sleep_until: so its end can be told apart from an
        # early one (fast-forward, instances wake)
        asked = duration_ms if duration_ms is not None else due - now

        def start(s: Store) -> None:
            self._store_step(s, key, StepStatus.SLEEPING, now, 0, None, duration_ms=asked)
            s.add_timer_txn(self.id, TimerKind.SLEEP, key, due)
        await self._commit(start)
        self.engine.timer_added(due)
        self._publish(progress.STEP_SLEEPING, key, at=now, until=due)
        await self._wait(key)
        await self._answer()

    def _timer_due(self, key: StepKey) -> int | None:
        timers = [t.due for t in self.engine.store.timers_of(self.id) if t.step == key]
        return timers[0] if timers else None

    async def wait_for_event(self, key: StepKey, event_type: str, timeout_ms: int) -> dict[str, Any]:
        self._enter()
        row = self.steps.get(key)
        if row is None:
            now = self.clock.now_ms()

            # test modifiers: a forced timeout, or a mocked event, answers the wait at once
            forced = self.engine.modifiers.event_timeout_forced(self.id, key)
            mocked, payload = (False, None) if forced else \
                self.engine.modifiers.take_event(self.id, event_type)

            def start(s: Store) -> StepRow:
                if forced:
                    return self._store_step(s, key, StepStatus.FAILED, now, 0, None,
                                            error=json.dumps(timeout_error(timeout_ms)),
                                            event_type=event_type, duration_ms=timeout_ms,
                                            ended=True)
                taken = (encode_json(payload, what="a mocked event's payload"), now) if mocked \
                    else s.take_event_txn(self.id, event_type)
                if taken is not None:
                    value = event_value(json.loads(taken[0]), event_type, taken[1])
                    return self._store_step(s, key, StepStatus.DONE, now, 0, None, result=json.dumps(value),
                                            event_type=event_type, ended=True)
                s.add_timer_txn(self.id, TimerKind.EVENT_TIMEOUT, key, now + timeout_ms)
                return self._store_step(s, key, StepStatus.WAITING, now, 0, None, event_type=event_type,
                                        duration_ms=timeout_ms)
            row = await self._commit(start)
            if row.status == StepStatus.WAITING:
                self.engine.timer_added(now + timeout_ms)
        if row.status == StepStatus.WAITING:
            self._publish(progress.STEP_WAITING, key, event_type=event_type,
                          timeout_at=self._timer_due(key))
            row = await self._wait(key)
        return await self._answer({"status": row.status, "result": row.result, "error": row.error})


def rollback_in_progress(column: str | None) -> dict[str, Any] | None:
    """The instance's rollback phase (its ``rollback`` column) while it has no outcome yet."""
    if column is None:
        return None
    phase = json.loads(column)
    return phase if phase.get("outcome") is None else None


def timeout_error(timeout_ms: int | None) -> dict[str, str]:
    return {"name": "WorkflowTimeoutError", "message": f"Execution timed out after {timeout_ms}ms"}

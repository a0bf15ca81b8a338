"""The durable engine: leases instances, runs their lifetimes, fires timers, groups commits.

One asyncio task (the scheduler) does the bookkeeping; each running instance is one more task.
Throughput comes from many instances in flight with their step commits grouped: every write
queued during one loop iteration lands in one ``BEGIN IMMEDIATE`` transaction and each writer
is answered only after that transaction commits (docs/architecture.md §8). A single commit per step was
measured at ~3,500 steps/s here; grouping is what lets the engine go past that with many
instances in flight.

Several engines (processes) may share one database file: an engine claims an instance with a
lease (wall-clock expiry, renewed while it runs) and every commit of a lifetime re-checks that
lease and the instance's generation, so a terminated, restarted or stolen instance is never
written by a stale engine. Changes made by other processes are noticed through SQLite's
``PRAGMA data_version`` on each poll. On PostgreSQL the other hosts' changes are also pushed
(``engine/wakeups.py``): while that channel listens, the engine hears a create, an event, a pause
or a released lease at once, brings only the named instance's lifetime in line, and keeps the
full look at every live lifetime for a slower safety poll (:data:`LISTENING_SYNC_MS`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, TypeGuard

from emulator.engine import progress
from emulator.rules import states
from emulator.clock import Clock, SystemClock, to_datetime
from emulator.defaults import ENGINE_CONCURRENCY, LEASE_MS, POLL_MS
from emulator.engine.control import Control, check_batch_ids
from emulator.sdk.failures import UnknownWorkflowError, WorkflowFatalError, error_dict
from emulator.tracebacks import traceback_of
from emulator.engine.lifetime import RESOLVED, Lifetime, StopReason, timeout_error
from emulator.engine.modifiers import Modifiers
from emulator.engine.writes import WriteBatcher
from emulator.rules.limits import DEFAULT_STEP_LIMIT, MAX_LOG_LINE_CHARS, encode_json, utf8_size
from emulator.engine.logs import LogQuota, Marker
from emulator.rules.logs import LogLevel
from emulator.rules.retries import config_from_json
from emulator.rules.steps import SKIPPABLE, StepKind, StepStatus, TimerKind
from emulator.rules.values import decode_json, display_json
from emulator.sdk.step import uses_implicit_dependencies
from emulator.engine.store import InstanceRow, StepKey, StepRow, Store, TimerRow
from emulator.engine.stores import open_store
from emulator.errors import DynwfError, NotSerialisableError, PayloadTooLargeError
from emulator.error_codes import ISOLATE_FAULTS, Code, code_of

RunnerFactory = Callable[[InstanceRow], Any]  # -> an object with (async) run(event, step)
#: While cross-host wake-ups are heard, how often every live lifetime is still checked against
#: the database (a missed notification costs at most this); without them, every ``poll_ms``.
LISTENING_SYNC_MS = 2_000
#: How soon the scheduler looks again at a due timer it left to another engine (or found held by
#: another transaction): soon, but not at once, which would spin the loop on database round trips.
TIMER_RECHECK_MS = 5
#: Isolate crashes outside any step, with no step committed in between, that an instance
#: survives by replaying; one more errors it (see Engine._replays_after_crash).
CRASH_REPLAYS = 3


@dataclass(slots=True)
class WorkflowDefinition:
    """What the engine needs to run instances of one workflow."""

    name: str
    factory: RunnerFactory
    step_limit: int = DEFAULT_STEP_LIMIT
    compatibility_date: str | None = None


class Engine:
    """Runs workflow instances stored in one SQLite file."""

    def __init__(self, store: Store | str | Path, workflows: Iterable[WorkflowDefinition] = (), *,
                 clock: Clock | None = None, owner: str | None = None, lease_ms: int = LEASE_MS,
                 poll_ms: int = POLL_MS, concurrency: int = ENGINE_CONCURRENCY,
                 only: Iterable[str] | None = None) -> None:
        self.store = store if isinstance(store, Store) else open_store(store)
        self.clock = clock or SystemClock()
        self.owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lease_ms = lease_ms
        self.poll_ms = poll_ms
        self.concurrency = concurrency
        self.only = set(only) if only is not None else None
        self.workflows: dict[str, WorkflowDefinition] = {w.name: w for w in workflows}
        self.progress = progress.Broadcaster()
        self.control = Control(self.store, self.clock, on_change=self._on_change)
        self.live: dict[str, Lifetime] = {}
        self.writes = WriteBatcher(self.store)
        self.log_quota = LogQuota()
        #: test modifiers (docs/semantics.md §7.3), consulted by lifetimes and step clients at named points
        self.modifiers = Modifiers(self)
        self._wake: asyncio.Event | None = None
        self._data_version = -1
        self._next_renewal = 0
        self._next_poll = 0
        self._maybe_runnable = True
        # instance id -> (steps done, crashes outside any step since that count last grew)
        self._crashes_outside_steps: dict[str, tuple[int, int]] = {}
        self._lifetime_tasks: set[asyncio.Task[None]] = set()
        #: set by :meth:`drain_steps`: nothing new is claimed and no new step starts here
        self.draining = False
        #: instances this engine claimed from another engine whose lease had expired
        self.lease_takeovers = 0
        #: told (instance id, the previous owner) of each such takeover
        self.on_takeover: Callable[[str, str], None] | None = None
        #: whether other hosts' changes are pushed to this engine now (PostgreSQL's LISTEN)
        self.listening = False
        #: how many times that channel was lost (polling meanwhile), and changes heard through it
        self.listen_losses = 0
        self.changes_heard = 0
        #: told (listening, reason) each time the channel comes up or goes down
        self.on_listen: Callable[[bool, str | None], None] | None = None
        self._listener: Any = None
        #: scheduler rounds that raised (the scheduler goes on), and who is told of each
        self.tick_failures = 0
        self.on_tick_failure: Callable[[BaseException], None] | None = None
        self._next_sync = 0
        self._left_due = False

    # ---- registration and bindings ---------------------------------------------------------

    def register(self, definition: WorkflowDefinition) -> None:
        self.workflows[definition.name] = definition

    def binding(self, workflow: str):
        """The ``env.<BINDING>`` object for ``workflow`` (create, create_batch, get)."""
        from emulator.engine.binding import WorkflowBinding
        return WorkflowBinding(self, workflow)

    async def delete(self, instance_id: str) -> None:
        """Delete the instance (``Control.delete``) and return once a lifetime of this engine
        that ran it has stopped. Called from that run itself (the instance deletes itself), the
        call does not return: the run is cancelled at this await, so nothing after it runs."""
        lifetime = self.live.get(instance_id)
        self.control.delete(instance_id)
        await _wound_down([lifetime])

    async def delete_batch(self, ids: Any, workflow: str | None = None) -> dict[str, Any]:
        """``Control.delete_batch`` of ``workflow``'s instances by the ids its binding knows them
        by (of any workflow by engine key, when None); returns once this engine's lifetimes of
        the deleted ones have stopped."""
        def key_of(instance_id: str) -> str | None:
            row = self.store.find_instance(instance_id) if workflow is None \
                else self.store.find_in_workflow(workflow, instance_id)
            return row.id if row is not None else None
        keys = {i: key_of(i) for i in check_batch_ids(ids)}
        lifetimes = {key: self.live.get(key) for key in keys.values() if key is not None}
        result = self.control.delete_batch(ids, key_of=keys.get)
        await _wound_down([lifetimes.get(keys[d["id"]]) for d in result["deleted"]])
        return result

    # ---- ownership -------------------------------------------------------------------------

    def _owns(self, row: InstanceRow | None, generation: int) -> TypeGuard[InstanceRow]:
        """Whether a lifetime of this engine still runs ``generation`` of the instance in ``row``:
        the lease is this engine's, no restart began a newer generation, and the status is one a
        lifetime runs in. A lifetime's last writes (finish, stop, the loss of its isolate) check
        it before they land; ``Store.owned_txn`` asks the same in SQL for a running lifetime's
        group commits."""
        return row is not None and row.generation == generation \
            and row.lease_owner == self.owner and row.status in states.LIVE

    def _owned_elsewhere(self, row: InstanceRow, real_ms: int) -> bool:
        """Whether a live lifetime in another engine owns the instance in ``row``: its lease is
        another engine's and has not expired (by the wall clock, as leases are kept)."""
        return row.lease_owner not in (None, self.owner) \
            and (row.lease_expiry or 0) >= self.store.lease_clock_ms(real_ms)

    # ---- notifications ---------------------------------------------------------------------

    def _signal(self) -> None:
        self._maybe_runnable = True
        if self._wake is not None:
            self._wake.set()

    def timer_added(self, due: int) -> None:
        if self._wake is not None:
            self._wake.set()

    def _on_change(self, instance_id: str, what: str) -> None:
        """An operation in this process changed ``instance_id``; react without waiting for a poll."""
        if what == "created":
            self.modifiers.instance_created(instance_id)
        elif what == "delete":
            self._forget(instance_id)
        elif what == "restart":
            self.modifiers.instance_restarted(instance_id)
        lifetime = self.live.get(instance_id)
        if lifetime is not None:
            self._sync_lifetime(lifetime)
        self._publish_status(instance_id, states.QUEUED if what == "created" else None)
        self._signal()

    def _heard(self, instance_id: str, what: str) -> None:
        """Another process changed ``instance_id`` (``what``: created, event, pause, ...; or
        ``released``, leases handed back by a stopping host): react as to a change made here."""
        self.changes_heard += 1
        if what == "delete":
            self._forget(instance_id)
        lifetime = self.live.get(instance_id)
        if lifetime is not None:
            self._sync_lifetime(lifetime)
        self._signal()

    def _forget(self, instance_id: str) -> None:
        """A deleted instance leaves nothing behind in this engine: its log quota, its crash
        count and its test modifiers (an instance created again with the id starts afresh)."""
        self.log_quota.forget(instance_id)
        self._crashes_outside_steps.pop(instance_id, None)
        self.modifiers.discard(instance_id)

    def _listen_state(self, listening: bool, reason: str | None) -> None:
        if listening == self.listening:
            return
        self.listening = listening
        if not listening:
            self.listen_losses += 1
        # heard nothing meanwhile, or about to poll: look at everything at once
        self._data_version = -1
        self._next_poll = 0
        self._signal()
        if self.on_listen is not None:
            try:
                self.on_listen(listening, reason)
            except Exception:  # a broken listener must never stop the engine
                pass

    def _start_listening(self) -> None:
        loop = asyncio.get_running_loop()

        def on_change(instance_id: str, what: str) -> None:
            loop.call_soon_threadsafe(self._heard, instance_id, what)

        def on_state(listening: bool, reason: str | None) -> None:
            loop.call_soon_threadsafe(self._listen_state, listening, reason)
        self._listener = self.store.listen(on_change, on_state)

    @property
    def has_wakeups(self) -> bool:
        """Whether this engine's store pushes other processes' changes to it (PostgreSQL)."""
        return self._listener is not None

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.listening = False

    def _publish_status(self, instance_id: str, status: str | None = None) -> None:
        """Tell subscribers the instance's status (read from the store unless given)."""
        if not self.progress.active:
            return
        if status is None:
            row = self.store.find_instance(instance_id)
            if row is None:
                return
            status = row.status
        self.progress.publish(progress.Progress(progress.INSTANCE_STATUS, instance_id,
                                                self.clock.now_ms(), None, {"status": status}))

    def _sync_lifetime(self, lifetime: Lifetime) -> None:
        """Bring a live lifetime in line with what the database says about its instance."""
        row = self.store.find_instance(lifetime.id)
        if not self._owns(row, lifetime.generation):
            lifetime.stop(StopReason.ABANDON)
            return
        lifetime.request_pause(row.status == states.WAITING_FOR_PAUSE)
        for key in list(lifetime.waits):
            step = self.store.get_step(lifetime.id, key)
            if step is not None and step.status in RESOLVED:
                lifetime.wake(key, step)

    def log(self, instance_id: str, step: StepKey | None, level: str, message: str) -> None:
        """Write a line of ``instance_id``'s log, within its quota (``logs.py``)."""
        message = message[:MAX_LOG_LINE_CHARS]
        admitted = self.log_quota.admit(instance_id, step, utf8_size(message))
        if admitted is False:
            return
        now = self.clock.now_ms()
        if admitted is True:
            self.writes.submit(lambda s: s.add_log_txn(instance_id, step, level, message, now),
                               wait=False)
        else:  # the first line past a quota: the marker that stands for the dropped ones
            marker = admitted
            level, message = LogLevel.WARNING.value, marker.text(counts=False)
            written = self.writes.submit(
                lambda s: s.add_log_txn(instance_id, step, level, message, now))
            written.add_done_callback(lambda done: _marker_written(marker, done))
        self.progress.publish(progress.Progress(progress.LOG, instance_id, now, step,
                                                {"level": level, "message": message}))

    def _settle_logs(self, instance_id: str, *, ended: bool) -> None:
        """The run stopped: rewrite markers that dropped lines since they were written to say how
        many; forget the instance's quota once it has ended."""
        for marker in self.log_quota.stale_markers(instance_id):
            marker.written = marker.dropped_lines
            self.writes.submit(partial(_rewrite_marker, marker.seq, marker.text(counts=True)),
                               wait=False)
        if ended:
            self.log_quota.forget(instance_id)

    # ---- the scheduler ---------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (or forever), then hand every lease back."""
        self._wake = asyncio.Event()
        self._start_listening()
        waker = None
        if stop is not None:   # a stop ends the scheduler's sleep, however long the poll
            waker = asyncio.get_running_loop().create_task(stop.wait())
            waker.add_done_callback(lambda _: self._wake.set() if self._wake else None)
        try:
            while stop is None or not stop.is_set():
                try:
                    delay = self.tick()
                except Exception as exc:  # noqa: BLE001 - the scheduler outlives a failed round
                    # (a database that went away, a deadlock the server broke): say so, and try
                    # again after a poll; every write of a round is one transaction, undone whole
                    self.tick_failures += 1
                    if self.on_tick_failure is not None:
                        try:
                            self.on_tick_failure(exc)
                        except Exception:  # a broken listener must never stop the engine
                            pass
                    delay = self.poll_ms
                await self._sleep(delay, stop)
        finally:
            if waker is not None:
                waker.cancel()
            try:
                await self.shutdown()
            finally:
                await asyncio.to_thread(self._stop_listening)

    async def drain(self, *, jump: bool = True, until: Callable[[], bool] | None = None,
                    jump_kinds: tuple[str, ...] = SKIPPABLE) -> None:
        """Run until nothing is left to do now. With a virtual clock (``jump``), jump to each next
        due timer of ``jump_kinds`` while nothing else is runnable; instances waiting for events
        are left waiting unless ``event_timeout`` is among ``jump_kinds``."""
        self._wake = asyncio.Event()
        while True:
            delay = self.tick()
            if until is not None and until():
                break
            if self.is_working():
                await self._sleep(delay, None)
                continue
            due = self._next_due()
            if due is None:
                break
            if due <= self.clock.now_ms():
                if self._left_due:  # another engine's (or a held row): look again shortly
                    await self._sleep(TIMER_RECHECK_MS, None)
                continue
            if jump:
                if not self.skip_ahead(jump_kinds):
                    break
                continue
            break
        await self._settle()

    def _next_due(self) -> int | None:
        """When this engine's next timer is due: the earliest of all, or of its own instances'
        when it works on some only (a timer of another instance, due or not, is not its to fire;
        one woken by hand would otherwise read as due forever)."""
        if self.only is None:
            return self.store.next_timer_due()
        dues: list[int] = []
        for instance_id in self.only:
            row = self.store.find_instance(instance_id)
            if row is not None and row.status != states.PAUSED:
                dues += (timer.due for timer in self.store.timers_of(instance_id))
        return min(dues, default=None)

    def is_working(self) -> bool:
        """Whether anything here can run now: an instance to claim, or a lifetime doing more
        than holding a back-off in its invocation (which only a timer ends, docs/semantics.md
        §4.9), so fast-forward must not wait for it in real time."""
        return self._maybe_runnable or self.has_busy_lifetimes()

    def has_busy_lifetimes(self) -> bool:
        """Whether a lifetime here runs code or writes (not only holds back-offs)."""
        return any(not lt.is_holding for lt in self.live.values())

    def holding(self) -> int:
        """Lifetimes here that hold only back-offs (``running``, waiting for a timer)."""
        return sum(1 for lt in self.live.values() if lt.is_holding)

    def skip_ahead(self, kinds: tuple[str, ...] = SKIPPABLE) -> bool:
        """Fast-forward: end the wait of the one instance whose timer of ``kinds`` is due first,
        now, instead of at its time. No clock moves: every other instance's time, and each
        recorded time, stays true (docs/semantics.md, "Time"). Returns False when there is no
        such timer (only paused instances', or other engines')."""
        real = self.clock.real_ms()
        for timer in self.store.next_timers(kinds):
            if self.only is not None and timer.instance_id not in self.only:
                continue
            row = self.store.find_instance(timer.instance_id)
            if row is None or self._owned_elsewhere(row, real):
                continue  # its timers are that engine's to fire
            if self.fire_timers_now(timer.instance_id, lambda t, chosen=timer.id: t.id == chosen):
                return True
        return False

    async def _settle(self) -> None:
        """Let queued writes land before returning control to the caller."""
        for _ in range(3):
            await asyncio.sleep(0)
        self.writes.flush()

    async def _sleep(self, delay_ms: int, stop: asyncio.Event | None) -> None:
        assert self._wake is not None
        if self._wake.is_set():
            self._wake.clear()
            await asyncio.sleep(0)
            return
        try:
            await asyncio.wait_for(self._wake.wait(), max(delay_ms, 0) / 1000)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()

    def tick(self) -> int:
        """One round of bookkeeping; returns how long (ms) the scheduler may sleep after it."""
        now = self.clock.now_ms()
        real = self.clock.real_ms()
        self._poll_changes(real)
        self._fire_timers(now, real)
        if real >= self._next_renewal and self.live:
            with self.store.write():
                self.store.renew_leases_txn(self.owner, real, real + self.lease_ms)
            self._next_renewal = real + self.lease_ms // 3
        if self._maybe_runnable and not self.draining and len(self.live) < self.concurrency:
            self._claim(now, real)
        wait = self.poll_ms
        due = self.store.next_timer_due()
        if due is not None:
            wait = min(wait, due - now)
            if self._left_due:
                wait = max(wait, TIMER_RECHECK_MS)
        if self.live:
            wait = min(wait, self._next_renewal - real)
        return max(0, wait)

    def _poll_changes(self, real: int) -> None:
        if real < self._next_poll and not self._maybe_runnable:
            return
        self._next_poll = real + self.poll_ms
        version = self.store.data_version()
        if version != self._data_version:
            self._data_version = version
            self._maybe_runnable = True
            # while changes are pushed (each named instance is synced as it is heard), the full
            # look is only a safety net: on PostgreSQL every commit, ours too, moves the version
            if not self.listening or real >= self._next_sync:
                self._next_sync = real + LISTENING_SYNC_MS
                for lifetime in list(self.live.values()):
                    self._sync_lifetime(lifetime)
        elif real >= self._next_poll - self.poll_ms:
            # leases of dead engines expire without any write: look for orphans now and then
            self._maybe_runnable = True

    def _claim(self, now: int, real: int) -> None:
        self._maybe_runnable = False
        capacity = self.concurrency - len(self.live)
        self.writes.flush_notes()  # a claimed instance's steps are read back below
        taken: list[tuple[str, str]] = []
        with self.store.write():
            rows = self.store.claim_txn(self.owner, now, real, real + self.lease_ms, capacity,
                                        self.only, taken_over=taken)
        self.lease_takeovers += len(taken)
        for instance_id, previous in taken:
            if self.on_takeover is not None:
                try:
                    self.on_takeover(instance_id, previous)
                except Exception:  # a broken listener must never stop a claim
                    pass
        if len(rows) == capacity:
            self._maybe_runnable = True
        for row in rows:
            self._start(row)
        if rows:
            self._next_renewal = min(self._next_renewal or real + self.lease_ms // 3,
                                     real + self.lease_ms // 3)

    def _fire_timers(self, now: int, real: int) -> None:
        self._left_due = False
        timers = [t for t in self.store.due_timers(now)
                  if self.only is None or t.instance_id in self.only]
        if not timers:
            return
        woken: list[tuple[str, StepKey]] = []
        with self.store.write():
            for timer in timers:
                # a row another transaction holds (its owner committing, a control operation)
                # is left for the next round rather than waited for
                row = self.store.lock_instance_txn(timer.instance_id, skip_locked=True)
                if row is None or self._owned_elsewhere(row, real):
                    # that engine's to fire (or held just now): the scheduler looks again
                    # shortly, not at once, or it would spin until the other one fires it
                    self._left_due = True
                    continue
                if not self.store.delete_timer_txn(timer.id):
                    continue
                step = self.store.get_step(timer.instance_id, timer.step) \
                    if timer.kind == TimerKind.SLEEP else None
                if not self._resolve_timer_txn(timer, now):
                    continue
                if row.status == states.WAITING:  # written only once its lifetime has stopped
                    self.store.set_status_txn(row.id, row.status, states.QUEUED, now)
                woken.append((timer.instance_id, timer.step, _early(step, now)))
        self._maybe_runnable = True
        for instance_id, key, early_ms in woken:
            lifetime = self.live.get(instance_id)
            step = self.store.get_step(instance_id, key)
            if step is not None:
                self.progress.publish(progress.Progress(progress.STEP_WOKEN, instance_id, now, key,
                                                        {"status": step.status,
                                                         "early_ms": early_ms}))
                if lifetime is not None:
                    lifetime.wake(key, step)

    def fire_timers_now(self, instance_id: str, select: Callable[[TimerRow], bool]) -> int:
        """Fire the instance's timers that ``select`` picks now, ahead of their time (fast-forward,
        ``instances wake``, a test modifier ending a wait already under way). Each step records
        when it really ended; the progress event says by how much it was early. Returns how
        many fired."""
        now = self.clock.now_ms()
        fired: list[StepKey] = []
        early: dict[StepKey, int] = {}
        with self.store.write():
            row = self.store.lock_instance_txn(instance_id)
            if row is None or row.status == states.PAUSED or states.is_finished(row.status):
                return 0
            for timer in self.store.timers_of(instance_id):
                if select(timer) and self.store.delete_timer_txn(timer.id) \
                        and self._resolve_timer_txn(timer, now):
                    fired.append(timer.step)
                    early[timer.step] = max(timer.due - now, 0)
            if fired and row.status == states.WAITING:
                self.store.set_status_txn(row.id, row.status, states.QUEUED, now)
        lifetime = self.live.get(instance_id)
        for key in fired:
            step = self.store.get_step(instance_id, key)
            if step is None:
                continue
            self.progress.publish(progress.Progress(progress.STEP_WOKEN, instance_id, now, key,
                                                    {"status": step.status,
                                                     "early_ms": early.get(key, 0)}))
            if lifetime is not None:
                lifetime.wake(key, step)
        if fired:
            self._signal()
        return len(fired)

    def _resolve_timer_txn(self, timer: TimerRow, now: int) -> bool:
        if timer.kind == TimerKind.SLEEP:
            return self.store.resolve_step_txn(timer.instance_id, timer.step, StepStatus.SLEEPING,
                                               StepStatus.DONE, now)
        if timer.kind == TimerKind.RETRY:
            return self.store.resolve_step_txn(timer.instance_id, timer.step, StepStatus.BACKOFF,
                                               StepStatus.READY, now, error=None)
        if timer.kind == TimerKind.EVENT_TIMEOUT:
            step = self.store.get_step(timer.instance_id, timer.step)
            error = json.dumps(timeout_error(step.duration_ms if step else None))
            return self.store.resolve_step_txn(timer.instance_id, timer.step, StepStatus.WAITING,
                                               StepStatus.FAILED, now, error=error)
        return False

    # ---- lifetimes -------------------------------------------------------------------------

    def _start(self, row: InstanceRow) -> None:
        definition = self.workflows.get(row.workflow)
        step_limit = definition.step_limit if definition else DEFAULT_STEP_LIMIT
        implicit = uses_implicit_dependencies(definition.compatibility_date if definition else None)
        lifetime = Lifetime(self, row, self.store.load_steps(row.id), step_limit=step_limit,
                            implicit_dependencies=implicit)
        self.live[row.id] = lifetime
        task = asyncio.get_running_loop().create_task(self._run_lifetime(lifetime, definition))
        lifetime.runner = task
        self._lifetime_tasks.add(task)
        task.add_done_callback(self._lifetime_tasks.discard)
        self._publish_status(row.id, row.status)

    async def _run_lifetime(self, lifetime: Lifetime, definition: WorkflowDefinition | None) -> None:
        row = lifetime.row
        try:
            if definition is None:
                raise UnknownWorkflowError(workflow=row.workflow)
            runner = definition.factory(row)
            if inspect.isawaitable(runner):
                runner = await runner
            event = {"payload": decode_json(row.params), "timestamp": to_datetime(row.created_at),
                     "instanceId": row.known_as, "workflowName": row.workflow}
            lifetime.task = asyncio.get_running_loop().create_task(
                _call_run(runner, event, lifetime.step))
            await asyncio.wait({lifetime.task})
            if lifetime.task.cancelled() and lifetime.stop_reason != StopReason.ROLLBACK:
                await self._stopped(lifetime)
                return
            if lifetime.rollback_phase is not None:
                # the phase ran (or run() ended before it could): its outcome, from the store
                exc = None if lifetime.task.cancelled() else lifetime.task.exception()
                if exc is not None and is_isolate_fault(exc) and (
                        lifetime.attempting or self._replays_after_crash(lifetime, exc)):
                    await self._isolate_lost(lifetime, exc)   # a handler's attempt was cut off
                else:
                    await self._end_rollback_phase(lifetime)
                return
            output = lifetime.task.result()
            await self._finish(lifetime, states.COMPLETE, output=output)
        except asyncio.CancelledError:
            lifetime.stop(StopReason.SHUTDOWN)
            if lifetime.task is not None:
                lifetime.task.cancel()
            raise
        except WorkflowFatalError as exc:
            await self._finish(lifetime, states.ERRORED,
                               error={"name": "WorkflowFatalError", "message": exc.message})
        except Exception as exc:  # noqa: BLE001 - anything escaping run() errors the instance
            if is_isolate_fault(exc) and (lifetime.attempting or self._replays_after_crash(
                    lifetime, exc)):
                await self._isolate_lost(lifetime, exc)
            elif is_isolate_fault(exc):  # the run itself failed, outside any step
                await self._finish(lifetime, states.ERRORED, error=isolate_error(exc))
            elif not await self._begin_rollback_phase(lifetime, error_dict(exc),
                                                      traceback_of(exc)):
                # its error as the platform shows it, and the user's frames it came from
                await self._finish(lifetime, states.ERRORED, error=error_dict(exc),
                                   frames=traceback_of(exc))
        finally:
            self._settle_logs(lifetime.id, ended=False)
            if self.live.get(lifetime.id) is lifetime:
                del self.live[lifetime.id]
            self._signal()

    async def _finish(self, lifetime: Lifetime, status: str, *, output: Any = None,
                      error: dict[str, str] | None = None,
                      frames: list[dict[str, Any]] | None = None) -> None:
        if lifetime.stop_reason == StopReason.ABANDON:
            return
        if status == states.COMPLETE:
            try:
                encoded = encode_json(output, what="The output of run()")
            except (NotSerialisableError, PayloadTooLargeError) as exc:
                status, error = states.ERRORED, {"name": "WorkflowFatalError", "message": exc.message}
            else:
                output_json = encoded
        generation, now = lifetime.generation, self.clock.now_ms()

        def finish(store: Store) -> bool:
            row = store.lock_instance_txn(lifetime.id)
            if not self._owns(row, generation):
                return False
            store.finish_txn(lifetime.id, row.status, status, now,
                             output=output_json if status == states.COMPLETE else None,
                             error=json.dumps(error) if error is not None else None,
                             error_traceback=json.dumps(frames) if frames else None)
            return True
        self._settle_logs(lifetime.id, ended=True)
        if await self.writes.submit(finish):
            data = {"status": status,
                    "output": display_json(output_json) if status == states.COMPLETE else None,
                    "error": error}
            if frames:
                data["traceback"] = frames
            self.progress.publish(progress.Progress(progress.INSTANCE_STATUS, lifetime.id, now, None,
                                                    data))

    # ---- rollbacks (docs/semantics.md, "Rollbacks"; sdk/rollbacks.py) -------------------------

    async def _begin_rollback_phase(self, lifetime: Lifetime, error: dict[str, str],
                                    frames: list[dict[str, Any]] | None) -> bool:
        """``run()`` failed: when a step registered a handler, record the phase on the instance and
        queue it, so the next lifetime replays ``run()`` in rollback mode. False when no step has
        a handler (or this lifetime was already the phase's)."""
        if lifetime.rollback_phase is not None or lifetime.stop_reason == StopReason.ABANDON:
            return False
        self.writes.flush_notes()   # a handler's step may have begun just now
        if not self.store.has_rollback_handlers(lifetime.id):
            return False
        owner, generation, now = self.owner, lifetime.generation, self.clock.now_ms()
        phase = json.dumps({"trigger": error, "trigger_traceback": frames or None,
                            "outcome": None, "error": None})

        def begin(store: Store) -> bool:
            row = store.lock_instance_txn(lifetime.id)
            if not self._owns(row, generation):
                return False
            store.set_rollback_txn(lifetime.id, phase, now)
            store.set_status_txn(lifetime.id, row.status, states.QUEUED, now)
            store.release_txn(lifetime.id, owner)
            return True
        if not await self.writes.submit(begin):
            return True   # no longer this engine's to finish
        self.progress.publish(progress.Progress(progress.INSTANCE_STATUS, lifetime.id, now, None,
                                                {"status": states.QUEUED, "rollback": None}))
        return True

    async def _end_rollback_phase(self, lifetime: Lifetime) -> None:
        """Write the phase's outcome from the store's rows (whatever the workflow's side claimed)
        and end the instance: ``errored`` with the error that started the phase, or
        ``terminated``. Handlers are walked latest-started first; the first that did not end
        well decides a failed outcome (one that never ran: its handler was not registered again
        by the replay)."""
        if lifetime.stop_reason == StopReason.ABANDON:
            return
        phase = lifetime.rollback_phase
        assert phase is not None
        generation, now = lifetime.generation, self.clock.now_ms()
        self.writes.flush_notes()
        trigger = phase.get("trigger")
        status = states.ERRORED if trigger is not None else states.TERMINATED

        def end(store: Store) -> dict[str, Any] | None:
            row = store.lock_instance_txn(lifetime.id)
            if not self._owns(row, generation):
                return None
            outcome = rollback_outcome(store, lifetime.id, now)
            record = {**phase, **outcome}
            frames = phase.get("trigger_traceback")
            store.finish_txn(lifetime.id, row.status, status, now,
                             error=json.dumps(trigger) if trigger is not None else None,
                             error_traceback=json.dumps(frames) if frames else None,
                             rollback=json.dumps(record))
            return outcome
        self._settle_logs(lifetime.id, ended=True)
        outcome = await self.writes.submit(end)
        if outcome is not None:
            self.progress.publish(progress.Progress(
                progress.INSTANCE_STATUS, lifetime.id, now, None,
                {"status": status, "output": None, "error": trigger, "rollback": outcome}))

    async def _stopped(self, lifetime: Lifetime) -> None:
        """The run task was cancelled on purpose: write what that means."""
        reason = lifetime.stop_reason
        if reason in (None, StopReason.ABANDON):
            return
        owner, generation, now = self.owner, lifetime.generation, self.clock.now_ms()
        waits = lifetime.hibernated_waits if reason == StopReason.HIBERNATE else []

        def stop(store: Store) -> str | None:
            row = store.lock_instance_txn(lifetime.id)
            if not self._owns(row, generation):
                return None
            if reason == StopReason.SHUTDOWN:
                # a pause waiting for steps in flight lands now: shutdown cut them off (they
                # count as interrupted attempts when the instance is resumed, §4.4); left
                # ``waitingForPause`` without a lease, no engine would ever claim it again
                new = states.QUEUED if row.status == states.RUNNING else \
                    states.PAUSED if row.status == states.WAITING_FOR_PAUSE else row.status
            elif row.status == states.WAITING_FOR_PAUSE or reason == StopReason.PAUSE:
                new = states.PAUSED
            else:
                new = states.WAITING
                for key in waits:  # an event or timer resolved it while we were stopping
                    step = store.get_step(lifetime.id, key)
                    if step is not None and step.status in RESOLVED:
                        new = states.QUEUED
            if new != row.status:
                store.set_status_txn(lifetime.id, row.status, new, now,
                                     paused_at=now if new == states.PAUSED else None)
            store.release_txn(lifetime.id, owner)
            return new
        new = await self.writes.submit(stop)
        if new is not None:
            self.progress.publish(progress.Progress(progress.INSTANCE_STATUS, lifetime.id, now, None,
                                                    {"status": new}))

    def _replays_after_crash(self, lifetime: Lifetime, exc: BaseException) -> bool:
        """Whether an isolate that died while ``run()`` was outside any step is replayed.

        A limit the tenant's code hit (CPU, memory) is its own fault and errors the instance. A
        crash without such a cause (the process was killed from outside, or the machine ran out
        of memory) is the host's problem, as an engine crash is: the instance replays in a fresh
        isolate. Code that kills its own isolate outside any step would crash every replay the
        same way, so after :data:`CRASH_REPLAYS` such crashes with no step committed in between
        the instance errors instead.
        """
        if code_of(exc) is not Code.ISOLATE_CRASHED:
            return False
        done = self.store.count_done_steps(lifetime.id)
        seen_done, crashes = self._crashes_outside_steps.get(lifetime.id, (-1, 0))
        crashes = crashes + 1 if done == seen_done else 1
        if crashes > CRASH_REPLAYS:
            self._crashes_outside_steps.pop(lifetime.id, None)
            return False
        self._crashes_outside_steps[lifetime.id] = (done, crashes)
        return True

    async def _isolate_lost(self, lifetime: Lifetime, exc: BaseException) -> None:
        """The isolate running this instance died with steps in flight: each of them failed an
        attempt with the isolate's error (their retry policy decides what next), and the
        instance is replayed, in a fresh isolate, when its next step may run."""
        lifetime.stop(StopReason.ISOLATE)
        attempting, lifetime.attempting = dict(lifetime.attempting), {}
        error = isolate_error(exc)
        error_json = json.dumps(error)
        owner, generation, now = self.owner, lifetime.generation, self.clock.now_ms()

        def lost(store: Store) -> str | None:
            row = store.lock_instance_txn(lifetime.id)
            if not self._owns(row, generation):
                return None
            for key, (attempt, config_json, _started) in attempting.items():
                delay = lifetime.retry_delay(key, config_from_json(config_json), attempt)
                store.add_attempt_txn(lifetime.id, key, attempt, error_json, now)
                known = lifetime.steps.get(key)
                rollback = known.rollback if known is not None else None
                if delay is not None:
                    store.put_step_txn(lifetime.id, key, StepStatus.BACKOFF, now, attempts=attempt,
                                       config=config_json, error=error_json, rollback=rollback)
                    store.add_timer_txn(lifetime.id, TimerKind.RETRY, key, now + delay)
                else:
                    store.put_step_txn(lifetime.id, key, StepStatus.FAILED, now, attempts=attempt,
                                       config=config_json, error=error_json, ended=True,
                                       rollback=rollback)
            new = states.PAUSED if row.status == states.WAITING_FOR_PAUSE else \
                states.WAITING if store.timers_of(lifetime.id) else states.QUEUED
            store.set_status_txn(lifetime.id, row.status, new, now,
                                 paused_at=now if new == states.PAUSED else None)
            store.release_txn(lifetime.id, owner)
            return new
        new = await self.writes.submit(lost)
        for key, (attempt, _config, _started) in attempting.items():
            self.progress.publish(progress.Progress(progress.STEP_ATTEMPT_FAILED, lifetime.id, now,
                                                    key, {"attempt": attempt, "error": error}))
        if new is not None:
            self.progress.publish(progress.Progress(progress.INSTANCE_STATUS, lifetime.id, now, None,
                                                    {"status": new}))

    async def drain_steps(self, timeout_s: float, *, every_s: float = 0.02) -> bool:
        """The first half of a graceful stop: claim nothing more, start no new step (each
        lifetime holds its next step, and the answer of the one it just finished, at the step
        boundary, as a pause does), and wait up to ``timeout_s`` for the step attempts in flight
        to settle and commit. True when none is left in flight; :meth:`shutdown` then hands the
        leases back, and the next engine replays each instance from its last committed step."""
        self.draining = True
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(lt.in_flight for lt in self.live.values()):
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(every_s)
        self.writes.flush()
        return True

    async def shutdown(self) -> None:
        """Stop every lifetime and hand its lease back, so another engine can start at once."""
        for lifetime in list(self.live.values()):
            lifetime.stop(StopReason.SHUTDOWN)
        tasks = [t for t in self._lifetime_tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self.writes.flush()
        with self.store.write():
            now = self.clock.now_ms()
            for row in self.store.list_instances(status=states.RUNNING, limit=100_000):
                if row.lease_owner == self.owner:
                    self.store.set_status_txn(row.id, row.status, states.QUEUED, now)
            # a lifetime that did not stop in time: its pause lands here (see _stopped)
            for row in self.store.list_instances(status=states.WAITING_FOR_PAUSE, limit=100_000):
                if row.lease_owner == self.owner:
                    self.store.set_status_txn(row.id, row.status, states.PAUSED, now, paused_at=now)
            self.store.release_all_txn(self.owner)
        # another host takes these instances at once, not at its next poll
        self.store.changed("*", "released")

    def close(self) -> None:
        self.writes.close()
        self.store.close()


async def _wound_down(lifetimes: list[Lifetime | None]) -> None:
    """Wait until each lifetime's task has ended (each was told to stop). A run awaiting this
    for its own instance was cancelled by that stop, so its await raises CancelledError."""
    tasks = {lt.runner for lt in lifetimes if lt is not None and lt.runner is not None
             and not lt.runner.done() and lt.runner is not asyncio.current_task()}
    if tasks:
        await asyncio.wait(tasks)
    else:
        await asyncio.sleep(0)   # a cancelled caller stops here too


def _early(sleep: StepRow | None, now: int) -> int:
    """How long before its asked length a sleep ends now (``instances wake`` moves its timer)."""
    if sleep is None or sleep.started_at is None or sleep.duration_ms is None:
        return 0
    return max(sleep.started_at + sleep.duration_ms - now, 0)
def rollback_outcome(store: Store, instance_id: str, now: int) -> dict[str, Any]:
    """``{"outcome", "error"}`` of an instance's rollback phase, from its rows (inside the
    writer's transaction: a handler that never ran to an end is recorded as failed here)."""
    steps = store.list_steps(instance_id)
    by_key = {s.key: s for s in steps}
    for step in reversed([s for s in steps if s.kind == StepKind.DO and s.rollback is not None]):
        ran = by_key.get((StepKind.ROLLBACK, step.name, step.count))
        if ran is not None and ran.status == StepStatus.DONE:
            continue
        if ran is not None and ran.status == StepStatus.FAILED and ran.error is not None:
            return {"outcome": "failed", "error": json.loads(ran.error)}
        error = {"name": "RollbackMissing",
                 "message": f'the rollback handler of step "{step.name}" (occurrence '
                            f"{step.count}) was not registered again when run() was replayed"}
        store.put_step_txn(instance_id, (StepKind.ROLLBACK, step.name, step.count), StepStatus.FAILED, now,
                           attempts=ran.attempts if ran is not None else 0,
                           error=json.dumps(error), ended=True)
        return {"outcome": "failed", "error": error}
    return {"outcome": "complete", "error": None}


def _rewrite_marker(seq: int, text: str, store: Store) -> None:
    store.rewrite_log_txn(seq, text)


def _marker_written(marker: Marker, done: "asyncio.Future[Any]") -> None:
    if not done.cancelled() and done.exception() is None:
        marker.seq = done.result()


def is_isolate_fault(exc: BaseException) -> bool:
    """An isolate died or was stopped under a call (not the workflow's own error)."""
    return code_of(exc) in ISOLATE_FAULTS


def isolate_error(exc: BaseException) -> dict[str, str]:
    return {"name": "IsolateError", "message": f"[{code_of(exc) or Code.ISOLATE_CRASHED}] {exc}"}


async def _call_run(runner: Any, event: dict[str, Any], step: Any) -> Any:
    result = runner.run(event, step)
    if inspect.isawaitable(result):
        result = await result
    return result


__all__ = ["DynwfError", "Engine", "WorkflowDefinition"]

"""Group commit for the engine's writes (docs/architecture.md §8).

Every write queued during one event-loop iteration lands in one ``BEGIN IMMEDIATE`` transaction,
and each writer is answered only after that transaction commits. One commit per step measured
~3,500 steps/s here, strictly sequential; grouping the steps of many instances in flight is what
goes past that.

On PostgreSQL each statement of a group commit is a network round trip, and the loop would stand
still through all of them; there the transaction runs in one worker thread (psycopg waits for the
server with the GIL released) while the loop serves other instances, and each writer is answered
on the loop once it committed. One worker keeps the transactions in the order they were flushed.
``docs/benchmarks.md`` ("PostgreSQL store") has what was measured. SQLite commits stay on the
loop: a local commit costs less than handing it to a thread.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from emulator.engine.store import StepKey, Store


@dataclass(slots=True)
class _Write:
    op: Callable[[Store], Any]
    future: asyncio.Future[Any] | None
    guard: tuple[str, str, int] | None    # (instance id, owner, generation) that must hold
    key: tuple[str, StepKey] | None       # the step this write is about
    note: bool                            # bookkeeping a later write of the same step supersedes


#: How long a batch of attempt-start notes alone waits for company. The step's own outcome usually
#: arrives within it (a step body of a few hundred microseconds), and the note then costs no
#: transaction of its own; a longer body gets its note committed after this delay.
NOTE_DELAY_S = 0.002


class LostOwnership(Exception):
    """The engine no longer owns the instance (terminated, restarted, or its lease was taken)."""


class WriteBatcher:
    """Group commit: writes submitted in one loop iteration share one transaction.

    A guarded write runs only while its lifetime still owns the instance; the check is made once
    per instance per transaction. An attempt-start note whose step is finished by a later write
    of the same batch is skipped: the later write replaces the whole row anyway. If one write
    raises, the transaction is rolled back and redone without it, so one writer's failure is its
    own and nothing is half-written. A batch of notes alone is committed :data:`NOTE_DELAY_S`
    later, or with the next write, whichever comes first.
    """

    def __init__(self, store: Store, *, offload: bool | None = None) -> None:
        self.store = store
        self._queue: list[_Write] = []
        self._scheduled = False
        self._notes_due: asyncio.TimerHandle | None = None
        self.transactions = 0
        #: told the seconds each group commit's transaction took (``dynwf serve``'s metrics)
        self.on_commit: Callable[[float], None] | None = None
        #: seconds the event loop itself spent inside commits, waiting for the database
        self.blocked_s = 0.0
        offload = store.OFFLOAD_COMMITS if offload is None else offload
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="dynwf-commit") if offload else None

    def close(self) -> None:
        """Let a commit still in the worker finish, then stop the worker."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)

    def submit(self, op: Callable[[Store], Any], *, wait: bool = True,
               guard: tuple[str, str, int] | None = None, key: tuple[str, StepKey] | None = None,
               note: bool = False) -> Awaitable[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future() if wait else None
        self._queue.append(_Write(op, future, guard, key, note))
        if note and future is None:
            if not self._scheduled and self._notes_due is None:
                self._notes_due = loop.call_later(NOTE_DELAY_S, self._flush_soon)
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_soon)
        return future if future is not None else _DONE

    def flush_notes(self) -> None:
        """Commit notes waiting for company now: for a reader of the rows they are about (an
        attempt cut off by its isolate's death counts only once its note is read back)."""
        if self._notes_due is not None:
            self.flush()

    def flush(self) -> None:
        """Commit every queued write now; return once they committed (for a caller about to read
        them back)."""
        batch = self._take()
        if not batch:
            return
        started = time.perf_counter()
        if self._worker is None:
            outcome = self._commit(batch)
        else:  # after any commit still in the worker: one worker, first in, first out
            outcome = self._worker.submit(self._commit, batch).result()
        self.blocked_s += time.perf_counter() - started
        self._answer(batch, *outcome)

    def _flush_soon(self) -> None:
        """The loop's own flush: handed to the worker when there is one, answered on the loop
        when it committed."""
        if self._worker is None:
            self.flush()
            return
        batch = self._take()
        if not batch:
            return
        loop = asyncio.get_running_loop()
        job = self._worker.submit(self._commit, batch)
        job.add_done_callback(lambda done: loop.call_soon_threadsafe(self._answer_job, batch, done))

    def _answer_job(self, batch: list[_Write], job: Future) -> None:
        try:
            outcome = job.result()
        except BaseException as exc:  # _commit catches every Exception; this is the rest
            outcome = ({}, {i: exc for i in range(len(batch))}, 0.0)
        self._answer(batch, *outcome)

    def _take(self) -> list[_Write]:
        self._scheduled = False
        if self._notes_due is not None:
            self._notes_due.cancel()
            self._notes_due = None
        batch, self._queue = self._queue, []
        return batch

    def _commit(self, batch: list[_Write]) -> tuple[dict[int, Any], dict[int, BaseException], float]:
        """One transaction for ``batch``, redone without a write that raised: (results, failures)
        by the writes' places in the batch, and the seconds it took."""
        failed: dict[int, BaseException] = {}
        started = time.perf_counter()
        while True:
            try:
                results = self._apply(batch, failed)
                break
            except _OpFailed as exc:
                failed[exc.index] = exc.error
            except Exception as exc:  # the transaction itself failed: nobody's write happened
                results = {}
                failed = {i: exc for i in range(len(batch))}
                break
        return results, failed, time.perf_counter() - started

    def _answer(self, batch: list[_Write], results: dict[int, Any],
                failed: dict[int, BaseException], seconds: float) -> None:
        self.transactions += 1
        if self.on_commit is not None:
            try:
                self.on_commit(seconds)
            except Exception:  # a broken listener must never fail a commit's writers
                pass
        for index, write in enumerate(batch):
            if write.future is None or write.future.done():
                continue
            if index in failed:
                write.future.set_exception(failed[index])
            else:
                write.future.set_result(results.get(index))

    def _apply(self, batch: list[_Write], failed: dict[int, BaseException]) -> dict[int, Any]:
        finals = {w.key for w in batch if w.key is not None and not w.note}
        owned: dict[tuple[str, str, int], bool] = {}
        results: dict[int, Any] = {}
        with self.store.write():
            for index, write in enumerate(batch):
                if index in failed or (write.note and write.key in finals):
                    continue
                if write.guard is not None:
                    ok = owned.get(write.guard)
                    if ok is None:
                        ok = owned[write.guard] = self.store.owned_txn(*write.guard)
                    if not ok:
                        if not write.note:
                            failed[index] = LostOwnership(write.guard[0])
                        continue
                try:
                    results[index] = write.op(self.store)
                except Exception as exc:
                    raise _OpFailed(index, exc) from exc
        return results


class _OpFailed(Exception):
    def __init__(self, index: int, error: BaseException) -> None:
        self.index, self.error = index, error


class _Done:
    def __await__(self):
        return iter(())


_DONE = _Done()

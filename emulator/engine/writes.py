"""Group commit for the engine's writes (docs/architecture.md §8).

Every write queued during one event-loop iteration lands in one ``BEGIN IMMEDIATE`` transaction,
and each writer is answered only after that transaction commits. One commit per step measured
~3,500 steps/s here, strictly sequential; grouping the steps of many instances in flight is what
goes past that.
"""

from __future__ import annotations

import asyncio
import time
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

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: list[_Write] = []
        self._scheduled = False
        self._notes_due: asyncio.TimerHandle | None = None
        self.transactions = 0
        #: told the seconds each group commit's transaction took (``dynwf serve``'s metrics)
        self.on_commit: Callable[[float], None] | None = None

    def submit(self, op: Callable[[Store], Any], *, wait: bool = True,
               guard: tuple[str, str, int] | None = None, key: tuple[str, StepKey] | None = None,
               note: bool = False) -> Awaitable[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future() if wait else None
        self._queue.append(_Write(op, future, guard, key, note))
        if note and future is None:
            if not self._scheduled and self._notes_due is None:
                self._notes_due = loop.call_later(NOTE_DELAY_S, self.flush)
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self.flush)
        return future if future is not None else _DONE

    def flush_notes(self) -> None:
        """Commit notes waiting for company now: for a reader of the rows they are about (an
        attempt cut off by its isolate's death counts only once its note is read back)."""
        if self._notes_due is not None:
            self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if self._notes_due is not None:
            self._notes_due.cancel()
            self._notes_due = None
        batch, self._queue = self._queue, []
        if not batch:
            return
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
        self.transactions += 1
        if self.on_commit is not None:
            try:
                self.on_commit(time.perf_counter() - started)
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

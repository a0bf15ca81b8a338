"""Instance statuses and the one table of allowed transitions between them.

The nine statuses are the platform's (docs/semantics.md §1.3). Every status change goes through
``Store.set_status_txn``, which checks this table and writes with ``WHERE status = <from>``, so
two writers can never both win a transition.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class InstanceStatus(StrEnum):
    """The platform's nine statuses (docs/semantics.md §1.3); members are their strings."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    ERRORED = "errored"
    TERMINATED = "terminated"
    COMPLETE = "complete"
    WAITING = "waiting"
    WAITING_FOR_PAUSE = "waitingForPause"
    UNKNOWN = "unknown"


QUEUED: Final = InstanceStatus.QUEUED
RUNNING: Final = InstanceStatus.RUNNING
PAUSED: Final = InstanceStatus.PAUSED
ERRORED: Final = InstanceStatus.ERRORED
TERMINATED: Final = InstanceStatus.TERMINATED
COMPLETE: Final = InstanceStatus.COMPLETE
WAITING: Final = InstanceStatus.WAITING
WAITING_FOR_PAUSE: Final = InstanceStatus.WAITING_FOR_PAUSE
UNKNOWN: Final = InstanceStatus.UNKNOWN

ALL: Final = tuple(InstanceStatus)
FINISHED: Final = frozenset({ERRORED, TERMINATED, COMPLETE})
#: Statuses in which an engine may hold the instance's lease and run its code.
LIVE: Final = frozenset({RUNNING, WAITING_FOR_PAUSE})

# from -> the statuses it may move to. restart() may leave any status (docs/semantics.md §4.6) and is
# written as its own reset, not through this table.
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    QUEUED: frozenset({RUNNING, PAUSED, TERMINATED}),
    RUNNING: frozenset({WAITING, WAITING_FOR_PAUSE, PAUSED, COMPLETE, ERRORED, TERMINATED,
                        QUEUED}),
    WAITING: frozenset({RUNNING, QUEUED, PAUSED, TERMINATED, ERRORED}),
    WAITING_FOR_PAUSE: frozenset({PAUSED, RUNNING, COMPLETE, ERRORED, TERMINATED, WAITING,
                                  QUEUED}),
    PAUSED: frozenset({QUEUED, TERMINATED}),
    COMPLETE: frozenset(),
    ERRORED: frozenset(),
    TERMINATED: frozenset(),
    UNKNOWN: frozenset({TERMINATED}),
}


#: restart() may leave any status, back to ``queued`` under a new generation (§4.6): a reset,
#: written by its own guarded writer (``Store.reset_txn``), not a transition of the table above.
RESTART_FROM: Final = frozenset(InstanceStatus)


def can_move(old: str, new: str) -> bool:
    return new in TRANSITIONS.get(old, frozenset())


def is_finished(status: str) -> bool:
    return status in FINISHED

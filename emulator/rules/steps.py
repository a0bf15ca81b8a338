"""The vocabulary of steps and timers, declared once: a step's identity and the words the engine
writes for its kinds, statuses and waits (docs/semantics.md §4.2)."""

from __future__ import annotations

from enum import StrEnum

#: A step's identity: (kind, name, occurrence of that kind and name in this run, from 1).
StepKey = tuple[str, str, int]


class StepKind(StrEnum):
    DO = "do"
    SLEEP = "sleep"
    WAIT = "wait"          # wait_for_event
    ROLLBACK = "rollback"  # a compensation handler's run, keyed like the do step it undoes


#: ``restart({"from": {"type"}})``: the platform's names of step types, and the kind each is.
RESTART_STEP_TYPES: dict[str, StepKind] = {"do": StepKind.DO, "sleep": StepKind.SLEEP,
                                           "waitForEvent": StepKind.WAIT}
#: The type of step ``restart({"from": ...})`` means when it names none.
RESTART_DEFAULT_TYPE = "do"


class StepStatus(StrEnum):
    """What the ``steps`` table's ``status`` column holds."""

    RUNNING = "running"        # an attempt is under way
    BACKOFF = "backoff"        # an attempt failed; waiting out the retry delay
    READY = "ready"            # the retry delay is over; the next attempt may start
    SLEEPING = "sleeping"
    WAITING = "waiting"        # for an event
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"    # the workflow's code cancelled it (docs/semantics.md §4.7)


#: Statuses after which a step's outcome is known and persisted.
ENDED = frozenset({StepStatus.DONE, StepStatus.FAILED})


class TimerKind(StrEnum):
    """What a row of the ``timers`` table waits for."""

    SLEEP = "sleep"
    RETRY = "retry"                  # a retry back-off
    EVENT_TIMEOUT = "event_timeout"


#: The waits fast-forward may end early; an event's timeout is never among them.
SKIPPABLE = (TimerKind.SLEEP, TimerKind.RETRY)

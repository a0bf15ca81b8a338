"""Cron ``schedules``: an instance of the workflow at each firing (docs/semantics.md §1.8).

A firing creates its instance through :meth:`Control.create`, with an id made of the workflow,
the expression and the firing time (:func:`firing_id`). The create path refuses an id already
taken, so a firing creates at most one instance whatever happens: two ``dynwf dev`` on one state
file, or one stopped and started again within the same minute. That is also why nothing else is
stored: no "last firing" table could say more than the ids already do.

Time is the engine's clock (``emulator/clock.py``), so tests drive a scheduler with a virtual
clock and never wait. Under ``dynwf dev`` that clock is the real time, with or without
``--fast-forward``: fast-forward ends an instance's own sleeps early and moves no clock, so it
never brings a firing closer, and a skipped sleep cannot set off a burst of instances.

Firings that came due while nothing could fire them (dev stopped, the machine asleep) are not
made up for: a scheduler starts from the moment it starts, and when it finds several firings of
one schedule due at once it fires only the latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from emulator.clock import Clock
from emulator.engine.control import Control
from emulator.errors import InstanceAlreadyExistsError
from emulator.rules.cron import Cron, parse_cron
from emulator.rules.limits import is_valid_id

#: Longest real wait between two looks at the clock: a clock set forward or back is noticed
#: within it, and a stop request is answered at once anyway.
LOOK_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class Schedule:
    """One expression of one workflow's ``schedules``."""

    workflow: str
    cron: Cron

    @property
    def expression(self) -> str:
        return self.cron.text


@dataclass(frozen=True, slots=True)
class Firing:
    """A firing that was due: the instance it created, or None when that id was already taken."""

    schedule: Schedule
    at: int                     # the firing time, epoch ms
    instance_id: str
    created: bool

    def to_dict(self) -> dict[str, Any]:
        return {"workflow": self.schedule.workflow, "cron": self.schedule.expression,
                "scheduled_time": self.at, "instance": self.instance_id, "created": self.created}


def schedules_of(workflows: Iterable[Any]) -> list[Schedule]:
    """The schedules of a config's workflows (``WorkflowConfig``: ``name``, ``schedules``),
    already checked by the config loader."""
    return [Schedule(workflow.name, parse_cron(text))
            for workflow in workflows for text in workflow.schedules]


def firing_id(workflow: str, expression: str, at_ms: int) -> str:
    """``<workflow>-cron-<8 hex of the expression>-<epoch ms>``: the same firing gets the same id
    in every process. (The platform's ids of cron instances hold the expression itself, which
    dynwf's instance ids, ``^[a-zA-Z0-9_][a-zA-Z0-9-_]*$``, cannot.) A workflow name that would
    make the id invalid is replaced by a digest."""
    digest = hashlib.sha256(expression.encode()).hexdigest()[:8]
    candidate = f"{workflow}-cron-{digest}-{at_ms}"
    if is_valid_id(candidate):
        return candidate
    named = hashlib.sha256(workflow.encode()).hexdigest()[:8]
    return f"cron-{named}-{digest}-{at_ms}"


def firing_params(expression: str, at_ms: int) -> dict[str, Any]:
    """The event payload of a cron instance: the expression and the firing time (epoch ms)."""
    return {"cron": expression, "scheduledTime": at_ms}


class Scheduler:
    """Fires a project's schedules on ``clock``; ``on_fire`` hears of each firing."""

    def __init__(self, control: Control, clock: Clock, schedules: Sequence[Schedule], *,
                 on_fire: Callable[[Firing], None] | None = None) -> None:
        self.control = control
        self.clock = clock
        self.schedules = list(schedules)
        self.on_fire = on_fire
        self.since: int | None = None   # firings after this time are due; None: not started

    def start(self) -> None:
        """From now on: what came due before is not made up for."""
        self.since = self.clock.now_ms()

    def fire_due(self) -> list[Firing]:
        """Create the instance of each firing due since the last look (the latest one per
        schedule, when the scheduler fell behind)."""
        if self.since is None:
            self.start()
            return []
        now = self.clock.now_ms()
        if now <= self.since:
            return []
        fired = []
        for schedule in self.schedules:
            due = schedule.cron.between(self.since, now)
            if due:
                fired.append(self._fire(schedule, due[-1]))
        self.since = now
        return fired

    def _fire(self, schedule: Schedule, at: int) -> Firing:
        instance_id = firing_id(schedule.workflow, schedule.expression, at)
        try:
            self.control.create(schedule.workflow, {
                "id": instance_id, "params": firing_params(schedule.expression, at)})
            created = True
        except InstanceAlreadyExistsError:     # fired already, by this process or another
            created = False
        firing = Firing(schedule, at, instance_id, created)
        if self.on_fire is not None:
            self.on_fire(firing)
        return firing

    def upcoming(self, count: int = 3) -> list[dict[str, Any]]:
        """Each schedule with its next ``count`` firing times (epoch ms, after now)."""
        now = self.clock.now_ms()
        out = []
        for schedule in self.schedules:
            times = []
            for at in schedule.cron.after(now):
                times.append(at)
                if len(times) == count:
                    break
            out.append({"workflow": schedule.workflow, "cron": schedule.expression,
                        "next": times})
        return out

    def next_due(self) -> int | None:
        """The next firing time of any schedule (epoch ms), None without schedules."""
        now = self.clock.now_ms()
        times = [at for at in (s.cron.next_after(now) for s in self.schedules) if at is not None]
        return min(times) if times else None

    async def run(self, stop: asyncio.Event) -> None:
        """Fire schedules as they come due, until ``stop`` is set. It looks even while there
        are none: a reloaded config may bring some (``ProjectHost.reload_dispatcher``)."""
        self.start()
        while not stop.is_set():
            due = self.next_due()
            wait_s = LOOK_EVERY_S if due is None else \
                min(max((due - self.clock.now_ms()) / 1000, 0), LOOK_EVERY_S)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
            if not stop.is_set():
                try:
                    self.fire_due()
                except Exception:   # noqa: BLE001 - e.g. the state file locked past its timeout
                    # nothing moved ``since``: the next look fires it (an id already created is
                    # skipped), and one bad moment never ends the schedules of a whole session
                    continue

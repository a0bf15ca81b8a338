"""The live step checklist of one instance: what ``dynwf run`` and ``dynwf dev`` show.

A :class:`Checklist` starts from the tenant's outline (``emulator.analysis.outline``), so every step is
listed, pending, before anything runs; it is then fed the engine's Progress events one by one
(:meth:`Checklist.apply`) and renders as a rich renderable, ready for ``rich.live.Live``.

Matching: a step is identified as the engine identifies it, by (kind, name, count). The outline's
literal names are numbered 1..n in source order per (kind, name). A step the outline could not
name (an f-string in a loop) is inserted when its first event arrives, after the lowest step that
has run so far, so dynamic steps keep their arrival order; when an outline placeholder further
down could have produced its name (same kind, ``f"deploy-{region}"`` matches ``deploy-eu``), the
step takes the placeholder's place in source order and the placeholder gives way to the steps it
stood for. Once the instance finishes, steps that never ran read "not run".

The model never reads a clock: "now" is the ``at`` of the latest event (the engine's clock, which
fast-forwards under ``dynwf run``), or what the caller passes to :meth:`Checklist.render`.
Glyphs carry each state without colour (``NO_COLOR``, logs, CI); styles are the theme's semantic
names from :mod:`dynwf_cli.console`.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.text import Text

from emulator import (OutlineStep, Progress, StepKey, StepKind, StepStatus, format_ms,
                      format_traceback, states, traceback_heading)
from emulator import progress as events

__all__ = ["Checklist", "ChecklistStep", "GLYPHS", "ROLLBACK_MARK", "to_ndjson"]

# step states
PENDING, RUNNING, DONE, RETRYING = "pending", "running", "done", "retrying"
FAILED, SLEEPING, WAITING, REPLAYED = "failed", "sleeping", "waiting", "replayed"
CANCELLED = "cancelled"
#: Marks a rollback step (a compensation handler's run) wherever steps are listed.
ROLLBACK_MARK = "↶"

#: One glyph per state: one cell wide, except the hourglass (two cells in every terminal).
GLYPHS = {PENDING: "○", RUNNING: "◐", DONE: "✓", RETRYING: "↻", FAILED: "✗", SLEEPING: "☾",
          WAITING: "⏳", REPLAYED: "↷", CANCELLED: "⊘"}
_STYLES = {state: f"step.{state}" for state in GLYPHS}
_STATUS_STYLES = {states.QUEUED: "muted", states.RUNNING: "step.running", states.WAITING: "step.waiting",
                  states.PAUSED: "warning", states.WAITING_FOR_PAUSE: "warning", states.COMPLETE: "ok",
                  states.ERRORED: "error", states.TERMINATED: "error", states.UNKNOWN: "muted"}
_FINISHED = states.FINISHED
_QUIET_LEVELS = frozenset({"info", "log", "stdout", "print"})  # shown without a level prefix
_LABEL_WIDTH = (8, 28)            # the name column: at least, at most (longer names end in "…")
_GLYPH_WIDTH = 2
_LOG_INDENT = 2 + _GLYPH_WIDTH + 1  # log lines start under the step's name
_SHOWN_ATTEMPTS = 5  # failed attempts listed under a step (describe --json has them all)
_MIN_DETAIL = 16                  # on a very narrow console the detail still gets this much
_OUTPUT_CHARS = 400               # outputs may be up to 1 MiB; the NDJSON stream has all of it


@dataclass(slots=True, eq=False)
class ChecklistStep:
    """One line of the checklist: a step of the outline, or one that appeared while running."""

    kind: str
    name: str | None              # None: an outline placeholder for steps with computed names
    count: int
    label: str
    outline: OutlineStep | None = None
    state: str = PENDING
    touched: bool = False         # an event has arrived for it
    hidden: bool = False          # a placeholder whose steps have arrived
    attempt: int | None = None
    max_attempts: int | None = None
    error: Any = None
    next_attempt_at: int | None = None
    started_at: int | None = None
    duration_ms: int | None = None
    sleep_from: int | None = None
    until: int | None = None
    slept_ms: int | None = None       # the sleep asked for
    woke_after_ms: int | None = None  # ended ahead of its time (fast-forward, instances wake)
    event_type: str | None = None
    timeout_at: int | None = None
    note: str | None = None       # how a wait ended, when no event said so ("event received")
    sensitive: bool = False       # its output is redacted (sensitive: "output"); never shown
    logs: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=5))
    log_count: int = 0
    #: each failed attempt's (number, error), shown under the step once it is done or failed
    failures: list[tuple[int, Any]] = field(default_factory=list)

    @property
    def key(self) -> StepKey | None:
        return (self.kind, self.name, self.count) if self.name is not None else None


class Checklist:
    """Per-step state of one instance, fed with Progress events, rendered with rich.

    ``fast_forward`` says the engine's clock jumps over sleeps (``dynwf run``): a finished sleep
    then reads "skipped 2h" instead of "slept 2h". ``log_lines`` is how many of each step's
    latest log lines are kept and shown. :meth:`apply` and rendering may run on different
    threads (``rich.live.Live`` refreshes from its own), so both hold one lock.
    """

    def __init__(self, outline: Iterable[OutlineStep] = (), *, instance_id: str | None = None,
                 tenant: str | None = None, workflow: str | None = None,
                 fast_forward: bool = False, log_lines: int = 5, now: int | None = None) -> None:
        self.instance_id = instance_id
        self.tenant = tenant
        self.workflow = workflow
        self.fast_forward = fast_forward
        self.log_lines = log_lines
        self.now = now
        self.status: str | None = None
        self.output: Any = None
        self.error: Any = None
        self.error_traceback: list[dict[str, Any]] | None = None   # the frames run() raised it from
        self.rollback: dict[str, Any] | None = None   # the rollback phase's {"outcome", "error"}
        self.logs: deque[tuple[str, str]] = deque(maxlen=log_lines)   # logged outside any step
        self.log_count = 0
        self._rows: list[ChecklistStep] = []
        self._by_key: dict[StepKey, ChecklistStep] = {}
        # Index just past the lowest row an event has reached. Rows are only ever inserted at
        # or after it, so the rows above it never move.
        self._frontier = 0
        self._lock = threading.RLock()
        seen: dict[tuple[str, str], int] = {}
        for entry in outline:
            count = 1
            if entry.name is not None:
                count = seen[(entry.kind, entry.name)] = seen.get((entry.kind, entry.name), 0) + 1
            row = self._new_row(entry.kind, entry.name, count, entry.label, entry)
            self._rows.append(row)
            if row.key is not None:
                self._by_key[row.key] = row

    @property
    def steps(self) -> list[ChecklistStep]:
        """The visible lines, top to bottom."""
        return [row for row in self._rows if not row.hidden]

    @property
    def finished(self) -> bool:
        return self.status in _FINISHED

    # ---- the model ----------------------------------------------------------------------------

    def apply(self, event: Progress) -> None:
        """Take one Progress event into account; events of other instances are ignored."""
        with self._lock:
            self._apply(event)

    def _apply(self, event: Progress) -> None:
        if self.instance_id is None:
            self.instance_id = event.instance_id
        elif event.instance_id != self.instance_id:
            return
        self.now = event.at if self.now is None else max(self.now, event.at)
        data = event.data
        if event.kind == events.INSTANCE_STATUS:
            self._status(data, event.at)
            return
        if event.kind == events.LOG and event.step is None:
            self.logs.append((str(data.get("level", "info")), str(data.get("message", ""))))
            self.log_count += 1
            return
        if event.step is None:
            return
        row = self._row_for(tuple(event.step))  # type: ignore[arg-type]
        if not row.touched:
            row.touched = True
            # only outline rows arrive here untouched, once each: a scan per outline step
            self._frontier = max(self._frontier, self._rows.index(row) + 1)
        handler = _HANDLERS.get(event.kind)
        if handler is not None:
            handler(row, event, data)

    def _status(self, data: dict[str, Any], at: int) -> None:
        status = data.get("status")
        if not isinstance(status, str):
            return
        self.status = status
        if isinstance(data.get("rollback"), dict):   # the rollback phase's outcome
            self.rollback = data["rollback"]
        if status == states.COMPLETE:
            self.output = data.get("output")
            for row in self._rows:
                # A wait resolved while its run was still live sends no step event; the run
                # completing is what says it ended well.
                if row.state == WAITING:
                    row.state, row.note = DONE, "event received"
                elif row.state == SLEEPING:
                    _end_sleep(row, at)
        elif status == states.ERRORED:
            self.error = data.get("error")
            frames = data.get("traceback")
            self.error_traceback = frames if isinstance(frames, list) else None
        elif status in (states.QUEUED, states.RUNNING) and "rollback" not in data:
            # a restart runs again from the top (a rollback phase queues the instance too)
            self.output = self.error = self.error_traceback = self.rollback = None

    def _row_for(self, key: StepKey) -> ChecklistStep:
        row = self._by_key.get(key)
        if row is not None:
            return row
        kind, name, count = key
        if kind == StepKind.ROLLBACK:   # the rollback phase comes after every step, in its own order
            row = self._new_row(kind, name, count, f"{ROLLBACK_MARK} rollback {name}", None)
            self._rows.append(row)
            self._by_key[key] = row
            row.touched = True
            return row
        row = self._new_row(kind, name, count, name, None)
        position = self._frontier
        for index in range(position, len(self._rows)):  # untouched outline rows only
            ahead = self._rows[index]
            if ahead.name is None and ahead.kind == kind and ahead.outline is not None \
                    and ahead.outline.could_be(name):
                ahead.hidden = True  # the placeholder stood for this step (and those to come)
                position = index
                break
        self._rows.insert(position, row)
        self._by_key[key] = row
        row.touched, self._frontier = True, position + 1
        return row

    def _new_row(self, kind: str, name: str | None, count: int, label: str,
                 outline: OutlineStep | None) -> ChecklistStep:
        return ChecklistStep(kind, name, count, label, outline, logs=deque(maxlen=self.log_lines))

    # ---- rendering ----------------------------------------------------------------------------

    def __rich__(self) -> RenderableType:
        return self.render()

    def render(self, now: int | None = None) -> RenderableType:
        """The checklist as of ``now`` (epoch ms; default: the latest event's time).

        The result lays itself out at the width it is given: names in one column (shortened
        with "…" past 28 cells), details wrapped inside their own column, log lines cut at the
        edge, and no trailing spaces (the text is also read as plain text: logs, CI, tests).
        """
        return _View(self, self.now if now is None else now)

    def _header(self) -> Text:
        text = Text("instance ")
        text.append(self.instance_id or "?", style="bold")
        for what, value in (("tenant", self.tenant), ("workflow", self.workflow)):
            if value:
                text.append(f" · {what} ")
                text.append(value, style="bold")
        status = self.status or "starting"
        text.append(" · ")
        text.append(status, style=_STATUS_STYLES.get(status, "muted"))
        return text

    def _footer(self) -> tuple[Text, Text] | None:
        """(label, text) of the line under the steps: the output, or the instance's error."""
        if self.status == states.COMPLETE:
            shown = _json(self.output)
            if len(shown) > _OUTPUT_CHARS:
                shown = f"{shown[:_OUTPUT_CHARS]}… ({len(shown)} characters)"
            return Text("output", style="ok"), Text(shown)
        if self.status == states.ERRORED and self.error is not None:
            text = Text(_error_text(self.error), style="error")
            if self.rollback is not None:
                text += Text(f"  ({_rollback_note(self.rollback)})", style="muted")
            return Text("error", style="error"), text
        if self.status == states.TERMINATED and self.rollback is not None:
            return Text("rollback", style="muted"), Text(_rollback_note(self.rollback))
        return None

    def _detail(self, row: ChecklistStep, now: int | None) -> Text:
        text = Text(style=_STYLES[row.state])
        state = row.state
        if state == PENDING:
            text.append("not run" if self.finished else "pending")
            if not self.finished:
                text.append(_pending_extra(row), style="muted")
        elif state == RUNNING:
            elapsed = now - row.started_at if now is not None and row.started_at is not None else 0
            text.append(f"running for {format_ms(elapsed)}" if elapsed >= 1000 else "running")
            text.append(_attempts(row), style="muted")
        elif state == DONE:
            text.append(_done_text(row, self.fast_forward))
        elif state == RETRYING:
            text.append(f"attempt {row.attempt}" if row.attempt else "attempt")
            if row.max_attempts:
                text.append(f" of {row.max_attempts}")
            text.append(" failed")
            if row.error is not None:
                text.append(f": {_error_text(row.error)}")
            text.append(f" · next try {_in(row.next_attempt_at, now)}" if row.next_attempt_at
                        is not None else " · will retry", style="muted")
        elif state == FAILED:
            text.append(f"failed: {_error_text(row.error)}" if row.error is not None else "failed")
            if row.attempt and row.attempt > 1:
                text.append(_attempts(row), style="muted")
        elif state == SLEEPING:
            text.append(f"sleeping until {_clock(row.until, now)}" if row.until is not None
                        else "sleeping")
            if row.until is not None and now is not None:
                text.append(f" · {format_ms(max(row.until - now, 0))} left", style="muted")
        elif state == WAITING:
            text.append(f'waiting for event "{row.event_type}"' if row.event_type
                        else "waiting for an event")
            if row.timeout_at is not None:
                text.append(f" · times out {_in(row.timeout_at, now)}", style="muted")
        elif state == REPLAYED:
            text.append("skipped on replay")
        elif state == CANCELLED:
            text.append("cancelled by the workflow's code")
            text.append(_attempts(row), style="muted")
        return text


class _View:
    """One rendering of a checklist at a given time, laid out at the console's width."""

    def __init__(self, checklist: Checklist, now: int | None) -> None:
        self.checklist, self.now = checklist, now

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        with self.checklist._lock:
            lines = self._lines(console, options.max_width)
        yield from lines

    def _lines(self, console: Console, width: int) -> list[Text]:
        checklist = self.checklist
        rows = checklist.steps
        widest = max((cell_len(_label(r)) for r in rows), default=0)
        label_width = min(max(widest, _LABEL_WIDTH[0]), _LABEL_WIDTH[1])
        lines = [checklist._header()]
        for row in rows:
            glyph = Text(GLYPHS[row.state], style=_STYLES[row.state])
            lines += _columns(console, width, glyph, Text(_label(row)), label_width,
                              checklist._detail(row, self.now))
            lines += _log_lines(row.logs, row.log_count, indent=_LOG_INDENT, width=width)
            lines += _attempt_lines(row, indent=_LOG_INDENT, width=width)
        if checklist.logs:
            lines.append(Text("  instance log", style="muted"))
            lines += _log_lines(checklist.logs, checklist.log_count, indent=_LOG_INDENT,
                                width=width)
        footer = checklist._footer()
        if footer is not None:
            lines += _columns(console, width, Text(""), footer[0], len("output"), footer[1])
            if checklist.status == states.ERRORED and checklist.error_traceback:
                lines += _frame_lines([traceback_heading(checklist.error_traceback),
                                       *format_traceback(checklist.error_traceback)],
                                      indent=_LOG_INDENT, width=width)
        return lines


# ---- event handlers: (row, event, data) -> None ------------------------------------------------

def _on_started(row: ChecklistStep, event: Progress, data: dict[str, Any]) -> None:
    row.state, row.started_at = RUNNING, event.at
    row.attempt = data.get("attempt", row.attempt)
    row.max_attempts = data.get("max_attempts", row.max_attempts)
    row.next_attempt_at = None


def _on_attempt_failed(row: ChecklistStep, event: Progress, data: dict[str, Any]) -> None:
    row.state, row.error = RETRYING, data.get("error")
    row.attempt = data.get("attempt", row.attempt)
    _keep_failure(row, row.attempt, row.error)
    row.max_attempts = data.get("max_attempts", row.max_attempts)
    row.next_attempt_at = data.get("next_attempt_at")


def _on_committed(row: ChecklistStep, event: Progress, data: dict[str, Any]) -> None:
    row.state, row.error = DONE, None
    row.attempt = data.get("attempt", row.attempt)
    row.duration_ms = data.get("duration_ms")
    row.sensitive = bool(data.get("sensitive"))


def _on_failed(row: ChecklistStep, event: Progress, data: dict[str, Any]) -> None:
    row.state, row.error = FAILED, data.get("error")
    row.attempt = data.get("attempt", row.attempt)
    _keep_failure(row, row.attempt, row.error)


def _on_cancelled(row: ChecklistStep, event: Progress, data: dict[str, Any]) -> None:
    row.state, row.error = CANCELLED, None
    row.attempt = data.get("attempt", row.attempt)


def _on_replayed(row: ChecklistStep, event: Progress, data: dict[str, Any]) -> None:
    # A replay re-reads what an earlier run persisted. A step this checklist saw finish keeps its
    # line; one it saw sleeping or waiting has ended well (a failed one would have been woken
    # with "failed"); one it never saw was done before it started watching.
    if row.state == WAITING:
        row.state, row.note = DONE, "event received"
    elif row.state == SLEEPING:
        _end_sleep(row, event.at)
    elif row.state in (PENDING, RUNNING, RETRYING):
        row.state = REPLAYED


def _on_sleeping(row: ChecklistStep, event: Progress, data: dict[str, Any]) -> None:
    row.state, row.until = SLEEPING, data.get("until")
    if row.sleep_from is None:
        row.sleep_from = event.at


def _on_waiting(row: ChecklistStep, event: Progress, data: dict[str, Any]) -> None:
    row.state = WAITING
    row.event_type = data.get("event_type", row.event_type)
    row.timeout_at = data.get("timeout_at")


def _on_woken(row: ChecklistStep, event: Progress, data: dict[str, Any]) -> None:
    status = data.get("status")
    if row.kind == StepKind.SLEEP and status == StepStatus.DONE:
        _end_sleep(row, event.at, data.get("early_ms") or 0)
    elif row.kind == StepKind.WAIT and status == StepStatus.FAILED:
        row.state, row.note = FAILED, None
        row.error = f'timed out waiting for event "{row.event_type}"' if row.event_type \
            else "timed out waiting for an event"
    elif status == StepStatus.READY:       # a retry's back-off ended: the next attempt starts now
        row.next_attempt_at = event.at
    elif status == StepStatus.DONE:
        row.state = DONE


def _end_sleep(row: ChecklistStep, at: int, early_ms: int = 0) -> None:
    row.state = DONE
    if row.sleep_from is not None:
        row.slept_ms = max((row.until if row.until is not None else at) - row.sleep_from, 0)
        if early_ms > 0:
            row.woke_after_ms = max(at - row.sleep_from, 0)


def _on_log(row: ChecklistStep, event: Progress, data: dict[str, Any]) -> None:
    row.logs.append((str(data.get("level", "info")), str(data.get("message", ""))))
    row.log_count += 1


_HANDLERS = {
    events.STEP_STARTED: _on_started, events.STEP_ATTEMPT_FAILED: _on_attempt_failed,
    events.STEP_COMMITTED: _on_committed, events.STEP_FAILED: _on_failed,
    events.STEP_CANCELLED: _on_cancelled,
    events.STEP_REPLAYED: _on_replayed, events.STEP_SLEEPING: _on_sleeping,
    events.STEP_WAITING: _on_waiting, events.STEP_WOKEN: _on_woken, events.LOG: _on_log,
}


# ---- text helpers ------------------------------------------------------------------------------

def _rollback_note(rollback: dict[str, Any]) -> str:
    if rollback.get("outcome") == "complete":
        return "rollback complete"
    error = rollback.get("error")
    return "rollback failed" + (f": {_error_text(error)}" if error else "")


def _label(row: ChecklistStep) -> str:
    return row.label if row.count == 1 else f"{row.label} #{row.count}"


def _columns(console: Console, width: int, glyph: Text, label: Text, label_width: int,
             detail: Text) -> list[Text]:
    """``  ✓  name   detail`` with the detail wrapped inside its own column."""
    glyph = glyph.copy()
    glyph.pad_right(_GLYPH_WIDTH - cell_len(glyph.plain))
    label = label.copy()
    label.truncate(label_width, overflow="ellipsis", pad=True)
    prefix = Text("  ") + glyph + Text(" ") + label + Text(" ")
    indent = prefix.cell_len
    lines = detail.wrap(console, max(width - indent, _MIN_DETAIL), overflow="fold") \
        if detail.plain else [Text()]
    out = []
    for number, line in enumerate(lines):
        text = (prefix if number == 0 else Text(" " * indent)) + line
        text.rstrip()
        text.no_wrap, text.overflow = True, "crop"
        out.append(text)
    return out


def _log_lines(logs: Iterable[tuple[str, str]], total: int, *, indent: int,
               width: int) -> list[Text]:
    """A step's latest log lines, one screen line each (the NDJSON stream has them whole)."""
    kept = list(logs)
    lines = []
    if total > len(kept):
        lines.append(Text(f"{' ' * indent}│ … {total - len(kept)} earlier", style="step.log"))
    for level, message in kept:
        first, _, more = message.strip("\n").partition("\n")
        text = Text(f"{' ' * indent}│ ", style="step.log")
        if level not in _QUIET_LEVELS:
            text.append(f"{level}: ", style="warning" if level == "warning" else
                        "error" if level in ("error", "stderr", "critical") else "step.log")
        text.append(first + (" …" if more else ""), style="step.log")
        lines.append(text)
    for text in lines:
        text.truncate(width, overflow="ellipsis")
        text.rstrip()
        text.no_wrap = True
    return lines


def _keep_failure(row: ChecklistStep, attempt: int | None, error: Any) -> None:
    if attempt is not None and error is not None and \
            not any(number == attempt for number, _ in row.failures):
        row.failures.append((attempt, error))


def _attempt_lines(row: ChecklistStep, *, indent: int, width: int) -> list[Text]:
    """Under a finished step that failed an attempt, every attempt's outcome ("attempt 1 failed:
    KeyError: 'sku'", "attempt 2 done"), then the user's frames of the error it failed with
    (``emulator.tracebacks``); long frames are cut at the edge, like log lines."""
    if row.state not in (DONE, FAILED):
        return []
    # a failed step's last attempt is on the step's own line
    earlier = row.failures if row.state == DONE else \
        [(number, error) for number, error in row.failures if number != row.attempt]
    pad = " " * indent
    lines = [Text(f"{pad}attempt {number} failed: {_error_text(error)}", style="muted")
             for number, error in earlier[-_SHOWN_ATTEMPTS:]]
    if len(earlier) > _SHOWN_ATTEMPTS:
        lines.insert(0, Text(f"{pad}… {len(earlier) - _SHOWN_ATTEMPTS} earlier attempts "
                             "failed", style="muted"))
    if row.state == DONE and row.attempt and earlier:
        lines.append(Text(f"{pad}attempt {row.attempt} done", style="muted"))
    elif row.state == FAILED and isinstance(row.error, dict) \
            and isinstance(row.error.get("traceback"), list):
        lines += _frame_lines([f"attempt {row.attempt or '?'} raised it (most recent call last):",
                               *format_traceback(row.error["traceback"])],
                              indent=indent, width=width)
    for text in lines:
        text.truncate(width, overflow="ellipsis")
        text.rstrip()
        text.no_wrap = True
    return lines


def _frame_lines(lines: list[str], *, indent: int, width: int) -> list[Text]:
    """A heading and a traceback's lines, in the error's style, cut at the edge."""
    out = []
    for line in lines:
        text = Text(" " * indent + line, style="error")
        text.truncate(width, overflow="ellipsis")
        text.rstrip()
        text.no_wrap = True
        out.append(text)
    return out


def _pending_extra(row: ChecklistStep) -> str:
    extra = []
    entry = row.outline
    if entry is not None:
        if entry.method == "sleep" and entry.duration:
            extra.append(f"sleep {entry.duration}")
        elif entry.method == "sleep_until":
            extra.append("sleep until a time")
        elif entry.kind == StepKind.WAIT:
            extra.append(f'event "{entry.event_type}"' if entry.event_type else "an event")
        if entry.in_loop:
            extra.append("in a loop")
        if entry.conditional:
            extra.append("conditional")
    return "".join(f" · {e}" for e in extra)


def _attempts(row: ChecklistStep) -> str:
    if not row.attempt:
        return ""
    return f" · attempt {row.attempt}" + (f" of {row.max_attempts}" if row.max_attempts else "")


def _done_text(row: ChecklistStep, fast_forward: bool) -> str:
    if row.kind == StepKind.SLEEP:
        if row.slept_ms is None:
            return "done"
        if fast_forward:
            return f"done · skipped {format_ms(row.slept_ms)}"
        if row.woke_after_ms is not None:
            return (f"done · woken after {format_ms(row.woke_after_ms)} of "
                    f"{format_ms(row.slept_ms)}")
        return f"done · slept {format_ms(row.slept_ms)}"
    if row.kind == StepKind.WAIT:
        return f"done · {row.note}" if row.note else "done"
    text = "done" if row.duration_ms is None else f"done in {format_ms(row.duration_ms)}"
    if row.attempt and row.attempt > 1:
        text += _attempts(row)
    if row.sensitive:
        text += " · output redacted"
    return text


def _in(at: int, now: int | None) -> str:
    """``in 10s`` relative to ``now``; ``now`` when it is due."""
    if now is None:
        return f"at {_clock(at, None)}"
    return "now" if at <= now else f"in {format_ms(at - now)}"


def _clock(at: int | None, now: int | None) -> str:
    """An engine time as UTC: the time of day when it is today (by ``now``), else the date too."""
    if at is None:
        return "?"
    when = datetime.fromtimestamp(at / 1000, tz=timezone.utc)
    same_day = now is not None and \
        datetime.fromtimestamp(now / 1000, tz=timezone.utc).date() == when.date()
    return when.strftime("%H:%M:%S UTC" if same_day else "%Y-%m-%d %H:%M UTC")


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        name, message = error.get("name"), error.get("message")
        if name and message:
            return f"{name}: {message}"
        return str(name or message or _json(error))
    return str(error)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


# ---- machine output ----------------------------------------------------------------------------

def to_ndjson(progress: Progress) -> str:
    """One event as one line of JSON (no newline), for ``--json`` and non-terminal output.

    The keys are :meth:`Progress.to_dict`'s: ``kind``, ``instance``, ``at`` (epoch ms, engine
    clock), ``step`` (``{"kind", "name", "count"}``) when the event is about a step, then the
    event's own fields.
    """
    return json.dumps(progress.to_dict(), ensure_ascii=False, separators=(",", ":"), default=str)

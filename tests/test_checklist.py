"""The step outline read from tenant source, and the live checklist rendered from Progress events.

Checklist renderings are compared, exactly, with golden files in ``tests/golden/checklist/``:
plain text at 80 columns without colour, which is also what a person sees with ``NO_COLOR``.
After an intended change in the rendering, regenerate them and review the diff:

    DYNWF_UPDATE_GOLDEN=1 python -m pytest -q tests/test_checklist.py
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.live import Live

from dynwf_cli.checklist import GLYPHS, Checklist, to_ndjson
from dynwf_cli.console import THEME
from emulator.engine import Engine, VirtualClock, WorkflowDefinition
from emulator.engine.progress import Progress
from emulator.analysis.outline import TenantSourceError, outline_steps

GOLDEN = Path(__file__).parent / "golden" / "checklist"
UPDATE_GOLDEN = os.environ.get("DYNWF_UPDATE_GOLDEN") == "1"

T0 = 1_772_442_000_000          # 2026-03-02 09:00:00 UTC
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

# A CI/CD tenant: the shapes the outline must read (a step named after its function, a
# dependency, a loop of steps with computed names, a sleep, a wait), and nothing it imports.
PIPELINE = '''\
class TenantWorkflow:
    async def run(self, event, step):
        repo = event["payload"]["repo"]

        @step.do("checkout")
        async def checkout():
            return {"sha": "4f2a9c1"}

        @step.do(config={"retries": {"limit": 3, "delay": "10 seconds", "backoff": "constant"}})
        async def build(checkout, ctx):
            if ctx["attempt"] <= event["payload"].get("registry_outages", 0):
                raise ConnectionError("registry timed out")
            return {"image": f"{repo}:{checkout['sha']}"}

        image = (await build())["image"]
        for region in event["payload"]["regions"]:
            @step.do(f"deploy-{region}")
            async def deploy():
                return {"region": region, "image": image}
            await deploy()

        await step.sleep("bake", "2 hours")
        approval = await step.wait_for_event("approval", "deploy-approval", timeout="24 hours")

        @step.do("promote")
        async def promote():
            return {"image": image, "approved_by": approval["payload"]["by"]}

        return await promote()
'''


# ---- harness ------------------------------------------------------------------------------

def render(checklist: Checklist, now: int | None = None) -> str:
    console = Console(width=80, no_color=True, record=True, force_terminal=False, theme=THEME,
                      file=io.StringIO())
    console.print(checklist.render(now))
    return console.export_text()


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path.name}; create it with DYNWF_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


def pipeline_checklist(**options: Any) -> Checklist:
    return Checklist(outline_steps(PIPELINE), instance_id="deploy-7", tenant="acme", **options)


class Feed:
    """Applies events of instance ``deploy-7`` at times relative to T0."""

    def __init__(self, checklist: Checklist) -> None:
        self.checklist = checklist

    def __call__(self, kind: str, at: int, step: tuple[str, str, int] | None = None,
                 **data: Any) -> None:
        self.checklist.apply(Progress(kind, "deploy-7", T0 + at, step, data))

    def start(self) -> None:
        self("instance.status", 0, status="queued")
        self("instance.status", 0, status="running")

    def checkout(self) -> None:
        self("step.started", 0, ("do", "checkout", 1), attempt=1, max_attempts=6)
        self("step.committed", 240, ("do", "checkout", 1), attempt=1, duration_ms=240)

    def build(self) -> None:
        self("step.started", 240, ("do", "build", 1), attempt=1, max_attempts=4)
        self("step.committed", 65_240, ("do", "build", 1), attempt=1, duration_ms=65_000)

    def deploys(self) -> None:
        for n, region in enumerate(("eu", "us")):
            at = 70 * SECOND + n * 10 * SECOND
            self("step.started", at, ("do", f"deploy-{region}", 1), attempt=1, max_attempts=6)
            self("step.committed", at + 4_500, ("do", f"deploy-{region}", 1), attempt=1,
                 duration_ms=4_500)

    def bake(self, *, wake: bool) -> None:
        self("step.sleeping", 90 * SECOND, ("sleep", "bake", 1), until=T0 + 90 * SECOND + 2 * HOUR)
        self("instance.status", 90 * SECOND, status="waiting")
        if wake:
            self("step.woken", 90 * SECOND + 2 * HOUR, ("sleep", "bake", 1), status="done")
            self("instance.status", 90 * SECOND + 2 * HOUR, status="queued")

    def approval_wait(self) -> None:
        at = 90 * SECOND + 2 * HOUR
        self("instance.status", at, status="running")
        for key in (("do", "checkout", 1), ("do", "build", 1), ("do", "deploy-eu", 1),
                    ("do", "deploy-us", 1), ("sleep", "bake", 1)):
            self("step.replayed", at, key)
        self("step.waiting", at, ("wait", "approval", 1), event_type="deploy-approval",
             timeout_at=T0 + at + 24 * HOUR)
        self("instance.status", at, status="waiting")


# ---- outline_steps ------------------------------------------------------------------------

def steps_of(source: str, **options: Any) -> list[tuple[Any, ...]]:
    return [(s.kind, s.name, s.line, s.conditional, s.in_loop)
            for s in outline_steps(source, **options)]


def test_outline_reads_every_kind_of_step_in_source_order():
    steps = outline_steps(PIPELINE)
    assert [(s.kind, s.method, s.name, s.label, s.line) for s in steps] == [
        ("do", "do", "checkout", "checkout", 5),
        ("do", "do", "build", "build", 9),        # @step.do(config=...): named after the function
        ("do", "do", None, "deploy-{region}", 17),
        ("sleep", "sleep", "bake", "bake", 22),
        ("wait", "wait_for_event", "approval", "approval", 23),
        ("do", "do", "promote", "promote", 25),
    ]
    deploy, bake, approval = steps[2], steps[3], steps[4]
    assert deploy.in_loop and not deploy.conditional
    assert deploy.could_be("deploy-eu") and not deploy.could_be("notify-eu")
    assert bake.duration == "2 hours"
    assert (approval.event_type, approval.timeout) == ("deploy-approval", "24 hours")
    assert not any(s.conditional or s.in_loop for s in steps if s is not deploy)


def test_outline_of_the_shipped_example_tenants():
    root = Path(__file__).resolve().parent.parent / "examples" / "hello" / "tenants"
    acme = outline_steps((root / "acme" / "index.py").read_text())
    assert [(s.kind, s.name) for s in acme] == [
        ("do", "reserve_stock"), ("do", "quote"), ("wait", "payment"), ("sleep", "packing"),
        ("do", "ship")]
    globex = outline_steps((root / "globex" / "index.py").read_text())
    # the wait sits in a ``try`` body: it always runs, whatever the handler does
    assert [(s.name, s.conditional) for s in globex] == [
        ("open account", False), ("grace period", False), ("confirm email", False),
        ("activate", False)]
    assert globex[2].timeout == "2 days" and globex[1].duration == "5 seconds"


def test_outline_names_of_every_decorator_form():
    source = '''\
class TenantWorkflow:
    async def run(self, event, step):
        @step.do
        async def bare():
            pass

        @step.do()
        async def empty():
            pass

        @step.do(None, concurrent=True)
        async def none_name():
            pass

        @step.do(name="by-keyword")
        async def keyword():
            pass

        async def by_hand():
            pass
        by_hand_step = step.do("applied")(by_hand)
        unnamed = step.do()(by_hand)
'''
    assert [(s.name, s.line) for s in outline_steps(source)] == [
        ("bare", 3), ("empty", 7), ("none_name", 11), ("by-keyword", 15), ("applied", 21),
        ("by_hand", 22)]


def test_outline_flags_loops_branches_and_computed_names():
    source = '''\
class TenantWorkflow:
    async def run(self, event, step):
        orders = event["payload"]["orders"]
        for order in orders:
            await step.sleep(f"cool-{order['id']}", 5000)
        if event["payload"].get("vip"):
            await step.do("upgrade")(lambda: None)()
        else:
            await step.sleep_until("later", 1_800_000_000_000)
        name = event["payload"]["step"]
        await step.wait_for_event(name, "confirm")
        while True:
            found = await step.wait_for_event("poll", type="poll-result", timeout=60_000)
            if found:
                break
        results = [await step.do(f"item-{i}")(lambda: i)() for i in range(3)]
        try:
            await step.sleep("settle", "1 minute")
        except Exception:
            await step.sleep("recover", "5 minutes")
        finally:
            await step.sleep("tidy", "1 second")
        ok = event["payload"]["ok"] or await step.wait_for_event("fallback", "retry")
'''
    steps = outline_steps(source)
    assert [(s.kind, s.label, s.line, s.conditional, s.in_loop) for s in steps] == [
        ("sleep", "cool-{order['id']}", 5, False, True),
        ("do", "upgrade", 7, True, False),
        ("sleep", "later", 9, True, False),
        ("wait", "{name}", 11, False, False),
        ("wait", "poll", 13, False, True),
        ("do", "item-{i}", 16, False, True),
        ("sleep", "settle", 18, False, False),
        ("sleep", "recover", 20, True, False),
        ("sleep", "tidy", 22, False, False),
        ("wait", "fallback", 23, True, False),
    ]
    assert steps[0].duration == "5000 ms"            # the runtime reads a bare number as ms
    assert steps[0].name is None and steps[3].name is None
    assert steps[2].method == "sleep_until" and steps[2].duration is None
    assert (steps[4].event_type, steps[4].timeout) == ("poll-result", "60000 ms")
    assert steps[3].could_be("anything at all")


def test_outline_follows_helpers_defined_in_run_but_not_step_bodies():
    source = '''\
class TenantWorkflow:
    async def run(self, event, wf):
        async def notify(channel):
            @wf.do(f"notify-{channel}")
            async def send():
                return channel
            return await send()

        @wf.do("charge")
        async def charge():
            await wf.sleep("never a step", "1 second")   # a step body holds no steps
            return 1

        await charge()
        for channel in ("email", "sms"):
            await notify(channel)
        await step.sleep("not the handle", "1 second")
'''
    # the handle is run()'s third parameter, whatever it is called
    assert steps_of(source) == [("do", None, 4, True, False), ("do", "charge", 9, False, False)]


def test_outline_uses_the_entry_class_and_its_bases():
    source = '''\
class Base:
    async def run(self, event, step):
        await step.sleep("from-base", "1 second")

class TenantWorkflow(Base):
    pass

class Other:
    async def run(self, event, step):
        await step.do("other")(print)()
'''
    assert steps_of(source) == [("sleep", "from-base", 3, False, False)]
    assert steps_of(source, entry_class="Other") == [("do", "other", 10, False, False)]
    assert outline_steps(source, entry_class="Missing") == []
    assert outline_steps("def run(event, step):\n    pass\n") == []


def test_outline_of_invalid_python_names_the_line():
    source = '''\
class TenantWorkflow:
    async def run(self, event, step):
        await step.sleep("pause", "1 second"
        return 1
'''
    with pytest.raises(TenantSourceError) as caught:
        outline_steps(source, file="tenants/acme/index.py")
    error = caught.value
    assert (error.code, error.file, error.line) == ("tenant.invalid_python",
                                                    "tenants/acme/index.py", 3)
    assert str(error).startswith("[tenant.invalid_python] tenants/acme/index.py:3:")
    assert "invalid Python" in str(error) and "dynwf check" in str(error)


def test_outline_never_runs_the_code(tmp_path):
    marker = tmp_path / "ran"
    source = f'''\
open({str(marker)!r}, "w").close()

class TenantWorkflow:
    open({str(marker)!r}, "w").close()
    async def run(self, event, step):
        await step.sleep("pause", "1 second")
'''
    assert steps_of(source) == [("sleep", "pause", 6, False, False)]
    assert not marker.exists()


# ---- checklist goldens ----------------------------------------------------------------------

def test_golden_all_pending_from_the_outline():
    assert_golden("all_pending", render(pipeline_checklist()))


def test_golden_running_then_done():
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    feed.start()
    feed.checkout()
    feed("step.started", 240, ("do", "build", 1), attempt=1, max_attempts=4)
    assert_golden("running", render(checklist))
    # between events the caller passes its own "now": the running step shows its elapsed time
    assert_golden("running_later", render(checklist, now=T0 + 240 + 12 * SECOND))


def test_golden_retrying_with_error_and_next_try():
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    feed.start()
    feed.checkout()
    feed("step.started", 240, ("do", "build", 1), attempt=1, max_attempts=4)
    feed("step.attempt_failed", 3_240, ("do", "build", 1), attempt=1, max_attempts=4,
         error={"name": "BuildError", "message": "docker daemon not reachable at "
                "unix:///var/run/docker.sock: connection refused"},
         next_attempt_at=T0 + 13_240)
    feed("instance.status", 3_240, status="waiting")
    assert_golden("retrying", render(checklist))
    # the back-off timer fires: due now, and the next attempt runs as attempt 2 of 4
    feed("step.woken", 13_240, ("do", "build", 1), status="ready")
    assert "next try now" in render(checklist)
    feed("step.started", 13_240, ("do", "build", 1), attempt=2, max_attempts=4)
    assert f"◐  {'build':15} running · attempt 2 of 4\n" in render(checklist)


def test_golden_failed_step():
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    feed.start()
    feed.checkout()
    feed("step.started", 40_000, ("do", "build", 1), attempt=4, max_attempts=4)
    feed("step.failed", 41_000, ("do", "build", 1), attempt=4,
         error={"name": "BuildError", "message": "tests failed: 3 of 212"})
    assert_golden("failed_step", render(checklist))


def test_golden_errored_with_error():
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    feed.start()
    feed.checkout()
    feed("step.started", 240, ("do", "build", 1), attempt=1, max_attempts=1)
    feed("step.failed", 900, ("do", "build", 1), attempt=1,
         error={"name": "NonRetryableError", "message": "Dockerfile not found"})
    feed("instance.status", 900, status="errored",
         error={"name": "NonRetryableError", "message": "Dockerfile not found"})
    assert_golden("errored", render(checklist))


def test_golden_dynamic_steps_inserted_mid_run():
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    feed.start()
    feed.checkout()
    feed.build()
    feed("step.started", 70 * SECOND, ("do", "deploy-eu", 1), attempt=1, max_attempts=6)
    feed("step.committed", 74 * SECOND, ("do", "deploy-eu", 1), attempt=1, duration_ms=4_000)
    feed("step.started", 74 * SECOND, ("do", "deploy-us", 1), attempt=1, max_attempts=6)
    # a step from a method the outline does not follow: inserted after the last that ran
    feed("step.started", 75 * SECOND, ("do", "notify-slack", 1), attempt=1, max_attempts=6)
    text = render(checklist)
    assert "deploy-{region}" not in text    # the placeholder gave way to the steps it stood for
    assert_golden("dynamic", text)


def test_golden_log_lines_under_their_step():
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    feed.start()
    feed.checkout()
    feed("step.started", 240, ("do", "build", 1), attempt=1, max_attempts=4)
    for n in range(1, 6):
        feed("log", 240 + n, ("do", "build", 1), level="info", message=f"layer {n}/9 cached")
    feed("log", 300, ("do", "build", 1), level="warning",
         message="base image python:3.11-slim is 41 days old")
    feed("log", 310, ("do", "build", 1), level="stderr",
         message="Traceback (most recent call last):\n  File \"build.py\", line 3")
    feed("log", 320, ("do", "checkout", 1), level="info", message="fetched 4f2a9c1 " + "x" * 90)
    feed("log", 330, None, level="info", message="tenant config reloaded")
    assert_golden("logs", render(checklist))


def test_golden_sleeping_with_time_left():
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    feed.start()
    feed.checkout()
    feed.build()
    feed.deploys()
    feed.bake(wake=False)
    assert_golden("sleeping", render(checklist))
    assert_golden("sleeping_later", render(checklist, now=T0 + 90 * SECOND + 30 * MINUTE))


def test_golden_waiting_for_an_event():
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    feed.start()
    feed.checkout()
    feed.build()
    feed.deploys()
    feed.bake(wake=True)
    feed.approval_wait()
    assert_golden("waiting", render(checklist))


def test_golden_fast_forwarded_sleep_reads_skipped():
    checklist = pipeline_checklist(fast_forward=True)
    feed = Feed(checklist)
    feed.start()
    feed.checkout()
    feed.build()
    feed.deploys()
    feed.bake(wake=True)
    assert_golden("fast_forward", render(checklist))


def test_golden_replayed_steps():
    # watching an instance that already ran: its first steps arrive as replays
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    feed.approval_wait()
    feed("instance.status", 5 * HOUR, status="running")
    feed("step.replayed", 5 * HOUR, ("wait", "approval", 1))
    feed("step.started", 5 * HOUR, ("do", "promote", 1), attempt=1, max_attempts=6)
    assert_golden("replayed", render(checklist))


def test_golden_complete_with_output():
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    feed.start()
    feed.checkout()
    feed.build()
    feed.deploys()
    feed.bake(wake=True)
    feed.approval_wait()
    # the event arrives; the instance is replayed from the top and the wait reads as received
    at = 3 * HOUR
    feed("instance.status", at, status="queued")
    feed("instance.status", at, status="running")
    for key in (("do", "checkout", 1), ("do", "build", 1), ("do", "deploy-eu", 1),
                ("do", "deploy-us", 1), ("sleep", "bake", 1), ("wait", "approval", 1)):
        feed("step.replayed", at, key)
    feed("step.started", at, ("do", "promote", 1), attempt=1, max_attempts=6)
    feed("step.committed", at + 800, ("do", "promote", 1), attempt=1, duration_ms=800)
    feed("instance.status", at + 800, status="complete",
         output={"image": "acme/api:4f2a9c1", "approved_by": "oncall"})
    assert_golden("complete", render(checklist))


# ---- checklist model ------------------------------------------------------------------------

def test_repeated_literal_names_match_counts_in_order():
    source = '''\
class TenantWorkflow:
    async def run(self, event, step):
        await step.sleep("pause", "1 second")
        await step.do("work")(lambda: 1)()
        await step.sleep("pause", "1 second")
'''
    checklist = Checklist(outline_steps(source), instance_id="i1")
    checklist.apply(Progress("step.sleeping", "i1", T0, ("sleep", "pause", 2), {"until": T0 + 5}))
    assert [(s.label, s.count, s.state) for s in checklist.steps] == [
        ("pause", 1, "pending"), ("work", 1, "pending"), ("pause", 2, "sleeping")]
    # a third sleep of the same name was not in the outline: it follows the last step that ran
    checklist.apply(Progress("step.sleeping", "i1", T0, ("sleep", "pause", 3), {"until": T0 + 5}))
    assert [(s.label, s.count) for s in checklist.steps][-1] == ("pause", 3)
    assert "pause #3" in render(checklist)


def test_events_of_other_instances_are_ignored_and_the_first_instance_is_adopted():
    checklist = Checklist(outline_steps(PIPELINE))
    checklist.apply(Progress("instance.status", "mine", T0, None, {"status": "running"}))
    checklist.apply(Progress("instance.status", "theirs", T0 + 5, None, {"status": "errored"}))
    checklist.apply(Progress("step.started", "theirs", T0 + 5, ("do", "checkout", 1),
                             {"attempt": 1}))
    assert (checklist.instance_id, checklist.status, checklist.now) == ("mine", "running", T0)
    assert {s.state for s in checklist.steps} == {"pending"}


def test_an_event_timeout_fails_the_wait():
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    feed("step.waiting", 0, ("wait", "approval", 1), event_type="deploy-approval",
         timeout_at=T0 + HOUR)
    feed("step.woken", HOUR, ("wait", "approval", 1), status="failed")
    assert f'✗  {"approval":15} failed: timed out waiting for event "deploy-approval"\n' \
        in render(checklist)


def test_without_an_outline_every_step_appears_in_arrival_order():
    checklist = Checklist(instance_id="i1", tenant="acme")
    for n, name in enumerate(("b", "a", "c")):
        checklist.apply(Progress("step.started", "i1", T0 + n, ("do", name, 1), {"attempt": 1}))
    assert [s.label for s in checklist.steps] == ["b", "a", "c"]


def test_every_state_has_a_theme_style():
    for state in GLYPHS:
        assert f"step.{state}" in THEME.styles
    assert "step.log" in THEME.styles


def test_colour_rendering_uses_the_theme():
    checklist = pipeline_checklist()
    Feed(checklist).checkout()
    console = Console(width=80, theme=THEME, force_terminal=True, color_system="standard",
                      file=io.StringIO())
    console.print(checklist)
    ansi = console.file.getvalue()
    assert "\x1b[32m" in ansi and "done in 240ms" in ansi   # step.done is green


def test_ndjson_is_one_stable_object_per_event():
    event = Progress("step.attempt_failed", "deploy-7", T0, ("do", "build", 1),
                     {"attempt": 1, "max_attempts": 4, "next_attempt_at": T0 + 10_000,
                      "error": {"name": "BuildError", "message": "naïve"}})
    line = to_ndjson(event)
    assert "\n" not in line
    assert line == ('{"kind":"step.attempt_failed","instance":"deploy-7","at":1772442000000,'
                    '"step":{"kind":"do","name":"build","count":1},"attempt":1,"max_attempts":4,'
                    '"next_attempt_at":1772442010000,'
                    '"error":{"name":"BuildError","message":"naïve"}}')
    assert json.loads(to_ndjson(Progress("instance.status", "deploy-7", T0, None,
                                         {"status": "running"}))) == {
        "kind": "instance.status", "instance": "deploy-7", "at": T0, "status": "running"}


# ---- against the real engine -----------------------------------------------------------------

def test_golden_engine_run_fast_forwarded(tmp_path):
    """The real engine on real SQLite, its clock fast-forwarding over a retry (the build's
    first attempt meets a registry outage) and the sleep: the checklist shows what the engine
    published, over the outline of the same source."""
    namespace: dict[str, Any] = {}
    exec(compile(PIPELINE, "index.py", "exec"), namespace)
    tenant = namespace["TenantWorkflow"]

    async def scenario() -> tuple[str, str]:
        clock = VirtualClock(T0, flowing=False)
        engine = Engine(tmp_path / "state.db",
                        [WorkflowDefinition("pipeline", lambda row: tenant())], clock=clock,
                        poll_ms=20)
        checklist = Checklist(outline_steps(PIPELINE), instance_id="deploy-7", tenant="acme",
                              workflow="pipeline", fast_forward=True)
        engine.progress.subscribe(checklist.apply)
        try:
            binding = engine.binding("pipeline")
            await binding.create({"id": "deploy-7",
                                  "params": {"repo": "acme/api", "regions": ["eu", "us"],
                                             "registry_outages": 1}})
            await engine.drain()
            waiting = render(checklist)
            instance = await binding.get("deploy-7")
            await instance.send_event({"type": "deploy-approval", "payload": {"by": "oncall"}})
            await engine.drain()
            return waiting, render(checklist)
        finally:
            engine.close()

    waiting, complete = asyncio.run(scenario())
    assert_golden("engine_waiting", waiting)
    assert_golden("engine_complete", complete)


def test_a_live_display_follows_the_events():
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    console = Console(width=80, no_color=True, record=True, force_terminal=False, theme=THEME,
                      file=io.StringIO())
    clock = {"now": T0}
    # get_renderable with the caller's clock: "running for ..." moves on between events
    with Live(console=console, auto_refresh=False, transient=False,
              get_renderable=lambda: checklist.render(now=clock["now"])) as live:
        feed.start()
        feed.checkout()
        feed("step.started", 240, ("do", "build", 1), attempt=1, max_attempts=4)
        clock["now"] = T0 + 9 * SECOND
        live.refresh()
    assert f"◐  {'build':15} running for 8.76s · attempt 1 of 4\n" in console.export_text()


def test_thousands_of_dynamic_steps_keep_their_order():
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    feed.checkout()
    feed.build()
    regions = [f"r{n}" for n in range(3_000)]
    for region in regions:
        feed("step.committed", 70 * SECOND, ("do", f"deploy-{region}", 1), attempt=1,
             duration_ms=1)
    feed("step.sleeping", 80 * SECOND, ("sleep", "bake", 1), until=T0 + 90 * SECOND)
    assert [s.label for s in checklist.steps] == [
        "checkout", "build", *(f"deploy-{r}" for r in regions), "bake", "approval", "promote"]


def test_a_sleep_woken_ahead_of_its_time_says_so():
    """docs/semantics.md, "Time": a two-hour sleep that `instances wake` ended after 17 s reads
    "woken after 17s of 2h", never "slept 2h"."""
    checklist = pipeline_checklist()
    feed = Feed(checklist)
    feed.start()
    feed.checkout()
    feed.build()
    feed.deploys()
    feed.bake(wake=False)
    feed("step.woken", 90 * SECOND + 17 * SECOND, ("sleep", "bake", 1), status="done",
         early_ms=2 * HOUR - 17 * SECOND)
    text = render(checklist, now=T0 + 90 * SECOND + 17 * SECOND)
    bake = next(line for line in text.splitlines() if "bake" in line)
    assert "done · woken after 17s of 2h" in bake, text
    assert "slept" not in bake

"""Time is per instance (docs/semantics.md, "Time"): fast-forwarding one instance's sleep never
moves another instance's time, never fires another's event timeout, and no recorded time lies."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator.engine import Engine, SystemClock, VirtualClock, WorkflowDefinition
from emulator.server.app import fast_forward_idle
from tests.engine_harness import DAY, FnWorkflow, HOUR

DYNWF = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "dynwf")


async def sleeper(event, step):
    await step.sleep("a day or two", "2 days")
    return "rested"


async def approver(event, step):
    approval = await step.wait_for_event("approval", "approve", timeout="1 hour")
    return approval["payload"]


def _engine(path: Path, clock) -> Engine:
    definitions = [WorkflowDefinition("sleeper", lambda row: FnWorkflow(sleeper)),
                   WorkflowDefinition("approver", lambda row: FnWorkflow(approver))]
    return Engine(path, definitions, clock=clock, poll_ms=20)


def _times_are_true(engine: Engine, *ids: str) -> None:
    real = time.time_ns() // 1_000_000
    for instance_id in ids:
        row = engine.store.get_instance(instance_id)
        assert row.created_at <= real and row.updated_at <= real, row
        for step in engine.store.list_steps(instance_id):
            assert step.started_at is None or step.started_at <= real, step
            if step.ended_at is not None:
                assert step.started_at <= step.ended_at <= real, step


def test_fast_forwarding_a_sleep_leaves_another_instances_event_wait_alone(tmp_path):
    async def main():
        engine = _engine(tmp_path / "db.sqlite", VirtualClock())
        woken = []
        engine.progress.subscribe(lambda e: woken.append(e) if e.kind == "step.woken" else None)
        await engine.binding("approver").create({"id": "waits"})
        await engine.binding("sleeper").create({"id": "sleeps"})
        await engine.drain(jump=False)
        timeout_before = [t.due for t in engine.store.timers_of("waits")]
        await engine.drain()                       # fast-forward: skip what can be skipped
        state = (engine.control.status("sleeps"), engine.control.status("waits"),
                 [t.due for t in engine.store.timers_of("waits")], timeout_before)
        _times_are_true(engine, "waits", "sleeps")
        engine.close()
        return state, woken
    (sleeps, waits, timeout_after, timeout_before), woken = asyncio.run(main())
    assert sleeps == {"status": "complete", "error": None, "output": "rested"}
    assert waits["status"] == "waiting"
    assert timeout_after == timeout_before         # its hour still counts from real time
    assert [(e.instance_id, e.data["early_ms"] > 2 * DAY - HOUR) for e in woken] == [("sleeps", True)]


def test_dev_fast_forward_skips_sleeps_but_never_an_event_timeout(tmp_path):
    async def main():
        engine = _engine(tmp_path / "db.sqlite", SystemClock())
        await engine.binding("approver").create({"id": "waits"})
        await engine.binding("sleeper").create({"id": "sleeps"})
        stop = asyncio.Event()
        server = asyncio.get_running_loop().create_task(engine.serve(stop))
        skipper = asyncio.get_running_loop().create_task(fast_forward_idle(engine, stop))
        deadline = time.monotonic() + 30
        while engine.control.status("sleeps")["status"] != "complete":
            assert time.monotonic() < deadline, "the sleep was never skipped"
            await asyncio.sleep(0.02)
        for _ in range(10):                         # idle rounds: nothing else may be skipped
            await asyncio.sleep(0.06)
        waits = engine.control.status("waits")
        stop.set()
        await asyncio.gather(server, skipper)
        _times_are_true(engine, "waits", "sleeps")
        engine.close()
        return waits
    assert asyncio.run(main())["status"] == "waiting"


def test_dynwf_run_of_a_waiting_tenant_is_not_timed_out_by_another_instances_sleep(tmp_path):
    """The report's case: `dynwf run` of the template's globex (an approval wait of 1 hour) while
    an acme instance sleeps a day in the same state ended "not approved within 1 hour"."""
    root = _template_with_acme_asleep(tmp_path)
    completed = subprocess.run([DYNWF, "run", "--tenant", "globex", "--params", '{"ref": "v1"}'],
                               capture_output=True, text=True, timeout=60, cwd=root,
                               stdin=subprocess.DEVNULL)
    assert completed.returncode == 3, completed.stdout + completed.stderr
    result = json.loads(completed.stdout.splitlines()[-1])
    assert result["status"] == "waiting" and result["waiting_for"] == ["deploy-approval"]


def test_dynwf_run_is_not_held_by_another_instances_timer_woken_by_hand(tmp_path):
    """`dynwf instances wake` with no engine running leaves that instance's timer due now for the
    next engine that serves it; a `dynwf run` of another instance works on its own instance only,
    so it runs to the end rather than spin on a timer it may not fire (docs/semantics.md §4.8)."""
    root = _template_with_acme_asleep(tmp_path)
    woken = CliRunner().invoke(app, ["instances", "wake", "asleep", "--tenant", "acme",
                                     "--config", str(root)])
    assert woken.exit_code == 0, woken.output
    completed = subprocess.run([DYNWF, "run", "--tenant", "acme", "--params", '{"name": "Bo"}'],
                               capture_output=True, text=True, timeout=60, cwd=root,
                               stdin=subprocess.DEVNULL)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    result = json.loads(completed.stdout.splitlines()[-1])
    assert result["status"] == "complete", result


SLEEPY_TENANT = '''\
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        await step.sleep("a day or two", "2 days")
        return "rested"
'''


@pytest.fixture
def dynwf_project(tmp_path):
    from plugin_projects import EVENTS_TENANT, write_lab
    return write_lab(tmp_path / "lab", {"sleepy": SLEEPY_TENANT, "events": EVENTS_TENANT})


async def test_the_pytest_plugins_time_skipping_leaves_another_instances_event_wait_alone(dynwf):
    """docs/semantics.md §4.8 through the pytest plugin: skipping one instance's two-day sleep
    neither moves the test's clock nor times out another instance's event wait."""
    started = dynwf.now()
    waits = dynwf.introspect_instance("events", "e1")
    await dynwf.tenant("events").binding.create({"id": "e1"})
    await waits.wait_for_status("waiting")
    sleeps = dynwf.introspect_instance("sleepy", "s1")
    await dynwf.tenant("sleepy").binding.create({"id": "s1"})
    await sleeps.wait_for_status("complete")    # two days skipped; the wait's timeout is one
    assert dynwf.now() == started
    assert (await waits.status())["status"] == "waiting"
    approval = next(s for s in waits.steps() if s["name"] == "approval")
    assert approval["status"] == "waiting"


def _template_with_acme_asleep(tmp_path: Path) -> Path:
    """A `dynwf init` project whose state holds acme's instance ``asleep`` in its day's sleep,
    left by an engine that has stopped; the project's folder."""
    assert CliRunner().invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    from emulator.host import HostOptions, ProjectHost
    from emulator.project import open_project
    project = open_project(root / "wrangler.jsonc", None)

    async def leave_acme_asleep():
        host = ProjectHost(project.config, HostOptions(state_dir=project.state_dir))
        await host.start()
        try:
            await host.create_as_tenant({"tenantId": "acme"}, {"id": "asleep",
                                                               "params": {"name": "Ann"}})
            deadline = time.monotonic() + 30
            while host.engine.store.count_by_status().get("waiting", 0) < 1:
                assert time.monotonic() < deadline
                await host.engine.drain(jump=False)
        finally:
            await host.close()
    asyncio.run(leave_acme_asleep())
    return root

"""Pause is a step boundary in every isolation mode (docs/semantics.md, "Pause and resume"): a
pause requested while a step runs lets that step finish and commit, and no further step body
starts until resume; on resume the next step runs once."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator.engine import progress
from emulator.rules import states
from emulator.project import open_project
from emulator.runner import RunOptions, RunSession

TWO_STEPS = '''
import asyncio
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("first")
        async def first():
            await asyncio.sleep(0.5)        # real time: the pause arrives meanwhile
            return 1

        @step.do("second")
        async def second():
            print("second body started")
            return 2

        return [await first(), await second()]
'''


@pytest.fixture()
def project(tmp_path):
    assert CliRunner().invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    (root / "tenants" / "pausing").mkdir()
    (root / "tenants" / "pausing" / "index.py").write_text(TWO_STEPS)
    return open_project(root / "wrangler.jsonc", None)


@pytest.mark.parametrize("isolation", ["process", "inline"])
def test_a_pause_during_a_step_lets_it_commit_and_starts_no_further_body(project, isolation):
    async def scenario():
        options = RunOptions(tenant="pausing", params={}, real_time=True, isolation=isolation)
        async with RunSession(project, options) as session:
            engine = session.host.engine
            first_started = asyncio.Event()
            session.subscribe(lambda event: first_started.set() if event.kind ==
                              progress.STEP_STARTED and event.step and event.step[1] == "first"
                              else None)
            await session.create()
            stop = asyncio.Event()
            server = asyncio.get_running_loop().create_task(engine.serve(stop))
            try:
                await asyncio.wait_for(first_started.wait(), 30)
                engine.control.pause(session.instance_id)
                deadline = time.monotonic() + 30
                while engine.store.get_instance(session.instance_id).status != states.PAUSED:
                    assert time.monotonic() < deadline, "the pause never landed"
                    await asyncio.sleep(0.02)
                # it stays paused for a while: nothing of the next step may start meanwhile
                quiet_until = time.monotonic() + 0.5
                while time.monotonic() < quiet_until:
                    assert engine.store.get_instance(session.instance_id).status == states.PAUSED
                    await asyncio.sleep(0.05)
                steps_when_paused = {s.name: (s.status, s.attempts)
                                     for s in engine.store.list_steps(session.instance_id)}
                logs_when_paused = [line["message"]
                                    for line in engine.store.list_logs(session.instance_id)]
                engine.control.resume(session.instance_id)
                while not states.is_finished(engine.store.get_instance(session.instance_id).status):
                    assert time.monotonic() < deadline + 30, "never finished after resume"
                    await asyncio.sleep(0.02)
            finally:
                stop.set()
                await server
            row = engine.store.get_instance(session.instance_id)
            steps = {s.name: (s.status, s.attempts)
                     for s in engine.store.list_steps(session.instance_id)}
            logs = [line["message"] for line in engine.store.list_logs(session.instance_id)]
            return steps_when_paused, logs_when_paused, row.status, json.loads(row.output), \
                steps, logs

    paused, logs_paused, status, output, steps, logs = \
        asyncio.run(asyncio.wait_for(scenario(), 120))
    assert paused == {"first": ("done", 1)}          # it committed; "second" never started
    assert "second body started" not in logs_paused
    assert status == "complete" and output == [1, 2]
    assert steps == {"first": ("done", 1), "second": ("done", 1)}
    if isolation == "process":  # inline isolates print to the host's own output
        assert logs.count("second body started") == 1

"""Cancelled steps settle (docs/semantics.md, "Cancelled steps"): a step whose awaiting task the
workflow's code cancels (a lost race, a timeout around it, a failing task group) is recorded as
cancelled, is not retried, and the instance's status follows its real waits, so time skipping
goes on. In the engine's own process and in a tenant's isolate."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator.engine import progress
from emulator.project import open_project
from emulator.runner import RunOptions, RunSession
from tests.engine_harness import Harness, arun


async def race_then_sleep(event, step):
    @step.do("fast")
    async def fast():
        return "fast"

    @step.do("slow")
    async def slow():
        await asyncio.sleep(3600)          # never wins
        return "slow"

    fast_task, slow_task = asyncio.ensure_future(fast()), asyncio.ensure_future(slow())
    done, pending = await asyncio.wait({fast_task, slow_task}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    winner = next(iter(done)).result()
    await step.sleep("a day", "1 day")

    @step.do("after")
    async def after():
        return winner
    return await after()


def test_a_lost_race_records_the_loser_as_cancelled_and_time_skipping_goes_on(tmp_path):
    async def main():
        h = Harness(tmp_path / "db.sqlite", race_then_sleep)
        await h.create()
        await h.engine.drain(jump=False)
        sleeping = await h.status()
        slow = h.step("do", "slow")
        timers = h.timers()
        await h.engine.drain()            # skips the day
        return sleeping, (slow.status, slow.attempts), timers, await h.status(), \
            h.step("do", "slow").status, [e.kind for e in h.events(progress.STEP_CANCELLED)]
    sleeping, slow, timers, final, slow_after, cancelled = arun(main())
    assert sleeping["status"] == "waiting"            # its real wait, not "running"
    assert slow == ("cancelled", 1)
    assert [kind for kind, _step, _due in timers] == ["sleep"]
    assert final == {"status": "complete", "error": None, "output": "fast"}
    assert slow_after == "cancelled"                  # replays left it alone, never ran again
    assert cancelled == [progress.STEP_CANCELLED]


async def timeout_around_a_step(event, step):
    @step.do("slow")
    async def slow():
        await asyncio.sleep(3600)
        return "slow"
    try:
        async with asyncio.timeout(0.2):
            await slow()
    except TimeoutError:
        outcome = "gave up"
    await step.sleep("a day", "1 day")
    return outcome


def test_a_timeout_around_a_step_cancels_it_and_replay_takes_the_same_path(tmp_path):
    async def main():
        h = Harness(tmp_path / "db.sqlite", timeout_around_a_step)
        await h.create()
        await h.engine.drain()
        return await h.status(), h.step("do", "slow").status
    final, slow = arun(main())
    assert final == {"status": "complete", "error": None, "output": "gave up"}
    assert slow == "cancelled"


TENANT_RACE = '''
import asyncio
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("fast")
        async def fast():
            return "fast"

        @step.do("slow")
        async def slow():
            await asyncio.sleep(3600)
            return "slow"

        tasks = {asyncio.ensure_future(fast()), asyncio.ensure_future(slow())}
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await step.sleep("a day", "1 day")
        return next(iter(done)).result()
'''


@pytest.mark.parametrize("isolation", ["process", "inline"])
def test_a_cancelled_step_in_an_isolate_settles_and_dynwf_run_skips_the_sleep(tmp_path, isolation):
    assert CliRunner().invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    (root / "tenants" / "racer").mkdir()
    (root / "tenants" / "racer" / "index.py").write_text(TENANT_RACE)
    project = open_project(root / "wrangler.jsonc", None)

    async def scenario():
        async with RunSession(project, RunOptions(tenant="racer", params={},
                                                  isolation=isolation)) as session:
            await session.create()
            result = await asyncio.wait_for(session.drive(), 60)
            steps = {s.name: s.status for s in
                     session.host.engine.store.list_steps(session.instance_id)}
            return result, steps
    result, steps = asyncio.run(scenario())
    assert (result.status, result.output) == ("complete", "fast")
    assert steps == {"fast": "done", "slow": "cancelled", "a day": "done"}

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


async def failing_task_group(event, step):
    @step.do("slow")
    async def slow():
        await asyncio.sleep(3600)
        return "slow"

    async def boom():
        for _ in range(20):                 # let "slow" begin its attempt first
            await asyncio.sleep(0)
        raise ValueError("boom")
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(slow())
            group.create_task(boom())
        outcome = "no failure"
    except* ValueError:
        outcome = "the group failed"
    await step.sleep("a day", "1 day")
    return outcome


def test_a_failing_task_group_cancels_its_step_and_time_skipping_goes_on(tmp_path):
    """docs/semantics.md §4.7: the other branches of a failing TaskGroup are cancelled."""
    async def main():
        h = Harness(tmp_path / "db.sqlite", failing_task_group)
        await h.create()
        await h.engine.drain(jump=False)
        sleeping = await h.status()
        slow = h.step("do", "slow")
        await h.engine.drain()            # skips the day
        return sleeping, (slow.status, slow.attempts), await h.status(), \
            h.step("do", "slow").status, len(h.events(progress.STEP_CANCELLED))
    sleeping, slow, final, slow_after, cancelled = arun(main())
    assert sleeping["status"] == "waiting"
    assert slow == ("cancelled", 1)
    assert final == {"status": "complete", "error": None, "output": "the group failed"}
    assert slow_after == "cancelled"
    assert cancelled == 1                 # recorded once, never retried


CONFIG_JSON = '{"retries": {"limit": 5, "delay": 10000, "backoff": "exponential"}, "timeout": 600000}'


LATE_ANSWERS: list = []


async def late_result(event, step):
    # past the step client, to the engine's step backend: what an isolate's step handle sends
    # when a result arrives after the code cancelled the attempt (the first run only)
    backend = step._client.backend
    key = ("do", "c", 1)
    if not LATE_ANSWERS:
        backend.begin(key, 1, CONFIG_JSON)
        backend.cancelled(key, 1)
        LATE_ANSWERS.append(await backend.settle(key, 1, CONFIG_JSON, '"late"', None, True))
    await step.sleep("a day", "1 day")
    return "slept"


def test_a_result_that_arrives_after_the_cancellation_is_dropped(tmp_path):
    """docs/semantics.md §4.7: a result that arrives after the cancellation is dropped."""
    LATE_ANSWERS.clear()

    async def main():
        h = Harness(tmp_path / "db.sqlite", late_result)
        await h.create()
        await h.engine.drain(jump=False)
        c = h.step("do", "c")
        asleep = await h.status()
        await h.engine.drain()
        return asleep, (c.status, c.attempts, c.result), await h.status(), h.step("do", "c").status
    asleep, c, final, c_after = arun(main())
    assert LATE_ANSWERS == [{"status": "cancelled"}]
    assert c == ("cancelled", 1, None) and c_after == "cancelled"
    assert asleep["status"] == "waiting"
    assert final == {"status": "complete", "error": None, "output": "slept"}


TENANT_TIMEOUT = '''
import asyncio
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("slow")
        async def slow():
            await asyncio.sleep(3600)
            return "slow"

        try:
            async with asyncio.timeout(0.2):
                await slow()
            outcome = "finished"
        except TimeoutError:
            outcome = "gave up"
        await step.sleep("a day", "1 day")
        return outcome
'''

TENANT_GROUP = '''
import asyncio
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("slow")
        async def slow():
            await asyncio.sleep(3600)
            return "slow"

        async def boom():
            await asyncio.sleep(0.1)
            raise ValueError("boom")

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(slow())
                group.create_task(boom())
            outcome = "no failure"
        except* ValueError:
            outcome = "the group failed"
        await step.sleep("a day", "1 day")
        return outcome
'''


@pytest.fixture
def dynwf_project(tmp_path):
    from plugin_projects import write_lab
    return write_lab(tmp_path / "lab", {"racer": TENANT_RACE, "timeout": TENANT_TIMEOUT,
                                        "group": TENANT_GROUP})


@pytest.mark.parametrize("tenant, output", [("racer", "fast"), ("timeout", "gave up"),
                                            ("group", "the group failed")])
async def test_the_pytest_plugins_time_skipping_goes_on_past_a_cancelled_step(dynwf, tenant,
                                                                              output):
    """docs/semantics.md §4.7 in a tenant's isolate, through the pytest plugin: each way of
    cancelling a step leaves it cancelled, and the day's sleep after it is skipped."""
    started = dynwf.now()
    instance = dynwf.introspect_instance(tenant, "c1")
    await dynwf.tenant(tenant).binding.create({"id": "c1", "params": {}})
    await asyncio.wait_for(instance.wait_for_status("complete"), 60)
    assert await instance.get_output() == output
    slow = next(s for s in instance.steps() if s["name"] == "slow")
    assert (slow["status"], slow["attempts"]) == ("cancelled", 1)
    assert dynwf.now() == started


@pytest.mark.parametrize("isolation", ["process", "inline"])
@pytest.mark.parametrize("tenant, output", [("timeout", "gave up"), ("group", "the group failed")])
def test_dynwf_run_settles_a_step_cancelled_by_a_timeout_or_a_task_group(tmp_path, isolation,
                                                                         tenant, output):
    """docs/semantics.md §4.7, per isolation mode: asyncio.timeout around a step and a failing
    TaskGroup, in a tenant's code run by `dynwf run`."""
    assert CliRunner().invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    (root / "tenants" / tenant).mkdir()
    (root / "tenants" / tenant / "index.py").write_text(
        TENANT_TIMEOUT if tenant == "timeout" else TENANT_GROUP)
    project = open_project(root / "wrangler.jsonc", None)

    async def scenario():
        async with RunSession(project, RunOptions(tenant=tenant, params={},
                                                  isolation=isolation)) as session:
            await session.create()
            result = await asyncio.wait_for(session.drive(), 60)
            steps = {s.name: (s.status, s.attempts) for s in
                     session.host.engine.store.list_steps(session.instance_id)}
            return result, steps
    result, steps = asyncio.run(scenario())
    assert (result.status, result.output) == ("complete", output)
    assert steps["slow"] == ("cancelled", 1) and steps["a day"][0] == "done", steps

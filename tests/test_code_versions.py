"""Every instance records the tenant code it started on; a replay on changed code that takes a
different path fails with the expected and the actual step (docs/semantics.md §4.10)."""

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator.engine import VirtualClock
from emulator.host import HostOptions, ProjectHost
from emulator.code_version import code_fingerprint
from emulator.project import open_project
from emulator.runner import RunOptions, RunSession

V1 = '''
from workers import WorkflowEntrypoint

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("reserve")
        async def reserve():
            return 1
        await reserve()
        approval = await step.wait_for_event("approval", "approve", timeout="1 hour")

        @step.do("ship")
        async def ship():
            return "shipped"
        return await ship()
'''

V2_SAME_PATH = V1.replace('return "shipped"', 'return "shipped by v2"')
V2_NEW_PATH = V1.replace('@step.do("reserve")', '@step.do("check stock")')


def start(tmp_path: Path, source: str):
    assert CliRunner().invoke(app, ["init", str(tmp_path / "p")]).exit_code == 0
    tenant = tmp_path / "p" / "tenants" / "shop"
    tenant.mkdir()
    (tenant / "index.py").write_text(source)
    project = open_project(tmp_path / "p" / "wrangler.jsonc")

    async def first_run():
        async with RunSession(project, RunOptions(tenant="shop", instance_id="order-1")) as session:
            await session.create()
            return await session.drive()
    result = asyncio.run(first_run())
    assert result.waiting_for == ["approve"]
    return project, tenant, result.instance_id


def resume(project, instance_id, event_type="approve"):
    async def go():
        host = ProjectHost(project.config, HostOptions(state_dir=project.state_dir,
                                                       clock=VirtualClock()))
        host.engine.only = {instance_id}
        await host.start()
        try:
            version = host.engine.store.get_instance(instance_id).code_version
            host.engine.control.send_event(instance_id, event_type, {"ok": True})
            await host.engine.drain()
            return version, host.engine.control.status(instance_id)
        finally:
            await host.close()
    return asyncio.run(go())


def test_the_starting_code_is_recorded_and_unchanged_code_replays(tmp_path):
    project, tenant, instance_id = start(tmp_path, V1)
    version, status = resume(project, instance_id)
    assert version == code_fingerprint({"index.py": V1})
    assert status == {"status": "complete", "error": None, "output": "shipped"}


def test_changed_code_on_the_same_path_replays_and_runs_the_new_steps(tmp_path):
    project, tenant, instance_id = start(tmp_path, V1)
    (tenant / "index.py").write_text(V2_SAME_PATH)
    version, status = resume(project, instance_id)
    assert status["status"] == "complete" and status["output"] == "shipped by v2"


def test_changed_code_on_another_path_fails_with_expected_and_actual_step(tmp_path):
    project, tenant, instance_id = start(tmp_path, V1)
    (tenant / "index.py").write_text(V2_NEW_PATH)
    version, status = resume(project, instance_id)
    assert status["status"] == "errored"
    message = status["error"]["message"]
    assert 'expected step.do "reserve"' in message
    assert 'the code now runs step.do "check stock"' in message
    assert version in message and code_fingerprint({"index.py": V2_NEW_PATH}) in message


def test_describe_says_when_the_tenants_code_changed(tmp_path, monkeypatch):
    project, tenant, instance_id = start(tmp_path, V1)
    monkeypatch.chdir(project.config.root)
    runner = CliRunner()
    same = runner.invoke(app, ["instances", "describe", "order-1", "--tenant", "shop"])
    assert same.exit_code == 0, same.output
    assert code_fingerprint({"index.py": V1}) in same.stdout and "same as tenants/" in same.stdout
    (tenant / "index.py").write_text(V2_NEW_PATH)
    changed = runner.invoke(app, ["instances", "describe", "order-1", "--tenant", "shop"])
    assert "code changed since" in " ".join(changed.stdout.split())
    assert code_fingerprint({"index.py": V2_NEW_PATH}) in changed.stdout


RANDOM_NAMES = '''
import random
from workers import WorkflowEntrypoint

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        for round in range(3):
            @step.do(f"pick {random.random()}")
            async def pick():
                return round
            await pick()
            await step.wait_for_event(f"next {round}", "next", timeout="1 hour")
        return "done"
'''


def test_a_replay_that_diverges_on_unchanged_code_fails_with_expected_and_actual_step(tmp_path):
    """docs/semantics.md, "Replay": steps whose names depend on random values take another path on
    replay although the code did not change; the instance fails with replay.mismatch instead of
    running extra steps and completing."""
    project, _tenant, instance_id = start_waiting(tmp_path, RANDOM_NAMES, "next")
    version, status = resume(project, instance_id, "next")
    assert version == code_fingerprint({"index.py": RANDOM_NAMES})
    assert status["status"] == "errored"
    assert status["error"]["name"] == "WorkflowFatalError"
    message = status["error"]["message"]
    assert message.startswith('replay does not match the steps this instance recorded: expected '
                              'step.do "pick 0.')
    assert "the code is the one the instance started on" in message


GATHERED = '''
import asyncio
from workers import WorkflowEntrypoint

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        async def branch(name):
            @step.do(f"{name} one")
            async def one():
                return 1
            await one()

            @step.do(f"{name} two")
            async def two():
                return 2
            return await two()
        results = await asyncio.gather(branch("left"), branch("right"))
        await step.wait_for_event("go on", "next", timeout="1 hour")

        @step.do("after")
        async def after():
            return sum(results)
        return await after()
'''


def test_parallel_branches_replay_without_a_false_mismatch(tmp_path):
    project, _tenant, instance_id = start_waiting(tmp_path, GATHERED, "next")
    _version, status = resume(project, instance_id, "next")
    assert status == {"status": "complete", "error": None, "output": 4}


def start_waiting(tmp_path: Path, source: str, event_type: str):
    assert CliRunner().invoke(app, ["init", str(tmp_path / "p")]).exit_code == 0
    tenant = tmp_path / "p" / "tenants" / "shop"
    tenant.mkdir()
    (tenant / "index.py").write_text(source)
    project = open_project(tmp_path / "p" / "wrangler.jsonc")

    async def first_run():
        async with RunSession(project, RunOptions(tenant="shop", instance_id="order-1")) as session:
            await session.create()
            return await session.drive()
    result = asyncio.run(first_run())
    assert result.waiting_for == [event_type]
    return project, tenant, result.instance_id

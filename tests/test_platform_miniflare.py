"""Cloudflare's tests of Workflows in its local runtime (Miniflare), as dynwf's conformance suite.

Each test follows one case of workers-sdk ``packages/miniflare/test/plugins/workflows/index.spec.ts``
(named in its docstring). The first two run the spec's small Worker, written in Python, in the
pytest plugin's emulator (a project on disk, its state in a directory of its own); the lifecycle
cases run the spec's lifecycle workflow on the engine harness, its "long step" held in flight with
a Gate instead of a real half-second wait.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from dynwf_pytest import Emulator
from engine_harness import Harness, arun
from emulator.errors import InstanceAlreadyExistsError
from platform_harness import Gate, finish

WRANGLER = """\
{
  "name": "worker",
  "main": "src/entry.py",
  "compatibility_date": "2026-04-01",
  "compatibility_flags": %(flags)s,
  "workflows": [{"binding": "MY_WORKFLOW", "name": "my-workflow", "class_name": "MyWorkflow"}],
}
"""

# the spec's WORKFLOW_SCRIPT, in Python
ENTRY = '''\
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class MyWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("i'm a step?")
        async def a_step():
            return "yes you are"
        await a_step()
        return "I'm a output string"


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        if request.url.endswith("/status"):
            workflow = await self.env.MY_WORKFLOW.get("an-id")
        else:
            workflow = await self.env.MY_WORKFLOW.create({"id": "an-id"})
        return Response.json(await workflow.status())
'''

COMPLETE = {"status": "complete", "error": None, "output": "I'm a output string"}


def write_project(root, flags=()):
    (root / "src").mkdir(parents=True)
    (root / "wrangler.jsonc").write_text(textwrap.dedent(WRANGLER) % {"flags": json.dumps(list(flags))},
                                         encoding="utf-8")
    (root / "src" / "entry.py").write_text(ENTRY, encoding="utf-8")
    return root


async def fetch_json(emulator, path="/"):
    response = await emulator.fetch(path)
    assert response.status == 200, await response.text()
    return await response.json()


def test_runs_with_experimental_compatibility_flags(tmp_path):
    """follows workers-sdk packages/miniflare/test/plugins/workflows/index.spec.ts, 'starts
    Workflows with user-provided experimental compatibility flag': a Worker whose
    compatibility_flags include ``experimental`` runs its workflow to complete. (dynwf's status
    record has no ``__LOCAL_DEV_STEP_OUTPUTS``, docs/semantics.md §10: the step's output is read
    from its record.)"""
    project = write_project(tmp_path / "flags", ["nodejs_compat", "experimental",
                                                 "enhanced_error_serialization"])

    async def main():
        async with Emulator(project, state_dir=tmp_path / "state") as emulator:
            assert (await fetch_json(emulator))["status"] == "queued"
            await emulator.settle()
            assert await fetch_json(emulator, "/status") == COMPLETE
            (row,) = [r for r in emulator.engine.store.list_steps("an-id") if r.kind == "do"]
            assert json.loads(row.result) == "yes you are"
    arun(main())


def test_workflow_data_persists_between_runs(tmp_path):
    """follows workers-sdk packages/miniflare/test/plugins/workflows/index.spec.ts, 'persists
    Workflow data on file-system between runs': the instance completed by one emulator is read,
    complete, by the next on the same state directory. Deliberate divergence (docs/semantics.md
    §9 item 4, §10): the spec's second ``create`` of the same id succeeds on the local engine;
    dynwf refuses it (``instance.already_exists``), as production does."""
    project = write_project(tmp_path / "persist")
    state = tmp_path / "state"

    async def main():
        async with Emulator(project, state_dir=state) as first:
            await fetch_json(first)
            await first.settle()
            assert await fetch_json(first, "/status") == COMPLETE
        assert any(state.iterdir())                      # committed to the state directory
        async with Emulator(project, state_dir=state) as second:
            assert await fetch_json(second, "/status") == COMPLETE
            with pytest.raises(InstanceAlreadyExistsError):
                await second.fetch("/")
    arun(main())


def lifecycle_workflow(gate: Gate, runs: dict[str, int]):
    """The spec's LIFECYCLE_WORKFLOW_SCRIPT (without its self-delete branch): a step, a long
    step, a third step."""
    async def wf(event, step):
        @step.do("first step")
        async def first():
            return "step-1-done"

        @step.do("long step")
        async def long_step():
            runs["long"] = runs.get("long", 0) + 1
            await gate.hold()
            return "long-step-done"

        @step.do("third step")
        async def third():
            return "step-3-done"
        await first()
        await long_step()
        await third()
        return "workflow-complete"
    return wf


def test_pause_and_resume_a_running_workflow(tmp_path):
    """follows workers-sdk packages/miniflare/test/plugins/workflows/index.spec.ts, 'workflow
    instance lifecycle methods' / 'pause and resume a running workflow': the pause waits for the
    long step, then lands; after resume the third step runs and the output is returned."""
    async def main():
        gate, runs = Gate(), {}
        h = Harness(tmp_path / "db.sqlite", lifecycle_workflow(gate, runs))
        created = await h.create(id="pause-resume-test")
        assert created.id == "pause-resume-test"
        task = h.drain_in_background()
        await gate.wait_started()
        assert h.result("do", "first step", id="pause-resume-test") == "step-1-done"
        await created.pause()
        assert "status" in await created.status()
        gate.release.set()
        await finish(task)
        assert (await created.status())["status"] == "paused"
        await created.resume()
        await h.engine.drain()
        assert await created.status() == {"status": "complete", "error": None,
                                          "output": "workflow-complete"}
        assert runs == {"long": 1}
    arun(main())


def test_terminate_a_running_workflow(tmp_path):
    """follows workers-sdk packages/miniflare/test/plugins/workflows/index.spec.ts, 'workflow
    instance lifecycle methods' / 'terminate a running workflow'."""
    async def main():
        gate, runs = Gate(), {}
        h = Harness(tmp_path / "db.sqlite", lifecycle_workflow(gate, runs))
        created = await h.create(id="terminate-test")
        task = h.drain_in_background()
        await gate.wait_started()
        await created.terminate()
        await finish(task)
        assert (await created.status())["status"] == "terminated"
        assert h.step("do", "third step", id="terminate-test") is None
    arun(main())


def test_restart_a_running_workflow(tmp_path):
    """follows workers-sdk packages/miniflare/test/plugins/workflows/index.spec.ts, 'workflow
    instance lifecycle methods' / 'restart a running workflow': restarted while the long step is
    in flight, the instance reads running at once and runs from scratch (the long step again)
    and completes."""
    async def main():
        gate, runs = Gate(), {}
        h = Harness(tmp_path / "db.sqlite", lifecycle_workflow(gate, runs))
        created = await h.create(id="restart-test")
        task = h.drain_in_background()
        await gate.wait_started()
        await created.restart()
        assert (await created.status())["status"] == "running"     # §1.7, §4.6
        gate.release.set()
        await finish(task)
        await h.engine.drain()
        assert await created.status() == {"status": "complete", "error": None,
                                          "output": "workflow-complete"}
        assert runs == {"long": 2}
    arun(main())

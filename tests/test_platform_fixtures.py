"""Cloudflare's end-to-end Workflows fixtures, as dynwf's conformance suite.

The workers-sdk fixtures ``fixtures/workflow`` and ``fixtures/workflow-multiple`` are Workers
with three workflows each and a ``fetch`` handler that drives them through their bindings; their
tests call that handler. Here the same two projects are written in Python (the same workflows,
step names and routes) and driven the same way, through the dispatcher's ``Default.fetch``, by the
pytest plugin's emulator on a virtual clock that the test moves (docs/semantics.md §7.3). Each
test names the case it follows. The local engine's ``__LOCAL_DEV_STEP_OUTPUTS`` is not part of
dynwf's status record (docs/semantics.md §10): step outputs are read from the step records.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest

from dynwf_pytest import Emulator
from engine_harness import arun
from emulator.errors import InstanceNotFoundError

WORKFLOW_WRANGLER = """\
{
  "name": "my-workflow-demo",
  "main": "src/entry.py",
  "compatibility_date": "2026-04-01",
  "workflows": [
    {"binding": "WORKFLOW", "name": "my-workflow", "class_name": "Demo"},
    {"binding": "WORKFLOW2", "name": "my-workflow2", "class_name": "Demo2"},
    {"binding": "WORKFLOW3", "name": "my-workflow3", "class_name": "Demo3"},
  ],
}
"""

# fixtures/workflow/src/index.ts, in Python
WORKFLOW_ENTRY = '''\
import json
from urllib.parse import parse_qs, urlsplit

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint
from workers.workflows import NonRetryableError


def or_no_payload(payload):
    return "no-payload" if payload is None else payload


class Demo(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("First step")
        async def first():
            return {"output": "First step result"}

        @step.do("Second step")
        async def second():
            return {"output": "Second step result"}
        await first()
        await step.sleep("Wait", "1 second")
        await second()
        return or_no_payload(event["payload"])


class Demo2(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("First step")
        async def first():
            return {"output": "First step result"}

        @step.do("Second step")
        async def second():
            return {"output": "Second step result"}
        await first()
        await step.wait_for_event("event-1 provider", "event-1")
        await second()
        return or_no_payload(event["payload"])


class Demo3(WorkflowEntrypoint):
    async def run(self, event, step):
        runs = -1

        @step.do("First (and only step) step", config={"retries": {"limit": 3, "delay": 100}})
        async def only():
            nonlocal runs
            runs += 1
            if event["payload"]["doRetry"]:
                raise RuntimeError(event["payload"]["errorMessage"])
            raise NonRetryableError(event["payload"]["errorMessage"])
        try:
            await only()
        except Exception:
            pass
        return f"The step was retried {runs} time{'' if runs == 1 else 's'}"


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        url = urlsplit(request.url)
        query = {key: values[0] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        name = query.get("workflowName")
        env = self.env
        if url.path == "/createBatch":
            batch = await env.WORKFLOW.create_batch([{"id": "batch-1", "params": "1"},
                                                     {"id": "batch-2", "params": "2"}])
            return Response.json([instance.id for instance in batch])
        if url.path == "/create":
            handle = await env.WORKFLOW.create() if name is None else \\
                await env.WORKFLOW.create({"id": name})
        elif url.path == "/createDemo2":
            handle = await env.WORKFLOW2.create() if name is None else \\
                await env.WORKFLOW2.create({"id": name})
        elif url.path == "/createDemo3":
            handle = await env.WORKFLOW3.create({"id": name, "params": {
                "doRetry": query.get("doRetry") != "false",
                "errorMessage": query.get("errorMessage", "")}})
        elif url.path == "/sendEvent":
            handle = await env.WORKFLOW2.get(name)
            await handle.send_event({"type": "event-1", "payload": json.loads(await request.text())})
        elif url.path in ("/pause", "/resume", "/restart", "/terminate"):
            handle = await env.WORKFLOW2.get(name)
            await getattr(handle, url.path[1:])()
        elif url.path == "/get2":
            handle = await env.WORKFLOW2.get(name)
        elif url.path == "/get3":
            handle = await env.WORKFLOW3.get(name)
        elif url.path == "/createWithRedirect":
            handle = await env.WORKFLOW.create()
            return Response.redirect(f"http://localhost/status?workflowName={handle.id}", 302)
        else:
            handle = await env.WORKFLOW.get(name)
        return Response.json(await handle.status())
'''

MULTIPLE_WRANGLER = """\
{
  "name": "my-workflow-multiple",
  "main": "src/entry.py",
  "compatibility_date": "2026-04-01",
  "workflows": [
    {"binding": "WORKFLOW", "name": "my-workflow", "class_name": "Demo"},
    {"binding": "WORKFLOW2", "name": "my-workflow-2", "class_name": "Demo2"},
    {"binding": "WORKFLOW3", "name": "my-workflow-3", "class_name": "Demo3"},
  ],
}
"""

# fixtures/workflow-multiple/src/index.ts, in Python
MULTIPLE_ENTRY = '''\
import json
from urllib.parse import parse_qs, urlsplit

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


def sleeping_workflow(which):
    class Demo(WorkflowEntrypoint):
        async def run(self, event, step):
            @step.do("First step")
            async def first():
                return {"output": "First step result"}

            @step.do("Second step")
            async def second():
                return {"output": which}
            await step.sleep("Wait", "1 second")
            await first()
            await step.sleep("Wait", "1 second")
            await second()
            return f"i'm {which}"
    return Demo


Demo = sleeping_workflow("workflow1")
Demo2 = sleeping_workflow("workflow2")


class Demo3(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("First step")
        async def first():
            return {"output": "First step result"}

        @step.do("Second step")
        async def second():
            return {"output": "workflow3"}
        await first()
        await step.wait_for_event("wait for signal", "continue")
        await second()
        return "i'm workflow3"


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        url = urlsplit(request.url)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        instance_id = query.get("id")
        binding = {"3": self.env.WORKFLOW3, "2": self.env.WORKFLOW2}.get(
            query.get("workflowName"), self.env.WORKFLOW)
        if url.path == "/create":
            handle = await binding.create() if instance_id is None else \\
                await binding.create({"id": instance_id})
        elif url.path in ("/pause", "/resume", "/restart", "/terminate"):
            handle = await binding.get(instance_id)
            await getattr(handle, url.path[1:])()
        elif url.path == "/sendEvent":
            handle = await binding.get(instance_id)
            await handle.send_event({"type": "continue", "payload": json.loads(await request.text())})
            return Response.json({"ok": True})
        else:
            handle = await binding.get(instance_id)
        return Response.json({"status": await handle.status(), "id": handle.id})
'''


def write_project(root: Path, wrangler: str, entry: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "wrangler.jsonc").write_text(textwrap.dedent(wrangler), encoding="utf-8")
    (root / "src").mkdir(exist_ok=True)
    (root / "src" / "entry.py").write_text(entry, encoding="utf-8")
    return root


@pytest.fixture
def dynwf_options():
    return {"time_skipping": False}     # the tests move the clock themselves


async def get_json(dynwf, path: str, body=None):
    response = await dynwf.fetch(path, json=body) if body is not None else await dynwf.fetch(path)
    assert response.status == 200, (response.status, await response.text())
    return await response.json()


def step_results(dynwf, instance_id: str) -> list:
    """The ``do`` and ``wait`` results of an instance, in order: what the local engine's
    ``__LOCAL_DEV_STEP_OUTPUTS`` lists."""
    return [json.loads(r.result) if r.result is not None else None
            for r in dynwf.engine.store.list_steps(instance_id)
            if r.kind in ("do", "wait") and r.status == "done"]


class TestWorkflowFixture:
    """follows workers-sdk fixtures/workflow/tests/index.test.ts."""

    @pytest.fixture
    def dynwf_project(self, tmp_path):
        return write_project(tmp_path / "workflow", WORKFLOW_WRANGLER, WORKFLOW_ENTRY)

    async def test_creates_a_workflow_with_id(self, dynwf):
        """follows workers-sdk fixtures/workflow/tests/index.test.ts, 'creates a workflow with
        id': the instance starts, runs its first step and sleeps. Deliberate divergences
        (docs/semantics.md §10): create() returns before the instance runs (``queued``, as
        production), and a sleeping instance is ``waiting``, not the local engine's
        ``running``. After the sleep it completes with the default payload ({})."""
        created = await get_json(dynwf, "/create?workflowName=test")
        assert created == {"status": "queued", "error": None, "output": None}
        await dynwf.settle()
        assert await get_json(dynwf, "/status?workflowName=test") == {
            "status": "waiting", "error": None, "output": None}
        assert step_results(dynwf, "test") == [{"output": "First step result"}]
        await dynwf.advance("1 second")
        assert await get_json(dynwf, "/status?workflowName=test") == {
            "status": "complete", "error": None, "output": {}}

    async def test_creates_a_workflow_without_id(self, dynwf):
        """follows workers-sdk fixtures/workflow/tests/index.test.ts, 'creates a workflow without
        id': an id is generated and the instance runs like one created with an id."""
        created = await get_json(dynwf, "/create")
        assert created["status"] == "queued"
        (instance,) = dynwf.engine.store.list_instances(limit=10)
        await dynwf.settle()
        assert step_results(dynwf, instance.id) == [{"output": "First step result"}]

    async def test_getting_a_workflow_never_created_fails(self, dynwf):
        """follows workers-sdk fixtures/workflow/tests/index.test.ts, 'fails getting a workflow
        without creating it first': ``instance.not_found``."""
        with pytest.raises(InstanceNotFoundError) as caught:
            await dynwf.fetch("/status?workflowName=anotherTest")
        assert caught.value.code == "instance.not_found"

    async def test_create_batch_runs_each_instance_separately(self, dynwf):
        """follows workers-sdk fixtures/workflow/tests/index.test.ts, 'batchCreate should create
        multiple instances and run them separately'."""
        assert await get_json(dynwf, "/createBatch") == ["batch-1", "batch-2"]
        await dynwf.advance("1 second")
        for instance_id, output in (("batch-1", "1"), ("batch-2", "2")):
            assert await get_json(dynwf, f"/status?workflowName={instance_id}") == {
                "status": "complete", "error": None, "output": output}
            assert step_results(dynwf, instance_id) == [
                {"output": "First step result"}, {"output": "Second step result"}]

    @pytest.mark.parametrize("message", ["generic_error_message", ""])
    async def test_a_generic_error_is_retried_and_counted_in_the_closure(self, dynwf, message):
        """follows workers-sdk fixtures/workflow/tests/index.test.ts, 'should retry a step if a
        generic Error (with a generic error message) is thrown' and '... (with an empty error
        message) is thrown': the retries happen inside one invocation, so the count kept in
        ``run()``'s closure survives the 100 ms delays (§4.9)."""
        await get_json(dynwf, f"/createDemo3?workflowName=d3&doRetry=true&errorMessage={message}")
        await dynwf.settle()
        await dynwf.advance("700 ms")         # the back-offs: 100, 200 and 400 ms
        await dynwf.settle()
        assert (await get_json(dynwf, "/get3?workflowName=d3"))["output"] == \
            "The step was retried 3 times"

    @pytest.mark.parametrize("message", ["generic_error_message", ""])
    async def test_a_non_retryable_error_is_not_retried(self, dynwf, message):
        """follows workers-sdk fixtures/workflow/tests/index.test.ts, 'should not retry a step if
        a NonRetryableError (with a generic error message) is thrown' and '... (with an empty
        error message) is thrown'."""
        await get_json(dynwf, f"/createDemo3?workflowName=d3&doRetry=false&errorMessage={message}")
        await dynwf.settle()
        assert (await get_json(dynwf, "/get3?workflowName=d3"))["output"] == \
            "The step was retried 0 times"

    async def test_wait_for_event_works(self, dynwf):
        """follows workers-sdk fixtures/workflow/tests/index.test.ts, 'waitForEvent should work':
        the event sent through the binding completes the instance; its payload is the wait's
        result, between the two steps' outputs."""
        await get_json(dynwf, "/createDemo2?workflowName=something")
        await get_json(dynwf, "/sendEvent?workflowName=something", {"event": True})
        await dynwf.settle()
        assert await get_json(dynwf, "/get2?workflowName=something") == {
            "status": "complete", "error": None, "output": {}}
        outputs = step_results(dynwf, "something")
        assert outputs[0] == {"output": "First step result"}
        assert outputs[1]["payload"] == {"event": True}
        assert outputs[2] == {"output": "Second step result"}

    async def test_pause_and_resume(self, dynwf):
        """follows workers-sdk fixtures/workflow/tests/index.test.ts, 'instance lifecycle
        methods' / 'pause and resume a workflow'."""
        await get_json(dynwf, "/createDemo2?workflowName=pr")
        await dynwf.settle()
        assert step_results(dynwf, "pr") == [{"output": "First step result"}]
        assert (await get_json(dynwf, "/pause?workflowName=pr"))["status"] == "paused"
        await get_json(dynwf, "/resume?workflowName=pr")
        await get_json(dynwf, "/sendEvent?workflowName=pr", {"event": True})
        await dynwf.settle()
        assert (await get_json(dynwf, "/get2?workflowName=pr"))["status"] == "complete"

    async def test_terminate(self, dynwf):
        """follows workers-sdk fixtures/workflow/tests/index.test.ts, 'instance lifecycle
        methods' / 'terminate a running workflow'."""
        await get_json(dynwf, "/createDemo2?workflowName=t")
        await dynwf.settle()
        await get_json(dynwf, "/terminate?workflowName=t")
        assert (await get_json(dynwf, "/get2?workflowName=t"))["status"] == "terminated"

    async def test_restart(self, dynwf):
        """follows workers-sdk fixtures/workflow/tests/index.test.ts, 'instance lifecycle
        methods' / 'restart a running workflow': right after restart the instance reads running
        (§1.7, §4.6), then waits for its event again and an event completes it."""
        await get_json(dynwf, "/createDemo2?workflowName=r")
        await dynwf.settle()
        await get_json(dynwf, "/restart?workflowName=r")
        assert (await get_json(dynwf, "/get2?workflowName=r"))["status"] == "running"
        await dynwf.settle()
        assert (await get_json(dynwf, "/get2?workflowName=r"))["status"] == "waiting"
        await get_json(dynwf, "/sendEvent?workflowName=r", {"event": True})
        await dynwf.settle()
        assert (await get_json(dynwf, "/get2?workflowName=r"))["status"] == "complete"

    async def test_create_after_an_immediate_redirect(self, dynwf):
        """follows workers-sdk fixtures/workflow/tests/index.test.ts, 'should create an instance
        after immediate redirect': the handler answers 302 right after create(); following it
        finds the instance."""
        response = await dynwf.fetch("/createWithRedirect")
        assert response.status == 302
        location = response.headers.get("location")
        await dynwf.settle()
        status = await get_json(dynwf, location)
        assert status["status"] == "waiting"      # in its one-second sleep (§10: not `running`)


def test_instances_persist_across_lifetimes(tmp_path):
    """follows workers-sdk fixtures/workflow/tests/index.test.ts, 'should persist instances
    across lifetimes': an instance created before the emulator stopped is found by the next one
    on the same state directory."""
    project = write_project(tmp_path / "workflow", WORKFLOW_WRANGLER, WORKFLOW_ENTRY)
    state = tmp_path / "state"

    async def main():
        async with Emulator(project, state_dir=state, time_skipping=False) as first:
            await get_json(first, "/create?workflowName=something")
            await first.settle()
        async with Emulator(project, state_dir=state, time_skipping=False) as second:
            status = await get_json(second, "/status?workflowName=something")
            assert status == {"status": "waiting", "error": None, "output": None}
            assert step_results(second, "something") == [{"output": "First step result"}]
    arun(main())


class TestWorkflowMultipleFixture:
    """follows workers-sdk fixtures/workflow-multiple/tests/index.test.ts."""

    @pytest.fixture
    def dynwf_project(self, tmp_path):
        return write_project(tmp_path / "multiple", MULTIPLE_WRANGLER, MULTIPLE_ENTRY)

    async def started_workflow3(self, dynwf, instance_id: str) -> None:
        await get_json(dynwf, f"/create?workflowName=3&id={instance_id}")
        await dynwf.settle()
        assert step_results(dynwf, instance_id) == [
            {"output": "First step result"}]

    async def test_one_id_in_two_workflows(self, dynwf):
        """follows workers-sdk fixtures/workflow-multiple/tests/index.test.ts, 'creates two
        instances with same id in two different workflows': ids are per workflow (§1.2); each
        instance runs its own workflow to its own output and step results."""
        await asyncio.gather(get_json(dynwf, "/create?workflowName=1&id=test"),
                             get_json(dynwf, "/create?workflowName=2&id=test"))
        for _ in range(2):                      # the two 1-second sleeps
            await dynwf.settle()
            await dynwf.advance("1 second")
        await dynwf.settle()
        for which, workflow in (("1", "my-workflow"), ("2", "my-workflow-2")):
            assert await get_json(dynwf, f"/status?workflowName={which}&id=test") == {
                "id": "test", "status": {"status": "complete", "error": None,
                                         "output": f"i'm workflow{which}"}}
            steps = dynwf.introspect_instance(dynwf.binding(workflow), "test").steps()
            assert [s["result"] for s in steps if s["kind"] == "do"] == [
                {"output": "First step result"}, {"output": f"workflow{which}"}]

    async def test_pause_and_resume(self, dynwf):
        """follows workers-sdk fixtures/workflow-multiple/tests/index.test.ts, 'instance
        lifecycle methods (workflow3)' / 'pause and resume a workflow'."""
        await self.started_workflow3(dynwf, "p")
        await get_json(dynwf, "/pause?workflowName=3&id=p")
        assert (await get_json(dynwf, "/status?workflowName=3&id=p"))["status"]["status"] == "paused"
        await get_json(dynwf, "/resume?workflowName=3&id=p")
        assert await get_json(dynwf, "/sendEvent?workflowName=3&id=p", {"done": True}) == {"ok": True}
        await dynwf.settle()
        assert await get_json(dynwf, "/status?workflowName=3&id=p") == {"id": "p", "status": {
            "status": "complete", "error": None, "output": "i'm workflow3"}}

    async def test_terminate(self, dynwf):
        """follows workers-sdk fixtures/workflow-multiple/tests/index.test.ts, 'instance
        lifecycle methods (workflow3)' / 'terminate a running workflow'."""
        await self.started_workflow3(dynwf, "t")
        await get_json(dynwf, "/terminate?workflowName=3&id=t")
        assert (await get_json(dynwf, "/status?workflowName=3&id=t"))["status"]["status"] == \
            "terminated"

    async def test_restart(self, dynwf):
        """follows workers-sdk fixtures/workflow-multiple/tests/index.test.ts, 'instance
        lifecycle methods (workflow3)' / 'restart a running workflow': right after restart the
        instance reads running (§1.7, §4.6)."""
        await self.started_workflow3(dynwf, "r")
        await get_json(dynwf, "/restart?workflowName=3&id=r")
        assert (await get_json(dynwf, "/status?workflowName=3&id=r"))["status"]["status"] == \
            "running"
        await dynwf.settle()
        assert (await get_json(dynwf, "/status?workflowName=3&id=r"))["status"]["status"] == \
            "waiting"
        await get_json(dynwf, "/sendEvent?workflowName=3&id=r", {"done": True})
        await dynwf.settle()
        assert await get_json(dynwf, "/status?workflowName=3&id=r") == {"id": "r", "status": {
            "status": "complete", "error": None, "output": "i'm workflow3"}}

"""Cloudflare's example tests of its Workflows test API, as dynwf's conformance suite.

workers-sdk ``fixtures/vitest-plugin-examples/workflows`` is a content-moderation workflow and
two test files using ``cloudflare:test``'s ``introspectWorkflowInstance`` (unit) and
``introspectWorkflow`` (integration). Here the same workflow is written in Python (same step
names, branches and routes) and tested with the pytest plugin's counterparts,
``introspect_instance`` and ``introspect_workflow`` (docs/semantics.md §7.3). Each test names the
case it follows.
"""

from __future__ import annotations

import textwrap

import pytest

from dynwf_pytest import introspect_instance, introspect_workflow

WRANGLER = """\
{
  "name": "workflows-example",
  "main": "src/entry.py",
  "compatibility_date": "2026-04-01",
  "workflows": [{"binding": "MODERATOR", "name": "moderator", "class_name": "ModeratorWorkflow"}],
}
"""

# fixtures/vitest-plugin-examples/workflows/src/index.ts, in Python
ENTRY = '''\
import random
from urllib.parse import parse_qs, urlsplit

from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class ModeratorWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        await step.sleep("sleep for a while", "10 seconds")

        @step.do("AI content scan")
        async def scan():
            return {"violationScore": random.randrange(100)}   # a simulated model's score
        ai_result = await scan()

        if ai_result["violationScore"] < 10:
            @step.do("auto approve content")
            async def approve():
                return {"status": "auto_approved"}
            await approve()
            return {"status": "auto_approved"}

        if ai_result["violationScore"] > 90:
            @step.do("auto reject content")
            async def reject():
                return {"status": "auto_rejected"}
            await reject()
            return {"status": "auto_rejected"}

        review = await step.wait_for_event("human review", "moderation-decision", timeout="1 day")
        decision = review["payload"]["moderatorAction"]

        @step.do("apply moderator decision")
        async def apply():
            return {"status": "moderated", "decision": decision}
        await apply()
        return {"status": "moderated", "decision": decision}


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        url = urlsplit(request.url)
        query = parse_qs(url.query)
        if "id" in query:
            instance = await self.env.MODERATOR.get(query["id"][0])
            return Response.json(await instance.status())
        if url.path == "/moderate":
            workflow = await self.env.MODERATOR.create()
            return Response.json({"id": workflow.id, "details": await workflow.status()})
        if url.path == "/moderate-batch":
            workflows = await self.env.MODERATOR.create_batch([{}, {"id": "321"}, {}])
            return Response.json({"ids": [workflow.id for workflow in workflows]})
        return Response("Not found", status=404)
'''

STEP_NAME = "AI content scan"


@pytest.fixture
def dynwf_project(tmp_path):
    root = tmp_path / "workflows-example"
    (root / "src").mkdir(parents=True)
    (root / "wrangler.jsonc").write_text(textwrap.dedent(WRANGLER), encoding="utf-8")
    (root / "src" / "entry.py").write_text(ENTRY, encoding="utf-8")
    return root


# ---- unit.test.ts ------------------------------------------------------------------------------

async def test_mock_a_non_violation_score_and_complete(dynwf):
    """follows workers-sdk fixtures/vitest-plugin-examples/workflows/test/unit.test.ts, 'should
    mock a non-violation score and complete'."""
    async with introspect_instance(dynwf.binding(), "m1") as instance:
        async def modify(m):
            await m.disable_sleeps()
            await m.mock_step_result({"name": STEP_NAME}, {"violationScore": 0})
        await instance.modify(modify)
        await dynwf.binding().create({"id": "m1"})
        assert await instance.wait_for_step_result({"name": STEP_NAME}) == {"violationScore": 0}
        assert await instance.wait_for_step_result({"name": "auto approve content"}) == {
            "status": "auto_approved"}
        await instance.wait_for_status("complete")
        assert await instance.get_output() == {"status": "auto_approved"}


async def test_mock_the_scan_to_fail_twice_then_complete(dynwf):
    """follows workers-sdk fixtures/vitest-plugin-examples/workflows/test/unit.test.ts, 'should
    mock the violation score calculation to fail 2 times and then complete' (disposed
    explicitly, as there)."""
    instance = introspect_instance(dynwf.binding(), "m2")
    try:
        async def modify(m):
            await m.disable_sleeps()
            await m.mock_step_error({"name": STEP_NAME}, RuntimeError("Something went wrong!"), 2)
            await m.mock_step_result({"name": STEP_NAME}, {"violationScore": 0})
        await instance.modify(modify)
        await dynwf.binding().create({"id": "m2"})
        assert await instance.wait_for_step_result({"name": STEP_NAME}) == {"violationScore": 0}
        assert await instance.wait_for_step_result({"name": "auto approve content"}) == {
            "status": "auto_approved"}
        await instance.wait_for_status("complete")
        assert await instance.get_output() == {"status": "auto_approved"}
        assert next(s for s in instance.steps() if s["name"] == STEP_NAME)["attempts"] == 3
    finally:
        await instance.dispose()


async def test_mock_a_violation_score_and_complete(dynwf):
    """follows workers-sdk fixtures/vitest-plugin-examples/workflows/test/unit.test.ts, 'should
    mock a violation score and complete'."""
    async with introspect_instance(dynwf.binding(), "m3") as instance:
        async def modify(m):
            await m.disable_sleeps()
            await m.mock_step_result({"name": STEP_NAME}, {"violationScore": 99})
        await instance.modify(modify)
        await dynwf.binding().create({"id": "m3"})
        assert await instance.wait_for_step_result({"name": STEP_NAME}) == {"violationScore": 99}
        assert await instance.wait_for_step_result({"name": "auto reject content"}) == {
            "status": "auto_rejected"}
        await instance.wait_for_status("complete")
        assert await instance.get_output() == {"status": "auto_rejected"}


async def test_reviewed_accepted_and_complete(dynwf):
    """follows workers-sdk fixtures/vitest-plugin-examples/workflows/test/unit.test.ts, 'should
    be reviewed, accepted and complete': a mocked event answers the human review."""
    async with introspect_instance(dynwf.binding(), "m4") as instance:
        async def modify(m):
            await m.disable_sleeps()
            await m.mock_step_result({"name": STEP_NAME}, {"violationScore": 50})
            await m.mock_event({"type": "moderation-decision",
                                "payload": {"moderatorAction": "approve"}})
        await instance.modify(modify)
        await dynwf.binding().create({"id": "m4"})
        assert await instance.wait_for_step_result({"name": STEP_NAME}) == {"violationScore": 50}
        assert await instance.wait_for_step_result({"name": "apply moderator decision"}) == {
            "status": "moderated", "decision": "approve"}
        await instance.wait_for_status("complete")
        assert await instance.get_output() == {"decision": "approve", "status": "moderated"}


async def test_disable_retry_delays_when_mocking_step_errors(dynwf):
    """follows workers-sdk fixtures/vitest-plugin-examples/workflows/test/unit.test.ts, 'should
    disable retry delays when mocking step errors': with time skipping off, the two failed
    attempts are retried without the clock moving."""
    dynwf.time_skipping = False
    before = dynwf.now()
    async with introspect_instance(dynwf.binding(), "m5") as instance:
        async def modify(m):
            await m.disable_sleeps()
            await m.disable_retry_delays()
            await m.mock_step_error({"name": STEP_NAME}, RuntimeError("Transient failure"), 2)
            await m.mock_step_result({"name": STEP_NAME}, {"violationScore": 0})
        await instance.modify(modify)
        await dynwf.binding().create({"id": "m5"})
        assert await instance.wait_for_step_result({"name": STEP_NAME}) == {"violationScore": 0}
        await instance.wait_for_status("complete")
        assert await instance.get_output() == {"status": "auto_approved"}
    assert dynwf.now() == before


# ---- integration.test.ts -----------------------------------------------------------------------

async def mocked_all(dynwf, score: int):
    workflow = introspect_workflow(dynwf.binding())

    async def modify(m):
        await m.disable_sleeps()
        await m.mock_step_result({"name": STEP_NAME}, {"violationScore": score})
    await workflow.modify_all(modify)
    return workflow


async def test_workflow_reaches_the_end(dynwf):
    """follows workers-sdk fixtures/vitest-plugin-examples/workflows/test/integration.test.ts,
    'workflow should be able to reach the end and be successful': the instance the Worker's own
    fetch creates is introspected."""
    async with await mocked_all(dynwf, 0) as workflow:
        response = await dynwf.fetch("/moderate")
        assert response.status == 200
        instances = await workflow.get()
        assert len(instances) == 1
        (instance,) = instances
        assert await instance.wait_for_step_result({"name": STEP_NAME}) == {"violationScore": 0}
        await instance.wait_for_status("complete")
        assert await instance.get_output() == {"status": "auto_approved"}


async def test_workflow_batch_reaches_the_end(dynwf):
    """follows workers-sdk fixtures/vitest-plugin-examples/workflows/test/integration.test.ts,
    'workflow batch should be able to reach the end and be successful' (disposed explicitly)."""
    workflow = await mocked_all(dynwf, 0)
    try:
        response = await dynwf.fetch("/moderate-batch")
        assert "321" in (await response.json())["ids"]
        instances = await workflow.get()
        assert len(instances) == 3
        for instance in instances:
            assert await instance.wait_for_step_result({"name": STEP_NAME}) == {"violationScore": 0}
            await instance.wait_for_status("complete")
            assert await instance.get_output() == {"status": "auto_approved"}
    finally:
        await workflow.dispose()


async def test_terminate_a_workflow_instance(dynwf):
    """follows workers-sdk fixtures/vitest-plugin-examples/workflows/test/integration.test.ts,
    'workflow instance lifecycle methods' / 'should terminate a workflow instance'."""
    async with await mocked_all(dynwf, 50) as workflow:
        data = await (await dynwf.fetch("/moderate")).json()
        (instance,) = await workflow.get()
        assert await instance.wait_for_step_result({"name": STEP_NAME}) == {"violationScore": 50}
        await (await dynwf.binding().get(data["id"])).terminate()
        await instance.wait_for_status("terminated")


async def test_pause_a_workflow_instance(dynwf):
    """follows workers-sdk fixtures/vitest-plugin-examples/workflows/test/integration.test.ts,
    'workflow instance lifecycle methods' / 'should pause a workflow instance'."""
    async with await mocked_all(dynwf, 50) as workflow:
        data = await (await dynwf.fetch("/moderate")).json()
        (instance,) = await workflow.get()
        assert await instance.wait_for_step_result({"name": STEP_NAME}) == {"violationScore": 50}
        await (await dynwf.binding().get(data["id"])).pause()
        await instance.wait_for_status("paused")


async def test_force_human_review_to_time_out_and_error(dynwf):
    """follows workers-sdk fixtures/vitest-plugin-examples/workflows/test/unit.test.ts, 'should
    force human review to timeout and error': a forced event timeout ends the wait at once; the
    instance errors with the platform's name ``Error`` and a message saying the wait timed out
    (docs/semantics.md §2.8, §7.3)."""
    async with introspect_instance(dynwf.binding(), "m6") as instance:
        async def modify(m):
            await m.disable_sleeps()
            await m.mock_step_result({"name": STEP_NAME}, {"violationScore": 50})
            await m.force_event_timeout({"name": "human review"})
        await instance.modify(modify)
        await dynwf.binding().create({"id": "m6"})
        assert await instance.wait_for_step_result({"name": STEP_NAME}) == {"violationScore": 50}
        await instance.wait_for_status("errored")
        error = await instance.get_error()
        assert error["name"] == "Error"
        assert "Execution timed out" in error["message"]


async def test_restart_a_workflow_instance_keeps_its_mocks(dynwf):
    """follows workers-sdk fixtures/vitest-plugin-examples/workflows/test/integration.test.ts,
    'workflow instance lifecycle methods' / 'should restart a workflow instance': the test's
    modifiers (a mocked result and a mocked event) survive restart(), so the restarted run
    completes with the same ones (docs/semantics.md §7.3)."""
    workflow = introspect_workflow(dynwf.binding())

    async def modify(m):
        await m.disable_sleeps()
        await m.mock_step_result({"name": STEP_NAME}, {"violationScore": 50})
        await m.mock_event({"type": "moderation-decision",
                            "payload": {"moderatorAction": "approve"}})
    await workflow.modify_all(modify)
    async with workflow:
        data = await (await dynwf.fetch("/moderate")).json()
        (instance,) = await workflow.get()
        assert await instance.wait_for_step_result({"name": STEP_NAME}) == {"violationScore": 50}
        await (await dynwf.binding().get(data["id"])).restart()
        assert (await instance.status())["status"] == "running"    # a new run (§1.7)
        await instance.wait_for_status("complete")
        assert await instance.get_output() == {"status": "moderated", "decision": "approve"}
        assert await instance.wait_for_step_result({"name": STEP_NAME}) == {"violationScore": 50}

"""Test modifiers survive `restart()` (docs/semantics.md §7.3): the platform's test API keeps an
instance's mocks across a restart, which erases only the run's own state; in the host and in a
tenant's isolate."""

from __future__ import annotations

import pytest

from parity_projects import WHERE, binding_of, target_of, write_parity

SOURCE = '''
from workers import WorkflowEntrypoint
from workers.workflows import NonRetryableError


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("fetch")
        async def fetch():
            raise NonRetryableError("the real body ran")

        fetched = await fetch()
        await step.sleep("nap", "1 day")
        approval = await step.wait_for_event("approval", "approved", timeout="1 hour")
        try:
            await step.wait_for_event("second", "other", timeout="1 hour")
            second = "arrived"
        except Exception as exc:
            second = str(exc)
        return {"fetched": fetched, "approval": approval["payload"], "second": second}
'''


@pytest.fixture(params=WHERE)
def where(request):
    return request.param


@pytest.fixture
def dynwf_project(tmp_path, where):
    return write_parity(tmp_path / "project", where, SOURCE)


@pytest.fixture
def dynwf_options():
    return {"time_skipping": False}    # only the disabled sleep may end the nap


async def test_mocks_survive_restart(dynwf, where):
    async def modify(m):
        await m.mock_step_result("fetch", {"source": "mock"})
        await m.disable_sleeps()
        await m.mock_event({"type": "approved", "payload": {"ok": 1}})
        await m.force_event_timeout("second")

    r1 = dynwf.introspect_instance(target_of(dynwf, where), "r1")
    await r1.modify(modify)
    handle = await binding_of(dynwf, where).create({"id": "r1"})
    expected = {"fetched": {"source": "mock"}, "approval": {"ok": 1},
                "second": "Execution timed out after 3600000ms"}
    await r1.wait_for_status("complete")
    assert await r1.get_output() == expected
    for _ in range(2):                  # and again after a second restart
        await handle.restart()
        await r1.wait_for_status("complete")
        assert await r1.get_output() == expected


async def test_an_event_mocked_while_the_instance_waits_survives_restart(dynwf, where):
    async def modify(m):
        await m.mock_step_result("fetch", "m")
        await m.disable_sleeps()
        await m.force_event_timeout("second")

    r2 = dynwf.introspect_instance(target_of(dynwf, where), "r2")
    await r2.modify(modify)
    handle = await binding_of(dynwf, where).create({"id": "r2"})
    await r2.wait_for_status("waiting")
    await r2.modify(lambda m: m.mock_event({"type": "approved", "payload": 2}))
    await r2.wait_for_status("complete")
    await handle.restart()
    await r2.wait_for_status("complete")
    assert (await r2.get_output())["approval"] == 2


async def test_a_deleted_instance_leaves_no_mocks_to_an_instance_created_again_with_its_id(
        dynwf, where):
    """§1.6, §7.3: delete() erases everything about an instance, its test modifiers too: an
    instance created again with the id runs its real code (the real ``fetch`` fails it)."""
    async def modify(m):
        await m.mock_step_result("fetch", "m")
        await m.disable_sleeps()
        await m.mock_event({"type": "approved", "payload": 3})
        await m.force_event_timeout("second")

    r3 = dynwf.introspect_instance(target_of(dynwf, where), "r3")
    await r3.modify(modify)
    handle = await binding_of(dynwf, where).create({"id": "r3"})
    await r3.wait_for_status("complete")
    await handle.delete()
    await binding_of(dynwf, where).create({"id": "r3"})
    await r3.wait_for_status("errored")
    assert "the real body ran" in (await r3.get_error())["message"]

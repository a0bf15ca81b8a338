"""An event wait that times out, forced by the test API or for real (docs/semantics.md §2.8): the
error `run()` may catch, and the error an uncaught one leaves on the instance, named as the
platform's own tests see it; in the host and across the step wire."""

from __future__ import annotations

import pytest

from emulator.sdk.failures import WorkflowTimeoutError
from parity_projects import WHERE, binding_of, target_of, write_parity

SOURCE = '''
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        if event["payload"].get("catch"):
            try:
                await step.wait_for_event("approval", "approved", timeout="1 hour")
            except Exception as exc:
                return {"class": type(exc).__name__, "name": getattr(exc, "name", None),
                        "message": str(exc)}
        await step.wait_for_event("approval", "approved", timeout="1 hour")
        return "approved"
'''

TIMED_OUT = "Execution timed out after 3600000ms"


@pytest.fixture(params=WHERE)
def where(request):
    return request.param


@pytest.fixture
def dynwf_project(tmp_path, where):
    return write_parity(tmp_path / "project", where, SOURCE)


async def _timed_out(dynwf, where, how, params):
    instance = dynwf.introspect_instance(target_of(dynwf, where), "t1")
    if how == "forced":
        await instance.modify(lambda m: m.force_event_timeout("approval"))
    await binding_of(dynwf, where).create({"id": "t1", "params": params})
    if how == "real":
        await instance.wait_for_status("waiting")
        await dynwf.advance("61 minutes")
    return instance


@pytest.mark.parametrize("how", ["forced", "real"])
async def test_an_uncaught_event_timeout_errors_the_instance_as_the_platform_names_it(
        dynwf, where, how):
    """§2.8: the platform's tests read `getError()` of an instance whose wait timed out as
    `{name: "Error", message: "Execution timed out after ...ms"}`, forced or not."""
    t1 = await _timed_out(dynwf, where, how, {})
    await t1.wait_for_status("errored")
    assert await t1.get_error() == {"name": "Error", "message": TIMED_OUT}


@pytest.mark.parametrize("how", ["forced", "real"])
async def test_a_caught_event_timeout_is_a_workflow_timeout_error(dynwf, where, how):
    """§2.8: `run()` catches it as `WorkflowTimeoutError`; its `name` is the platform's."""
    t1 = await _timed_out(dynwf, where, how, {"catch": True})
    await t1.wait_for_status("complete")
    assert await t1.get_output() == {"class": "WorkflowTimeoutError", "name": "Error",
                                     "message": TIMED_OUT}
    (wait,) = [s for s in t1.steps() if s["kind"] == "wait"]
    # the step keeps the engine's own error; the name changes where it reaches run()
    assert wait["error"] == {"name": WorkflowTimeoutError.__name__, "message": TIMED_OUT}

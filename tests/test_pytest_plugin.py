"""The pytest plugin: every modifier and helper of the workflow test API (docs/semantics.md §7.3), with its
misuse errors, against real SQLite and real isolates; the hello example tested through it; and
the plugin's wiring (entry point, project discovery, tenant parametrization) in a nested pytest.

The tests here use the plugin as a user would: the ``dynwf`` fixture, ``async def`` tests run on
the emulator's loop, and ``dynwf_project`` overridden to point at a project in ``tmp_path``.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path

import pytest

from dynwf_pytest import IntrospectorError, introspect_instance, introspect_workflow, tenant_ids
from emulator.sdk.failures import WorkflowTimeoutError
from emulator.errors import NotSerialisableError
from plugin_projects import (CRASHY_TENANT, EVENTS_TENANT, STEPS_TENANT, write_in_process,
                             write_lab)

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello"


@pytest.fixture
def dynwf_project(tmp_path):
    return write_lab(tmp_path / "lab", {"steps": STEPS_TENANT, "events": EVENTS_TENANT,
                                        "crashy": CRASHY_TENANT})


def finite_status_text(instance_id, reached, expected):
    return (f"[WorkflowIntrospector] The Workflow instance {instance_id} has reached status "
            f"'{reached}'. This is a finite status that prevents it from ever reaching the "
            f"expected status of '{expected}'.")


async def start(dynwf, tenant, instance_id, params=None, modify=None):
    """An introspector for ``instance_id`` of ``tenant``, modified, then the instance created."""
    instance = dynwf.introspect_instance(tenant, instance_id)
    if modify is not None:
        await instance.modify(modify)
    await dynwf.tenant(tenant).binding.create({"id": instance_id, "params": params or {}})
    return instance


def step_row(instance, name, index=1, kind="do"):
    return next(s for s in instance.steps()
                if (s["kind"], s["name"], s["count"]) == (kind, name, index))


# ---- mock_step_result ---------------------------------------------------------------------------

async def test_a_mocked_result_is_returned_and_the_body_never_runs_in_the_isolate(dynwf):
    # the body raises NonRetryableError when it runs: only a mock can complete this instance
    mock = {"source": "mock"}
    async with await start(dynwf, "steps", "o1", {"explode": True},
                           lambda m: m.mock_step_result({"name": "fetch"}, mock)) as o1:
        assert await o1.wait_for_step_result("fetch") == {"source": "mock"}
        await o1.wait_for_status("complete")
        assert await o1.get_output() == {"fetched": {"source": "mock"}, "counts": [10, 20]}
        fetch = step_row(o1, "fetch")
        assert (fetch["status"], fetch["attempts"]) == ("done", 1)  # recorded like any step


async def test_index_selects_the_nth_occurrence_of_a_step_name(dynwf):
    async def modify(m):
        await m.mock_step_result({"name": "count", "index": 2}, 99)

    o1 = await start(dynwf, "steps", "o1", {}, modify)
    assert await o1.wait_for_step_result("count", index=2) == 99
    assert await o1.wait_for_step_result({"name": "count", "index": 1}) == 10
    await o1.wait_for_status("complete")
    assert (await o1.get_output())["counts"] == [10, 99]


async def test_mocking_a_step_twice_is_refused_with_the_platforms_text(dynwf):
    o1 = dynwf.introspect_instance("steps", "o1")
    await o1.modify(lambda m: m.mock_step_result({"name": "fetch"}, 1))
    with pytest.raises(IntrospectorError) as caught:
        await o1.modify(lambda m: m.mock_step_result({"name": "fetch", "index": 1}, 2))
    assert str(caught.value) == "[WorkflowIntrospector] Trying to mock step 'fetch' multiple times!"
    # another occurrence of the name is another step
    await o1.modify(lambda m: m.mock_step_result({"name": "fetch", "index": 2}, 3))


async def test_an_error_or_a_timeout_after_a_mocked_result_is_refused(dynwf):
    o1 = dynwf.introspect_instance("steps", "o1")
    await o1.modify(lambda m: m.mock_step_result("fetch", 1))
    with pytest.raises(IntrospectorError) as error:
        await o1.modify(lambda m: m.mock_step_error("fetch", ValueError("x")))
    with pytest.raises(IntrospectorError) as timeout:
        await o1.modify(lambda m: m.force_step_timeout("fetch", times=1))
    assert str(error.value) == ("[WorkflowIntrospector] Trying to mock error on step 'fetch' "
                                "after mocking its result!")
    assert str(timeout.value) == ("[WorkflowIntrospector] Trying to force timeout on step 'fetch' "
                                  "after mocking its result!")


async def test_a_result_that_cannot_be_stored_is_refused_when_mocked(dynwf):
    o1 = dynwf.introspect_instance("steps", "o1")
    with pytest.raises(NotSerialisableError, match="mocked result of step 'fetch'"):
        await o1.modify(lambda m: m.mock_step_result("fetch", {1, 2}))


# ---- mock_step_error / force_step_timeout ------------------------------------------------------

async def test_a_mocked_error_on_every_attempt_errors_the_instance(dynwf):
    async def modify(m):
        await m.mock_step_error({"name": "fetch"}, ValueError("mocked outage"))
        await m.disable_retry_delays()

    o1 = await start(dynwf, "steps", "o1", {}, modify)
    with pytest.raises(ValueError, match="mocked outage"):
        await o1.wait_for_step_result("fetch")
    await o1.wait_for_status("errored")
    assert await o1.get_error() == {"name": "ValueError", "message": "mocked outage"}
    assert step_row(o1, "fetch")["attempts"] == 4  # limit 3 retries: every attempt was mocked


async def test_a_failed_steps_error_names_the_tenants_file_and_line(dynwf):
    o1 = await start(dynwf, "steps", "o1", {"explode": True})
    with pytest.raises(Exception, match="the real body ran") as failed:
        await o1.wait_for_step_result("fetch")
    note = "\n".join(failed.value.__notes__)
    assert note.startswith("raised by step 'fetch' attempt 1 (most recent call last):")
    assert 'steps/index.py:13 in fetch\n      raise NonRetryableError("the real body ran")' in note


async def test_mocked_errors_for_some_attempts_then_the_body_runs(dynwf):
    o1 = await start(dynwf, "steps", "o1", {},
                     lambda m: m.mock_step_error("fetch", RuntimeError("flaky"), times=2))
    assert await o1.wait_for_step_result("fetch") == {"source": "real", "attempt": 3}


async def test_a_mocked_non_retryable_error_is_not_retried(dynwf):
    from workers.workflows import NonRetryableError
    o1 = await start(dynwf, "steps", "o1", {},
                     lambda m: m.mock_step_error("fetch", NonRetryableError("card declined")))
    await o1.wait_for_status("errored")
    assert await o1.get_error() == {"name": "NonRetryableError", "message": "card declined"}
    assert step_row(o1, "fetch")["attempts"] == 1


async def test_forced_timeouts_fail_attempts_as_real_timeouts_do(dynwf):
    async def modify(m):
        await m.force_step_timeout({"name": "fetch"})

    o1 = await start(dynwf, "steps", "o1", {}, modify)
    timed_out = 'Step "fetch" attempt 4 timed out after 30000ms'
    with pytest.raises(WorkflowTimeoutError, match=timed_out):
        await o1.wait_for_step_result("fetch")
    assert (await o1.get_error())["name"] == "WorkflowTimeoutError"


async def test_errors_and_timeouts_with_times_take_consecutive_attempts(dynwf):
    seen = []
    dynwf.engine.progress.subscribe(
        lambda p: seen.append((p.data["attempt"], p.data["error"]["name"]))
        if p.kind in ("step.attempt_failed", "step.failed") else None)

    async def modify(m):
        await m.mock_step_error("fetch", KeyError("first"), times=1)
        await m.force_step_timeout("fetch", times=2)      # attempts 2 and 3
        await m.mock_step_error("fetch", OSError("fourth"), times=1)

    o1 = await start(dynwf, "steps", "o1", {}, modify)
    with pytest.raises(OSError, match="fourth"):
        await o1.wait_for_step_result("fetch")
    assert seen == [(1, "KeyError"), (2, "WorkflowTimeoutError"), (3, "WorkflowTimeoutError"),
                    (4, "OSError")]


async def test_an_error_wins_over_a_mocked_result_on_the_same_attempt(dynwf):
    async def modify(m):
        await m.mock_step_error("fetch", ValueError("first attempt"), times=1)
        await m.mock_step_result("fetch", {"source": "mock"})

    o1 = await start(dynwf, "steps", "o1", {"explode": True}, modify)
    assert await o1.wait_for_step_result("fetch") == {"source": "mock"}
    assert step_row(o1, "fetch")["attempts"] == 2


async def test_modifier_arguments_are_checked(dynwf):
    o1 = dynwf.introspect_instance("steps", "o1")
    with pytest.raises(IntrospectorError, match="exception instance"):
        await o1.modify(lambda m: m.mock_step_error("fetch", "boom"))
    with pytest.raises(IntrospectorError, match="positive number of attempts"):
        await o1.modify(lambda m: m.force_step_timeout("fetch", times=0))
    with pytest.raises(IntrospectorError, match="counts occurrences from 1"):
        await o1.modify(lambda m: m.mock_step_result({"name": "fetch", "index": 0}, 1))
    with pytest.raises(IntrospectorError, match="selector"):
        await o1.modify(lambda m: m.disable_sleeps([{"step": "nap"}]))


# ---- sleeps, retry delays and time -------------------------------------------------------------

@pytest.mark.dynwf(time_skipping=False)
async def test_without_time_skipping_a_sleep_holds_the_instance(dynwf):
    o1 = await start(dynwf, "steps", "o1")
    with pytest.raises(IntrospectorError, match=r"instance o1 cannot reach status 'complete' by "
                       r"itself: it is waiting on sleep timer\(s\)"):
        await o1.wait_for_status("complete")


@pytest.mark.dynwf(time_skipping=False)
@pytest.mark.parametrize("steps", [None, [{"name": "nap", "index": 1}], ["nap"]])
async def test_disable_sleeps_ends_them_without_moving_the_clock(dynwf, steps):
    started = dynwf.now()
    o1 = await start(dynwf, "steps", "o1", {}, lambda m: m.disable_sleeps(steps))
    await o1.wait_for_status("complete")
    assert dynwf.now() == started
    assert step_row(o1, "nap", kind="sleep")["status"] == "done"


@pytest.mark.dynwf(time_skipping=False)
async def test_disable_sleeps_ends_a_sleep_already_under_way(dynwf):
    o1 = await start(dynwf, "steps", "o1")
    await o1.wait_for_status("waiting")
    await o1.modify(lambda m: m.disable_sleeps([{"name": "nap"}]))
    await o1.wait_for_status("complete")


@pytest.mark.dynwf(time_skipping=False)
@pytest.mark.parametrize("steps", [None, [{"name": "fetch"}]])
async def test_disable_retry_delays_retries_at_once(dynwf, steps):
    started = dynwf.now()

    async def modify(m):
        await m.disable_retry_delays(steps)
        await m.disable_sleeps()

    o1 = await start(dynwf, "steps", "o1", {"fail_attempts": 2}, modify)
    assert await o1.wait_for_step_result("fetch") == {"source": "real", "attempt": 3}
    await o1.wait_for_status("complete")
    assert dynwf.now() == started


@pytest.mark.dynwf(time_skipping=False)
async def test_disable_retry_delays_covers_an_attempt_lost_with_its_isolate(dynwf):
    started = dynwf.now()
    plain = await start(dynwf, "crashy", "c0")
    with pytest.raises(IntrospectorError, match=r"waiting on retry timer\(s\)"):
        await plain.wait_for_step_result("risky")
    c1 = await start(dynwf, "crashy", "c1", {}, lambda m: m.disable_retry_delays())
    assert await c1.wait_for_step_result("risky") == 2
    assert step_row(c1, "risky")["attempts"] == 2 and dynwf.now() == started


@pytest.mark.dynwf(time_skipping=False)
async def test_disabling_another_steps_retry_delays_leaves_these_waiting(dynwf):
    o1 = await start(dynwf, "steps", "o1", {"fail_attempts": 1},
                     lambda m: m.disable_retry_delays([{"name": "count"}]))
    with pytest.raises(IntrospectorError, match=r"waiting on retry timer\(s\)"):
        await o1.wait_for_step_result("fetch")
    await o1.modify(lambda m: m.disable_retry_delays(["fetch"]))   # ends the back-off under way
    assert await o1.wait_for_step_result("fetch") == {"source": "real", "attempt": 2}


async def test_waits_skip_sleeps_and_back_offs_of_the_instance_without_moving_the_clock(dynwf):
    """docs/semantics.md, "Time": time skipping ends the instance's own waits early; the test's
    clock moves only with advance(), and no recorded time is ahead of it."""
    started = dynwf.now()
    o1 = await start(dynwf, "steps", "o1", {"fail_attempts": 2})
    await o1.wait_for_status("complete")
    assert dynwf.now() == started                  # two one-hour back-offs, a one-hour nap: skipped
    nap = step_row(o1, "nap", kind="sleep")
    assert nap["status"] == "done" and nap["ended_at"] <= dynwf.clock.now_ms()


@pytest.mark.dynwf(time_skipping=False)
async def test_advance_fires_each_timer_at_its_own_time(dynwf):
    started = dynwf.now()
    o1 = await start(dynwf, "events", "e1")
    await o1.wait_for_status("waiting")
    await dynwf.advance("23 hours")
    assert (await o1.status())["status"] == "waiting"
    await dynwf.advance(timedelta(hours=1, minutes=5))     # the day's timeout, then 5 of 10 minutes
    wait = step_row(o1, "approval", kind="wait")
    assert wait["status"] == "failed" and wait["ended_at"] - wait["started_at"] == 86_400_000
    assert (await o1.status())["status"] == "waiting"
    await dynwf.advance(5 * 60_000)
    assert await o1.get_output() == {"decision": {"timed_out": "WorkflowTimeoutError"},
                                     "finished": "done"}
    assert dynwf.now() - started == timedelta(hours=24, minutes=10)


@pytest.mark.dynwf(start=datetime(2030, 1, 1, 9, 0))
async def test_the_clock_starts_where_asked_and_settle_does_not_move_it(dynwf):
    assert dynwf.now() == datetime(2030, 1, 1, 9, 0)
    e1 = await start(dynwf, "events", "e1")
    await dynwf.settle()
    assert (await e1.status())["status"] == "waiting"
    assert step_row(e1, "approval", kind="wait")["started_at"] == dynwf.clock.now_ms()
    assert dynwf.now() == datetime(2030, 1, 1, 9, 0)


async def test_advance_moves_time_forward_only(dynwf):
    from emulator.errors import DurationError
    with pytest.raises(DurationError):
        await dynwf.advance("soon")
    with pytest.raises(DurationError, match="negative"):
        await dynwf.advance(-5)


# ---- events ------------------------------------------------------------------------------------

async def test_a_mocked_event_reaches_a_wait_that_has_not_started(dynwf):
    e1 = await start(dynwf, "events", "e1", {},
                     lambda m: m.mock_event({"type": "approved", "payload": {"by": "ann"}}))
    await e1.wait_for_status("complete")
    assert (await e1.get_output())["decision"] == {"by": "ann"}


async def test_a_mocked_event_reaches_a_wait_under_way(dynwf):
    e1 = await start(dynwf, "events", "e1")
    await e1.wait_for_status("waiting")
    await e1.modify(lambda m: m.mock_event({"type": "approved", "payload": "late"}))
    await e1.wait_for_status("complete")
    assert (await e1.get_output())["decision"] == "late"


@pytest.mark.parametrize("when", ["before", "during"])
async def test_force_event_timeout(dynwf, when):
    started = dynwf.now()

    def force(m):
        return m.force_event_timeout({"name": "approval"})

    e1 = await start(dynwf, "events", "e1", {}, force if when == "before" else None)
    if when == "during":
        await e1.wait_for_status("waiting")
        await e1.modify(force)
    await e1.wait_for_status("complete")
    assert (await e1.get_output())["decision"] == {"timed_out": "WorkflowTimeoutError"}
    assert dynwf.now() == started        # the forced timeout and the skipped cool-down moved no clock


async def test_a_wait_stuck_on_an_event_says_what_it_waits_for(dynwf):
    e1 = await start(dynwf, "events", "e1")
    with pytest.raises(IntrospectorError) as caught:
        await e1.wait_for_status("complete")
    assert str(caught.value) == (
        "[WorkflowIntrospector] The Workflow instance e1 cannot reach status 'complete' by itself: "
        "it is waiting for event 'approved' (step 'approval'). Send the event, mock_event() it, "
        "force_event_timeout() or advance() the clock past its timeout.")


# ---- waits and reads ---------------------------------------------------------------------------

async def test_wait_for_status_fails_fast_on_another_finite_status(dynwf):
    o1 = await start(dynwf, "steps", "o1", {"explode": True})
    with pytest.raises(IntrospectorError) as caught:
        await o1.wait_for_status("complete")
    assert str(caught.value) == finite_status_text("o1", "errored", "complete")
    # pytest prints the notes under it: the instance's error and the tenant's frames
    note = "\n".join(caught.value.__notes__)
    assert note.startswith("the instance's error: NonRetryableError: the real body ran\n"
                           "run() raised it (most recent call last):"), note
    assert "steps/index.py:" in note and "emulator/rpc/peer.py" not in note
    with pytest.raises(IntrospectorError) as caught:
        await o1.wait_for_status("waiting")
    assert str(caught.value) == finite_status_text("o1", "errored", "waiting")


async def test_wait_for_status_queued_returns_at_once_and_unknown_statuses_are_refused(dynwf):
    o1 = dynwf.introspect_instance("steps", "not-created")
    await o1.wait_for_status("queued")
    with pytest.raises(IntrospectorError, match="Unknown status 'done'"):
        await o1.wait_for_status("done")
    with pytest.raises(IntrospectorError, match="does not exist yet"):
        await o1.wait_for_status("running")


async def test_get_output_and_get_error_need_the_matching_status(dynwf):
    o1 = await start(dynwf, "steps", "o1")
    with pytest.raises(IntrospectorError) as output:
        await o1.get_output()
    assert str(output.value) == ('Cannot retrieve output: Workflow instance is in status "queued" '
                                 'but must be "complete" to have an output available')
    await o1.wait_for_status("complete")
    with pytest.raises(IntrospectorError) as error:
        await o1.get_error()
    assert str(error.value) == ('Cannot retrieve error: Workflow instance is in status "complete" '
                                'but must be "errored" to have error information available')


async def test_wait_for_step_result_raises_the_steps_error(dynwf):
    from workers.workflows import NonRetryableError
    o1 = await start(dynwf, "steps", "o1", {"explode": True})
    with pytest.raises(NonRetryableError, match="the real body ran"):
        await o1.wait_for_step_result("fetch")
    with pytest.raises(IntrospectorError, match=r"reached status 'errored' without a result for "
                       r"step 'count' \(index 2\)"):
        await o1.wait_for_step_result("count", 2)


async def test_introspect_instance_needs_a_binding_and_an_id(dynwf):
    for binding, instance_id in ((None, "o1"), (dynwf.binding(), ""), ("", "o1")):
        with pytest.raises(IntrospectorError) as caught:
            introspect_instance(binding, instance_id)
        assert str(caught.value) == ("[WorkflowIntrospector] Workflow binding and instance id are "
                                     "required.")
    with pytest.raises(IntrospectorError, match="Cannot introspect 42"):
        introspect_instance(42, "o1")


# ---- what a test may name, disposal ------------------------------------------------------------

async def test_bindings_tenants_and_tenant_ids_name_the_same_instance(dynwf):
    tenant = dynwf.tenant("steps")
    await tenant.binding.create({"id": "o1", "params": {}})
    by_wrapped = introspect_instance(tenant.binding, "o1")
    by_tenant = introspect_instance(tenant, "o1")
    by_id = introspect_instance("steps", "o1")       # the running test's emulator
    by_raw = introspect_instance(dynwf.binding(), by_tenant.instance_id)
    assert {i.instance_id for i in (by_wrapped, by_tenant, by_id, by_raw)} == {by_raw.id}
    assert by_raw.id.endswith("-o1") and by_tenant.id == "o1"
    await by_id.wait_for_status("complete")
    assert await by_raw.get_output() == await by_wrapped.get_output()


async def test_async_with_disposes_the_instance(dynwf):
    async with introspect_instance(dynwf.tenant("events"), "e1") as e1:
        await dynwf.tenant("events").binding.create({"id": "e1"})
        await e1.wait_for_status("waiting")
    assert e1.disposed and (await e1.status())["status"] == "terminated"
    assert dynwf.engine.modifiers.of(e1.instance_id) is None
    await e1.dispose()  # twice is harmless


async def test_introspect_workflow_modifies_instances_created_after_it(dynwf):
    steps = dynwf.tenant("steps")
    before = await steps.create({"explode": True}, id="before")
    async with introspect_workflow(steps) as workflow:
        await workflow.modify_all(lambda m: m.mock_step_result("fetch", {"source": "all"}))
        for _ in range(2):                  # as the tenant's own code creates them
            response = await dynwf.fetch("/", headers={"x-tenant-id": "steps"},
                                         json={"explode": True})
            assert response.status == 200
        other = await dynwf.tenant("events").create()
        instances = await workflow.get()
        assert len(instances) == 2 and before.id not in {i.id for i in instances}
        for instance in instances:
            await instance.wait_for_status("complete")
            assert (await instance.get_output())["fetched"] == {"source": "all"}
        await before.wait_for_status("errored")
        assert other.instance_id not in {i.instance_id for i in instances}  # another tenant
        with pytest.raises(IntrospectorError, match="already being introspected"):
            introspect_workflow(steps)
    after = await steps.create({"explode": True})
    await after.wait_for_status("errored")              # the session is over
    second = introspect_workflow(dynwf.binding())       # and may be opened again
    await second.dispose()


async def test_disposing_a_workflow_introspector_stops_its_instances(dynwf):
    workflow = await dynwf.introspect_workflow("events")
    await workflow.modify_all(lambda m: m.disable_sleeps())
    e1 = await dynwf.tenant("events").create()
    await e1.wait_for_status("waiting")
    await workflow.dispose()
    assert (await e1.status())["status"] == "terminated"
    assert await workflow.get() == [] or all(i.disposed for i in await workflow.get())


# ---- tenants -----------------------------------------------------------------------------------

async def test_tenant_run_supplies_events_and_reports_where_it_stopped(dynwf):
    events = dynwf.tenant("events")
    done = await events.run(events={"approved": {"by": "bob"}})
    assert (done.status, done.output["decision"]) == ("complete", {"by": "bob"})
    assert done.step_names() == ["approval", "cool down", "finish"]
    left = await events.run(id="left")
    assert (left.status, left.waiting_for, left.id) == ("waiting", ["approved"], "left")
    mocked = await events.run(modify=lambda m: m.mock_event({"type": "approved", "payload": 1}))
    assert mocked.output["decision"] == 1
    created = await events.create(modify=lambda m: m.force_event_timeout("approval"))
    await created.wait_for_status("complete")


def test_a_plain_test_runs_coroutines_on_the_emulators_loop(dynwf):
    run = dynwf.run(dynwf.tenant("steps").run({"fail_attempts": 1}))
    assert run.output["fetched"] == {"source": "real", "attempt": 2}
    assert dynwf.tenant_ids() == ["crashy", "events", "steps"]
    with pytest.raises(Exception, match="no tenant 'nobody'"):
        dynwf.tenant("nobody")


def test_a_dispatcher_that_fails_to_import_stops_the_emulator_cleanly(tmp_path):
    from dynwf_pytest import Emulator
    project = write_lab(tmp_path / "broken")
    (project / "src" / "entry.py").write_text("def broken(:\n", encoding="utf-8")
    emulator = Emulator(project, state_dir=tmp_path / "state")
    with pytest.raises(SyntaxError):
        emulator.start()
    assert emulator.host.pool.zygote.process is None       # the zygote was stopped, not leaked
    emulator.close()                                        # and closing again is harmless


# ---- isolation and in-process workflows --------------------------------------------------------

@pytest.mark.dynwf(isolation="inline")
async def test_modifiers_apply_to_inline_isolates_too(dynwf):
    assert dynwf.host.pool.isolation == "inline"
    o1 = await start(dynwf, "steps", "o1", {"explode": True},
                     lambda m: m.mock_step_result("fetch", "inline mock"))
    await o1.wait_for_status("complete")
    assert (await o1.get_output())["fetched"] == "inline mock"


class TestInProcessWorkflows:
    """A workflow class the engine runs in the host: the engine's own step client applies the
    step mocks."""

    @pytest.fixture
    def dynwf_project(self, tmp_path):
        return write_in_process(tmp_path / "plain")

    @pytest.fixture
    def dynwf_options(self):
        return {"time_skipping": False}

    async def test_modifiers_apply_in_process(self, dynwf):
        assert not dynwf.time_skipping       # from the dynwf_options fixture
        binding = dynwf.binding()
        async with introspect_instance(binding, "p1") as p1:
            async def modify(m):
                await m.mock_step_result("charge", {"charged": "mock"})
                await m.disable_sleeps()
            await p1.modify(modify)
            await binding.create({"id": "p1", "params": {"explode": True}})
            await p1.wait_for_status("complete")
            assert await p1.get_output() == {"charged": "mock"}

    async def test_mocked_errors_in_process(self, dynwf):
        dynwf.time_skipping = True
        p2 = await introspect_instance(dynwf.binding(), "p2")
        await p2.modify(lambda m: m.mock_step_error("charge", ValueError("no"), times=1))
        await dynwf.binding().create({"id": "p2"})
        assert await p2.wait_for_step_result("charge") == {"charged": True}
        assert step_row(p2, "charge")["attempts"] == 2

    async def test_a_project_without_tenants_has_no_tenant_ids(self, dynwf):
        assert dynwf.tenant_ids() == []


# ---- the hello example, tested through the plugin ----------------------------------------------

@pytest.mark.dynwf(project=str(HELLO))           # the tenants dynwf_tenant runs over
class TestHelloExample:
    @pytest.fixture
    def dynwf_project(self):                       # this module's own override points elsewhere
        return HELLO / "wrangler.jsonc"

    async def test_acme_order_ships_after_a_mocked_payment(self, dynwf):
        response = await dynwf.fetch("/", headers={"x-tenant-id": "acme"},
                                     json={"items": [{"price": 2.5, "quantity": 4}]})
        order = dynwf.introspect_instance("acme", (await response.json())["id"])
        await order.modify(lambda m: m.mock_event({"type": "payment-received",
                                                   "payload": {"amount": 10}}))
        assert await order.wait_for_step_result("quote") == {"total": 10.0, "units": 4}
        await order.wait_for_status("complete")
        assert await order.get_output() == {"total": 10.0, "units": 4, "paid": {"amount": 10},
                                            "shipment": {"carrier": "acme-post", "attempt": 1}}

    async def test_globex_activates_unconfirmed_when_the_email_never_comes(self, dynwf):
        async with dynwf.introspect_workflow("globex") as signups:
            await signups.modify_all(lambda m: m.force_event_timeout("confirm email"))
            await dynwf.fetch("/", headers={"x-tenant-id": "globex"}, json={"email": "ann@x.io"})
            [signup] = await signups.get()
            await signup.wait_for_status("complete")
            assert await signup.get_output() == {"account": "ann", "plan": "free", "active": True,
                                                 "confirmed": False}

    async def test_every_tenant_completes_with_its_events_supplied(self, dynwf_tenant):
        assert dynwf_tenant.id in tenant_ids(HELLO)
        run = await dynwf_tenant.run({"items": [{"price": 1}], "email": "a@b.c"},
                                     events={"payment-received": {"ok": True},
                                             "email-confirmed": {"email": True}})
        assert run.status == "complete", run.error


# ---- the plugin's wiring -----------------------------------------------------------------------

def test_the_plugin_is_registered_as_a_pytest11_entry_point():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["pytest11"] == {"dynwf": "dynwf_pytest.plugin"}
    assert "dynwf_pytest" in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    installed = [ep for ep in metadata.entry_points(group="pytest11") if ep.name == "dynwf"]
    assert [ep.value for ep in installed] == ["dynwf_pytest.plugin"]


NESTED_TESTS = '''
import asyncio
import pytest

async def test_runs(dynwf_tenant):
    run = await dynwf_tenant.run({}, events={"approved": {"by": "ci"}})
    assert run.status == "complete"

async def test_reports_the_platforms_text(dynwf):
    tenant = dynwf.tenant("steps")
    instance = tenant.introspect_instance("o1")
    await tenant.binding.create({"id": "o1", "params": {"explode": True}})
    await instance.wait_for_status("complete")

@pytest.mark.dynwf(isolation="sideways")
def test_bad_isolation(dynwf):
    pass

@pytest.mark.dynwf(timeout=0.2)
async def test_hangs(dynwf):
    await asyncio.Event().wait()

async def test_without_the_emulator():
    pass

@pytest.mark.parametrize("dynwf_tenant", ["steps"], indirect=True)
def test_one_tenant_by_hand(dynwf, dynwf_tenant):
    assert dynwf.run(dynwf_tenant.run({})).status == "complete"
'''


def test_a_project_at_the_rootdir_is_found_and_its_tenants_parametrize_tests(pytester):
    write_lab(pytester.path)
    pytester.makepyfile(test_nested_lab=NESTED_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=3, failed=3, errors=1)
    result.stdout.fnmatch_lines(["*test_nested_lab.py::test_runs?events? PASSED*",
                                 "*test_nested_lab.py::test_runs?steps? PASSED*"])
    expected = finite_status_text("o1", "errored", "complete")
    result.stdout.re_match_lines([".*" + re.escape(expected)])
    result.stdout.fnmatch_lines(["*isolation must be 'process' or 'inline', not 'sideways'*"])
    result.stdout.fnmatch_lines(["*did not finish within 0.2 s of real time*"])
    # an async test without the emulator is left to other plugins (here: none, so it fails)
    result.stdout.fnmatch_lines(["*async def functions are not natively supported*"])


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Testing your workflows"):]
    return section[section.index("```python") + len("```python"):section.index("```\n\n")]


def test_the_readme_example_passes_with_the_project_named_in_the_ini_file(pytester):
    shutil.copytree(HELLO, pytester.path / "projects" / "hello",
                    ignore=shutil.ignore_patterns(".dynwf", "__pycache__"))
    pytester.makeini("[pytest]\ndynwf_project = projects/hello\ndynwf_isolation = inline\n")
    pytester.makepyfile(test_nested_readme=readme_example(), test_nested_ini='''
        async def test_inline(dynwf):
            assert dynwf.host.pool.isolation == "inline"
            assert dynwf.config.name == "hello-dynamic-workflows"
    ''')
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_without_a_project_the_fixtures_say_how_to_name_one(pytester):
    pytester.makepyfile(test_nested_no_project='''
        def test_needs_project(dynwf):
            pass

        def test_needs_tenant(dynwf_tenant):
            pass
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*no wrangler.jsonc, wrangler.json or wrangler.toml in*",
                                 "*set the dynwf_project ini option*"])


def test_step_results_in_json_form_survive_the_isolate_boundary():
    """The step mocks' wire form is plain JSON (what the isolate's init dict carries)."""
    from emulator.engine.modifiers import InstanceModifiers, StepMocks
    state = InstanceModifiers(None, None)
    state.mock_step_error("a", ValueError("x"), times=2)
    state.force_step_timeout({"name": "a"}, times=1)
    state.mock_step_result({"name": "b", "index": 3}, {"ok": [1, 2]})
    wire = json.loads(json.dumps(state.steps.to_wire()))
    mocks = StepMocks.from_wire(wire)
    assert [mocks.outcome("a", 1, n) for n in (1, 2, 3, 4)] == [
        ("error", {"name": "ValueError", "message": "x"}),
        ("error", {"name": "ValueError", "message": "x"}), ("timeout", None), None]
    assert mocks.outcome("b", 3, 1) == ("result", {"ok": [1, 2]})
    assert mocks.outcome("b", 1, 1) is None

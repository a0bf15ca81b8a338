"""Rollbacks (docs/semantics.md §2.12, "Rollbacks"): compensation handlers registered by ``step.do``
run after the instance fails, or on ``terminate(rollback=True)``, latest-started first, each a
durable step of kind ``rollback`` with its own retries; the status record gains ``rollback``.
With real SQLite, in the engine's process and in a tenant's isolate, and through the CLI."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from dynwf_cli.app import app
from dynwf_cli.checklist import Checklist
from dynwf_cli.console import THEME
from emulator.project import open_project
from emulator.runner import RunOptions, RunSession
from tests.engine_harness import Harness, arun

SHORT_RETRIES = {"retries": {"limit": 2, "delay": "1 second", "backoff": "constant"}}


def saga(calls: list, *, fail_in: str | None = None, end: str = "raise"):
    """Three steps with handlers (reserve, charge, ship); ``fail_in`` names a step whose body
    fails for good; ``end``: "raise" after the steps, or "sleep" (wait a day, then return)."""
    def doer(name):
        async def do():
            if name == fail_in:
                raise RuntimeError(f"{name} refused")
            return f"{name}-out"
        return do

    def undoer(name):
        async def undo(ctx, output, error):
            calls.append((name, output, error, ctx["step"]))
        return undo

    async def run(event, step):
        for name in ("reserve", "charge", "ship"):
            body = step.do(name, config={"retries": {"limit": 0, "delay": 0}})(doer(name))

            body.rollback(undoer(name))
            await body()
        if end == "sleep":
            await step.sleep("a day", "1 day")
            return "done"
        raise ValueError("card declined")
    return run


def test_handlers_run_latest_started_first_each_a_durable_step(tmp_path):
    """docs/semantics.md, "Rollbacks": reverse step-start order; ctx, output, error by name."""
    calls: list = []

    async def main():
        h = Harness(tmp_path / "db.sqlite", saga(calls))
        await h.create()
        await h.engine.drain()
        return await h.status(), h.step_keys(), [h.step("rollback", n).status
                                                  for n in ("ship", "charge", "reserve")]
    status, keys, rollback_statuses = arun(main())
    assert status == {"status": "errored", "error": {"name": "ValueError", "message": "card declined"},
                      "output": None, "rollback": {"outcome": "complete", "error": None}}
    declined = {"name": "ValueError", "message": "card declined"}
    assert calls == [("ship", "ship-out", declined, {"name": "ship", "count": 1}),
                     ("charge", "charge-out", declined, {"name": "charge", "count": 1}),
                     ("reserve", "reserve-out", declined, {"name": "reserve", "count": 1})]
    assert keys[3:] == [("rollback", "ship", 1), ("rollback", "charge", 1),
                        ("rollback", "reserve", 1)]
    assert rollback_statuses == ["done", "done", "done"]


def test_a_failed_step_with_a_handler_rolls_back_with_output_none(tmp_path):
    """docs/semantics.md, "Rollbacks": the failing step's own handler runs first, output None."""
    calls: list = []

    async def main():
        h = Harness(tmp_path / "db.sqlite", saga(calls, fail_in="charge"))
        await h.create()
        await h.engine.drain()
        return await h.status()
    status = arun(main())
    refused = {"name": "RuntimeError", "message": "charge refused"}
    assert status["status"] == "errored" and status["error"] == refused
    assert status["rollback"] == {"outcome": "complete", "error": None}
    assert [(name, output, error) for name, output, error, _ctx in calls] == [
        ("charge", None, refused), ("reserve", "reserve-out", refused)]


def test_a_handler_retries_per_its_config_then_the_phase_fails_with_its_error_and_stops(tmp_path):
    """docs/semantics.md, "Rollbacks": rollback_config's retries; the first handler that fails
    for good ends the phase, "failed" with its error; earlier-started steps are not undone."""
    attempts: list[int] = []
    undone: list[str] = []

    async def run(event, step):
        @step.do("reserve")
        async def reserve():
            return 1

        @reserve.rollback
        async def release():
            undone.append("reserve")

        @step.do("charge", rollback_config=SHORT_RETRIES,
                 rollback=lambda ctx: refund_attempt(ctx))
        async def charge():
            return 2
        await reserve()
        await charge()
        raise ValueError("boom")

    async def refund_attempt(ctx):
        attempts.append(ctx["attempt"])
        raise ConnectionError("payment API down")

    async def main():
        h = Harness(tmp_path / "db.sqlite", run)
        await h.create()
        await h.engine.drain()          # skips each back-off (fast-forward)
        row = h.step("rollback", "charge")
        return await h.status(), (row.status, row.attempts, json.loads(row.config)), \
            h.step("rollback", "reserve")
    status, (state, tries, config), reserve_row = arun(main())
    assert status["status"] == "errored" and status["error"] == {"name": "ValueError", "message": "boom"}
    assert status["rollback"] == {"outcome": "failed",
                                  "error": {"name": "ConnectionError", "message": "payment API down"}}
    assert (state, tries) == ("failed", 3)
    assert config["retries"] == {"limit": 2, "delay": 1000, "backoff": "constant"}
    assert attempts == [1, 1, 1]            # ctx is the undone step's, not the handler's attempt
    assert undone == [] and reserve_row is None


def test_no_handler_no_rollback_key_and_success_runs_none(tmp_path):
    """docs/semantics.md, "Rollbacks": status() keeps its three keys until a phase begins."""
    calls: list = []

    async def plain(event, step):
        @step.do("only")
        async def only():
            return 1
        await only()
        raise ValueError("no handlers")

    async def main():
        a = Harness(tmp_path / "a.sqlite", plain)
        await a.create()
        await a.engine.drain()
        b = Harness(tmp_path / "b.sqlite", saga(calls, end="sleep"))
        await b.create()
        await b.engine.drain()
        return await a.status(), await b.status(), b.step_keys()
    errored, complete, keys = arun(main())
    assert errored == {"status": "errored", "error": {"name": "ValueError", "message": "no handlers"},
                       "output": None}
    assert complete == {"status": "complete", "error": None, "output": "done"}
    assert calls == [] and all(kind != "rollback" for kind, _name, _count in keys)


@pytest.mark.parametrize("form", ["keyword", "options"])
def test_terminate_with_rollback_runs_the_handlers_then_terminates(tmp_path, form):
    """docs/semantics.md, "Rollbacks": terminate(rollback=True) or terminate({"rollback": True});
    the handlers get error None; the instance ends terminated."""
    calls: list = []

    async def main():
        h = Harness(tmp_path / "db.sqlite", saga(calls, end="sleep"))
        instance = await h.create()
        await h.engine.drain(jump=False)            # asleep for a day
        asleep = await h.status()
        if form == "keyword":
            await instance.terminate(rollback=True)
        else:
            await instance.terminate({"rollback": True})
        queued = await h.status()
        await h.engine.drain(jump=False)
        return asleep, queued, await h.status(), h.timers()
    asleep, queued, final, timers = arun(main())
    assert asleep == {"status": "waiting", "error": None, "output": None}
    assert queued == {"status": "queued", "error": None, "output": None, "rollback": None}
    assert final == {"status": "terminated", "error": None, "output": None,
                     "rollback": {"outcome": "complete", "error": None}}
    assert [(name, output, error) for name, output, error, _ctx in calls] == [
        ("ship", "ship-out", None), ("charge", "charge-out", None), ("reserve", "reserve-out", None)]
    assert timers == []


def test_terminate_with_rollback_and_no_handler_is_a_plain_terminate(tmp_path):
    async def sleeper(event, step):
        await step.sleep("nap", "1 hour")

    async def main():
        h = Harness(tmp_path / "db.sqlite", sleeper)
        instance = await h.create()
        await h.engine.drain(jump=False)
        await instance.terminate(rollback=True)
        return await h.status()
    assert arun(main()) == {"status": "terminated", "error": None, "output": None}


def test_terminate_options_and_rollback_config_are_checked(tmp_path):
    """docs/semantics.md, "Rollbacks": rollback_config takes retries and timeout only."""
    async def run(event, step):
        @step.do("charge", rollback=lambda: None, rollback_config={"sensitive": "output"})
        async def charge():
            return 1
        await charge()

    async def main():
        h = Harness(tmp_path / "db.sqlite", run)
        instance = await h.create()
        refusals = []
        for options, keyword in (({"rollback": "yes"}, None), ({"from": 1}, None), ("x", None)):
            try:
                await instance.terminate(options, rollback=keyword)
            except Exception as exc:  # noqa: BLE001 - the refusal is what is asserted
                refusals.append(str(exc))
        await h.engine.drain()
        return refusals, await h.status()
    refusals, status = arun(main())
    assert "rollback must be True or False" in refusals[0]
    assert "unknown key(s): from (allowed: rollback)" in refusals[1]
    assert "must be a dict" in refusals[2]
    assert status["status"] == "errored" and "rollback" not in status
    assert status["error"]["message"].startswith(
        "Rollback config for \"charge\" is invalid: unknown key 'sensitive' (allowed: retries, timeout)")


def test_a_handler_may_take_only_ctx_output_and_error():
    from emulator.sdk.rollbacks import RollbackHandler
    with pytest.raises(TypeError, match="may take only ctx, output, error"):
        RollbackHandler(lambda result: None)
    RollbackHandler(lambda: None)
    RollbackHandler(lambda error, ctx: None)


def test_the_checklist_lists_rollback_steps_after_the_steps(tmp_path):
    calls: list = []

    async def main():
        h = Harness(tmp_path / "db.sqlite", saga(calls, fail_in="ship"))
        await h.create()
        await h.engine.drain()
        return h.progress
    checklist = Checklist(instance_id="i1")
    for event in arun(main()):
        checklist.apply(event)
    out = io.StringIO()
    Console(file=out, width=80, color_system=None, theme=THEME).print(checklist.render())
    lines = [line.strip() for line in out.getvalue().splitlines()]
    rollback_rows = [line for line in lines if "↶ rollback" in line]
    assert [row.split("↶ rollback ")[1].split()[0] for row in rollback_rows] == \
        ["ship", "charge", "reserve"]
    assert all(row.startswith("✓") for row in rollback_rows)
    first_rollback = next(i for i, line in enumerate(lines) if "↶ rollback" in line)
    assert all("↶" not in line for line in lines[:first_rollback]) and \
        any(line.startswith("✗") and " ship " in line for line in lines[:first_rollback])
    assert any("ship refused" in line and "rollback complete" in line for line in lines)


# ---- in a tenant's isolate, and through the CLI ---------------------------------------------------

TENANT = '''
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("reserve")
        async def reserve():
            return "r-1"

        @reserve.rollback
        async def release(output, error):
            print("release", output, error and error["message"])

        @step.do("charge")
        async def charge():
            return 42

        @charge.rollback(config={"retries": {"limit": 0, "delay": 0}})
        async def refund(ctx, output):
            print("refund", output, ctx["step"]["name"])

        await reserve()
        await charge()
        if event["payload"].get("sleep"):
            await step.sleep("settle", "1 day")
            return "settled"
        raise ValueError("card declined")
'''


def _project(tmp_path):
    assert CliRunner().invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    (root / "tenants" / "saga").mkdir()
    (root / "tenants" / "saga" / "index.py").write_text(TENANT)
    return root


@pytest.mark.parametrize("isolation", ["process", "inline"])
def test_handlers_run_where_the_code_runs_and_describe_shows_them(tmp_path, isolation):
    """docs/semantics.md, "Rollbacks": the handlers are the tenant's code, run in its isolate
    over the step wire; describe (text and --json) lists the rollback steps and the phase."""
    root = _project(tmp_path)
    project = open_project(root / "wrangler.jsonc", None)

    async def scenario():
        async with RunSession(project, RunOptions(tenant="saga", params={},
                                                  isolation=isolation)) as session:
            await session.create()
            result = await asyncio.wait_for(session.drive(), 60)
            store = session.host.engine.store
            logs = [(line["step"], line["message"]) for line in store.list_logs(session.instance_id)]
            return result, session.instance_id, logs
    result, instance_id, logs = asyncio.run(scenario())
    assert (result.status, result.error) == ("errored", {"name": "ValueError",
                                                         "message": "card declined"})
    if isolation == "process":   # inline, print() goes to the terminal, not the step's log
        assert logs == [(("rollback", "charge", 1), "refund 42 charge"),
                        (("rollback", "reserve", 1), "release r-1 card declined")]

    runner = CliRunner()
    args = ["instances", "describe", instance_id, "--config", str(root / "wrangler.jsonc")]
    info = json.loads(runner.invoke(app, [*args, "--json"]).output)
    assert info["rollback"] == {"outcome": "complete", "error": None}
    assert [(s["kind"], s["name"], s["status"], s["has_rollback"]) for s in info["steps"]] == [
        ("do", "reserve", "done", True), ("do", "charge", "done", True),
        ("rollback", "charge", "done", False), ("rollback", "reserve", "done", False)]
    text = runner.invoke(app, args).output
    assert "↶ charge" in text and "↶ reserve" in text
    assert "complete: every handler ran" in text


def test_cli_terminate_rollback_wait_with_no_engine_runs_the_handlers_here(tmp_path):
    """docs/semantics.md, "Rollbacks": with no engine running, ``terminate --rollback --wait``
    does not wait on nothing: it runs the tenant's handlers here, as ``dynwf run --resume``
    would, and says how the phase ended (exit 0: every handler ran)."""
    root = _project(tmp_path)
    project = open_project(root / "wrangler.jsonc", None)

    async def asleep() -> str:
        async with RunSession(project, RunOptions(tenant="saga", params={"sleep": True},
                                                  isolation="process")) as session:
            await session.create()
            await asyncio.wait_for(session.host.engine.drain(jump=False), 60)   # a day's sleep
            return session.instance_id
    instance_id = asyncio.run(asleep())
    out = CliRunner().invoke(app, ["instances", "terminate", instance_id, "--rollback", "--wait",
                                   "--timeout", "60", "--config", str(root / "wrangler.jsonc")])
    assert out.exit_code == 0, out.output
    assert "running it here" in out.output and "rollback: complete" in out.output, out.output
    info = json.loads(CliRunner().invoke(app, ["instances", "describe", instance_id, "--json",
                                               "--config", str(root / "wrangler.jsonc")]).output)
    assert info["status"] == "terminated"
    assert info["rollback"] == {"outcome": "complete", "error": None}
    assert [(s["kind"], s["name"], s["status"]) for s in info["steps"]
            if s["kind"] == "rollback"] == [("rollback", "charge", "done"),
                                            ("rollback", "reserve", "done")]


@pytest.mark.parametrize("wait", [False, True])
def test_cli_terminate_rollback_with_a_running_engine(tmp_path, wait):
    """docs/semantics.md, "Rollbacks": ``dynwf instances terminate ID --rollback`` queues the
    phase; the engine runs the tenant's handlers and ends the instance terminated; ``--wait``
    waits for that and says how the phase ended."""
    root = _project(tmp_path)
    project = open_project(root / "wrangler.jsonc", None)
    runner = CliRunner()
    help_text = runner.invoke(app, ["instances", "terminate", "--help"]).output
    assert "--rollback" in help_text and "dynwf instances terminate order-1" in help_text

    async def scenario():
        async with RunSession(project, RunOptions(tenant="saga", params={"sleep": True},
                                                  isolation="process")) as session:
            await session.create()
            engine = session.host.engine
            await asyncio.wait_for(engine.drain(jump=False), 60)   # asleep for a day
            asleep = engine.control.status(session.instance_id)

            async def engine_at_work() -> None:
                deadline = asyncio.get_running_loop().time() + 60
                while engine.control.status(session.instance_id)["status"] != "terminated":
                    assert asyncio.get_running_loop().time() < deadline, "the phase never ended"
                    await engine.drain(jump=False)
                    await asyncio.sleep(0.05)    # the CLI writes from another connection: a poll
            args = ["instances", "terminate", session.instance_id, "--rollback",
                    "--config", str(root / "wrangler.jsonc")]
            if wait:
                working = asyncio.ensure_future(engine_at_work())
                out = await asyncio.to_thread(runner.invoke, app, [*args, "--wait",
                                                                   "--timeout", "60"])
                await working
            else:
                out = await asyncio.to_thread(runner.invoke, app, [*args, "--json"])
                await engine_at_work()
            return asleep, out, engine.control.status(session.instance_id), \
                [line["message"] for line in engine.store.list_logs(session.instance_id)]
    asleep, out, final, logs = asyncio.run(scenario())
    assert asleep["status"] == "waiting"
    assert out.exit_code == 0, out.output
    if wait:
        assert "rolling back, then terminating" in out.output
        assert "now" in out.output and "(status terminated)" in out.output
        assert "rollback: complete" in out.output
    else:
        assert json.loads(out.output)["rollback"] == "pending"
    assert final == {"status": "terminated", "error": None, "output": None,
                     "rollback": {"outcome": "complete", "error": None}}
    assert logs == ["refund 42 charge", "release r-1 None"]     # error is None on terminate


# ---- a real engine process killed in the middle of the rollback phase -----------------------------

def test_a_handler_that_ended_never_runs_again_after_the_engine_is_killed(tmp_path):
    """docs/semantics.md, "Rollbacks": each handler's run is a durable step; an engine SIGKILLed
    in the middle of the phase leaves the handlers that ended committed, and the next engine
    (after the lease expires) runs only the rest, the cut-off attempt counting as failed."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from emulator.engine import Control, Store, SystemClock
    from proc_workflows import wait_until

    db, log = tmp_path / "engine.db", tmp_path / "handlers.log"
    env = dict(os.environ, DYNWF_TEST_LOG=str(log))
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parent.parent)]
                                        + [p for p in [os.environ.get("PYTHONPATH")] if p])

    def worker(owner: str) -> subprocess.Popen:
        out = open(tmp_path / f"{owner}.out", "wb")
        return subprocess.Popen(
            [sys.executable, "-m", "emulator.engine.worker", "--db", str(db), "--workflows",
             "rollback_workflows:WORKFLOWS", "--owner", owner, "--lease-ms", "500",
             "--poll-ms", "50"], stdout=out, stderr=subprocess.STDOUT, env=env)

    def handler_lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    store = Store(db)
    try:
        control = Control(store, SystemClock())
        control.create("saga", {"id": "order-1"})
        first = worker("first")
        try:
            # killed once the handler's attempt start is committed (docs/semantics.md §4.4: a
            # kill inside the 2 ms before it is leaves no trace of the attempt)
            assert wait_until(lambda: "START reserve" in handler_lines() and getattr(
                store.get_step("order-1", ("rollback", "reserve", 1)), "status", None)
                == "running", 60), (tmp_path / "first.out").read_text()
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        killed_at = handler_lines()
        second = worker("second")
        try:
            assert wait_until(lambda: control.status("order-1")["status"] == "errored", 60), \
                (tmp_path / "second.out").read_text()
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
        status = control.status("order-1")
        reserve = store.get_step("order-1", ("rollback", "reserve", 1))
        attempts = store.list_attempts("order-1").get(("rollback", "reserve", 1), [])
    finally:
        store.close()
    assert killed_at == ["START ship", "DONE ship ship-out", "START charge", "DONE charge charge-out",
                         "START reserve"]
    assert handler_lines() == killed_at + ["START reserve", "DONE reserve reserve-out"]
    assert status == {"status": "errored", "error": {"name": "ValueError", "message": "card declined"},
                      "output": None, "rollback": {"outcome": "complete", "error": None}}
    assert (reserve.status, reserve.attempts) == ("done", 2)
    assert [a["attempt"] for a in attempts] == [1]     # the attempt the kill cut off


# ---- the dashboard --------------------------------------------------------------------------------

def test_the_dashboard_terminates_with_rollback_and_lists_the_rollback_steps(tmp_path, servers):
    """docs/semantics.md §2.12 ("Where it shows"): the instance page offers terminate +
    rollback, asks first, then lists each handler's run and the phase's outcome (headless
    Chromium, as tests/test_dashboard.py drives it)."""
    from pathlib import Path

    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium")
    from dev_harness import copy_hello, start
    from test_admin_api import API, call, token_of
    from test_dashboard import CHROMIUM_ARGS

    expect = sync_api.expect
    project = copy_hello(tmp_path)
    (project / "tenants" / "saga").mkdir()
    (project / "tenants" / "saga" / "index.py").write_text(TENANT)
    dev = start(servers, project)
    created = call(dev, "POST", f"{API}/instances",
                   {"tenant": "saga", "id": "saga-1", "params": {"sleep": True}},
                   token=token_of(project))
    assert created[0] == 201, created
    # the admin API reads the body strictly: refused before anything is written
    for body, fragment in (({"rollback": "yes"}, "'rollback' as true or false"),
                           ({"rollback": True, "from": 1}, "from")):
        refused = call(dev, "POST", f"{API}/instances/saga-1/terminate", body,
                       token=token_of(project))
        assert refused[0] == 400 and fragment in refused[1]["error"]["message"], refused
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(dev.url + "/__dynwf/#/instances/saga-1")
            expect(page.locator("#instance-status")).to_have_text("waiting", timeout=30_000)
            expect(page.locator("#instance-rollback")).to_have_count(0)
            page.click('[data-action="terminate-rollback"]')
            expect(page.locator("#confirm")).to_contain_text("rollback handlers")
            page.click("#confirm-yes")
            expect(page.locator("#instance-status")).to_have_text("terminated", timeout=30_000)
            expect(page.locator("#instance-rollback")).to_have_text("complete: every handler ran")
            rows = page.locator('#checklist > li.step[data-kind="rollback"]')
            expect(rows).to_have_count(2)
            assert rows.evaluate_all("rows => rows.map(r => [r.dataset.step, r.dataset.state])") \
                == [["↶ rollback charge", "done"], ["↶ rollback reserve", "done"]]
            expect(page.locator('[data-action="terminate-rollback"]')).to_be_disabled()
        finally:
            browser.close()


def test_dynwf_check_reads_a_literal_rollback_config():
    """docs/semantics.md §2.12: rollback_config takes only retries and timeout, checked as a
    step's config is, before anything runs."""
    from emulator.analysis.lint import lint_tenant_source
    source = '''
class TenantWorkflow:
    async def run(self, event, step):
        @step.do("charge", rollback=lambda: None,
                 rollback_config={"sensitive": "output", "timeout": 0})
        async def charge():
            return 1

        @step.do("fine", rollback=lambda: None, rollback_config={"retries": {"limit": 1, "delay": 0}})
        async def fine():
            return 1
'''
    found = [(d.code, d.line, d.message) for d in lint_tenant_source(source, "index.py")]
    assert found == [
        ("DW305", 5, "rollback config for \"charge\" is invalid: unknown key 'sensitive' "
                     "(allowed: retries, timeout)"),
        ("DW305", 5, 'rollback config for "charge" is invalid: timeout must not be 0')]


@pytest.mark.parametrize("form", ["keyword", "options"])
def test_a_tenant_terminates_its_own_instance_with_rollback_through_its_wrapped_binding(
        tmp_path, form):
    """docs/semantics.md §2.12 ("Where dynwf chooses"): the wrapped binding passes rollback on."""
    from emulator.runtime.dynamic_workflows import _dispatcher_binding_impl
    calls: list = []

    async def main():
        h = Harness(tmp_path / "db.sqlite", saga(calls, end="sleep"))
        tenant = _dispatcher_binding_impl(lambda: h.engine.binding("wf"), {"tenantId": "acme"})
        stub = await tenant.create({"id": "order-1", "params": {}})
        await h.engine.drain(jump=False)
        if form == "keyword":
            await stub.terminate(rollback=True)
        else:
            await stub.terminate({"rollback": True})
        await h.engine.drain(jump=False)
        return await stub.status()
    status = arun(main())
    assert status == {"status": "terminated", "error": None, "output": None,
                      "rollback": {"outcome": "complete", "error": None}}
    assert [name for name, *_rest in calls] == ["ship", "charge", "reserve"]


HOSTILE_IN_PHASE = '''
import json
from workers import WorkflowEntrypoint

CONFIG = json.dumps({"retries": {"limit": 5, "delay": 10000, "backoff": "exponential"},
                     "timeout": 600000})


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        async def attack_then_refund(output):
            stub = step._client.backend._stub     # past the step client, in the rollback phase
            attacks = {
                "more retries than recorded": lambda: stub.begin(["rollback", "charge", 1], 1, CONFIG),
                "a step without a handler": lambda: stub.begin(["rollback", "plain", 1], 1, CONFIG),
                "a new do step": lambda: stub.begin(["do", "new", 1], 1, CONFIG),
            }
            for name, attack in attacks.items():
                try:
                    await attack()
                    print(name, "| allowed")
                except Exception as exc:
                    print(name, "|", type(exc).__name__, str(exc))
            print("refund", output)

        @step.do("plain")
        async def plain():
            return 1

        @step.do("charge", rollback_config={"retries": {"limit": 0, "delay": 0}})
        async def charge():
            return 2

        charge.rollback(attack_then_refund)

        await plain()
        await charge()
        raise ValueError("boom")
'''


def test_an_isolate_in_a_rollback_phase_cannot_go_past_what_the_store_recorded(tmp_path):
    """docs/semantics.md §2.12 ("How it runs"): in a rollback phase the host takes a handler's
    attempt only for a step that registered one, under the config recorded for it, and starts
    no new step; the refusals come back as errors and nothing is written."""
    assert CliRunner().invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    (root / "tenants" / "raw").mkdir()
    (root / "tenants" / "raw" / "index.py").write_text(HOSTILE_IN_PHASE)
    project = open_project(root / "wrangler.jsonc", None)

    async def scenario():
        async with RunSession(project, RunOptions(tenant="raw", params={},
                                                  isolation="process")) as session:
            await session.create()
            result = await asyncio.wait_for(session.drive(), 60)
            store = session.host.engine.store
            return result, [line["message"] for line in store.list_logs(session.instance_id)], \
                [(s.kind, s.name, s.status) for s in store.list_steps(session.instance_id)], \
                session.host.engine.control.status(session.instance_id)
    result, logs, steps, status = asyncio.run(scenario())
    assert result.status == "errored", (result, steps, logs)
    refused = "StepCallError [step.invalid_call]"
    assert logs[:3] == [
        f'more retries than recorded | {refused} rollback of "charge": its config is not the '
        "one recorded for the handler",
        f"a step without a handler | {refused} rollback of \"plain\": step.do 'plain' "
        "(occurrence 1) registered no rollback handler",
        f'a new do step | {refused} step.do "new" cannot start during a rollback phase']
    assert logs[3:] == ["refund 2"]
    assert steps == [("do", "plain", "done"), ("do", "charge", "done"),
                     ("rollback", "charge", "done")]
    assert status["rollback"] == {"outcome": "complete", "error": None}


def test_a_rerun_keeps_the_handlers_of_the_steps_it_copies(tmp_path):
    """docs/semantics.md §2.12 and §4.10: a rerun from a step copies the steps before it with
    the handlers they registered, so when the rerun fails the copied steps roll back too, with
    their recorded outputs, though their bodies never ran in it."""
    from emulator.engine.control import RestartFrom
    calls: list = []

    async def main():
        h = Harness(tmp_path / "db.sqlite", saga(calls, fail_in="ship"))
        await h.create()
        await h.engine.drain()
        calls.clear()
        key = h.engine.control.rerun("i1", RestartFrom("ship"), new_id="again")
        await h.engine.drain()
        return h.engine.control.status(key)
    status = arun(main())
    assert status["status"] == "errored"
    assert status["rollback"] == {"outcome": "complete", "error": None}
    assert [(name, output) for name, output, _error, _ctx in calls] == [
        ("ship", None), ("charge", "charge-out"), ("reserve", "reserve-out")]


def test_a_history_file_keeps_rollback_steps_and_handlers(tmp_path):
    """docs/semantics.md §2.12 and §4.10: an exported history holds the rollback steps and each
    step's handler config; imported elsewhere, the rows read back the same, and a handler config
    with another key is refused before anything is written."""
    from emulator.engine.history import encode, import_history_txn, parse_history, read_history
    from emulator.engine.store import Store

    async def main():
        h = Harness(tmp_path / "db.sqlite", saga([]))
        await h.create()
        await h.engine.drain()
        return encode(read_history(h.engine.store, "i1"))
    text = arun(main())
    data = json.loads(text)
    assert [s["kind"] for s in data["steps"]].count("rollback") == 3
    assert all(s["rollback"] is not None for s in data["steps"] if s["kind"] == "do")
    other = Store(tmp_path / "other.sqlite")
    with other.write():
        key = import_history_txn(other, parse_history(text), 0)
    original = Store(tmp_path / "db.sqlite")
    assert [(s.key, s.status, s.rollback) for s in other.list_steps(key)] == \
        [(s.key, s.status, s.rollback) for s in original.list_steps("i1")]
    data["steps"][0]["rollback"] = {**data["steps"][0]["rollback"], "sensitive": "output"}
    with pytest.raises(Exception, match="takes only 'retries' and 'timeout'"):
        parse_history(json.dumps(data))

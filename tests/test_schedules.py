"""Cron ``schedules`` (docs/semantics.md §1.8): the platform's cron dialect, the config's checks and
``dynwf check``'s DW104, and the scheduler of ``dynwf dev`` on real SQLite with a virtual clock
(one instance per firing, across processes and restarts; no back-fill; fast-forward fires
nothing), run by the dev app itself; its next firings over the admin API, in the banner, and on
the dashboard in Chromium.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dev_harness import start
from dynwf_cli.app import app
from emulator.clock import VirtualClock
from emulator.config import load_config
from emulator.engine.scheduler import Firing, firing_id, schedules_of
from emulator.errors import ConfigError, InvalidScheduleError
from emulator.host import HostOptions, ProjectHost
from emulator.rules.cron import MAX_CRON_CHARS, CronError, parse_cron
from emulator.server import create_app
from test_admin_api import API, call
from test_dashboard import CHROMIUM, CHROMIUM_ARGS
from test_fuzz_admin_api import AppClient

runner = CliRunner()
UTC = timezone.utc
MINUTE = 60_000


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)


DISPATCHER = '''\
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint


class Report(WorkflowEntrypoint):
    async def run(self, event, step):
        if event["payload"].get("nap"):
            await step.sleep("nap", "1 day")

        @step.do("report")
        async def report():
            return {"payload": event["payload"], "instance": event["instanceId"]}

        return await report()


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return Response("ok")
'''


def write_project(root: Path, schedules: object = ("*/5 * * * *", "0 * * * *")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "src").mkdir(exist_ok=True)
    (root / "src" / "entry.py").write_text(DISPATCHER)
    config = {"name": "cron-lab", "main": "src/entry.py", "compatibility_date": "2026-04-01",
              "workflows": [{"name": "reports", "binding": "REPORTS", "class_name": "Report",
                             "schedules": list(schedules) if isinstance(schedules, tuple)
                             else schedules}]}
    (root / "wrangler.jsonc").write_text(json.dumps(config, indent=2))
    return root


# ---- the platform's cron dialect --------------------------------------------------------------

@pytest.mark.parametrize("expression, after, expected", [
    ("*/5 * * * *", ms(2026, 1, 1, 0, 4), [ms(2026, 1, 1, 0, 5), ms(2026, 1, 1, 0, 10)]),
    # weekdays count 1-7 from Sunday, as on the platform: 1 is Sunday, 2-6 Monday to Friday
    ("0 17 * * 1", ms(2026, 1, 1), [ms(2026, 1, 4, 17), ms(2026, 1, 11, 17)]),
    ("0 17 * * sun", ms(2026, 1, 1), [ms(2026, 1, 4, 17), ms(2026, 1, 11, 17)]),
    ("10 7 * * 2-6", ms(2026, 1, 2, 8), [ms(2026, 1, 5, 7, 10), ms(2026, 1, 6, 7, 10)]),
    # last Friday of the month, the second Monday, the last weekday
    ("0 18 * * 6L", ms(2026, 1, 1), [ms(2026, 1, 30, 18), ms(2026, 2, 27, 18)]),
    ("0 10 * * MON#2", ms(2026, 1, 1), [ms(2026, 1, 12, 10), ms(2026, 2, 9, 10)]),
    ("59 23 LW * *", ms(2026, 1, 1), [ms(2026, 1, 30, 23, 59), ms(2026, 2, 27, 23, 59)]),
    # ranges that wrap
    ("0 22-1 * * *", ms(2026, 1, 1, 12), [ms(2026, 1, 1, 22), ms(2026, 1, 1, 23),
                                          ms(2026, 1, 2, 0), ms(2026, 1, 2, 1)]),
    ("0 0 * * FRI-SUN", ms(2026, 1, 1), [ms(2026, 1, 2), ms(2026, 1, 3), ms(2026, 1, 4)]),
    # day of month and weekday both restricted: either fires (a step is a restriction too)
    ("0 0 */10 * 3", ms(2026, 1, 1, 1), [ms(2026, 1, 6), ms(2026, 1, 11), ms(2026, 1, 13)]),
    # UTC all year: the night Europe moves its clocks changes nothing
    ("30 1 * * *", ms(2026, 3, 28, 12), [ms(2026, 3, 29, 1, 30), ms(2026, 3, 30, 1, 30)]),
])
def test_firing_times_follow_the_platforms_dialect(expression, after, expected):
    """§1.8: five fields in UTC, weekdays 1-7 from Sunday, L, LW, nL, n#k, wrapping ranges."""
    cron = parse_cron(expression)
    fired = cron.after(after)
    assert [next(fired) for _ in expected] == expected


@pytest.mark.parametrize("expression, problem", [
    ("* * * *", "it has 4 fields; a cron expression has 5"),
    ("* * * * * *", "it has 6 fields"),
    ("60 * * * *", "minute 60 is out of range: 0-59"),
    ("0 0 * * 0", "weekday 0 is out of range: 1-7 counted from Sunday"),
    ("0 0 ? * *", "'?' is not a day of month"),
    ("0 0 * FOO *", "'FOO' is not a month (write 1-12 or JAN-DEC)"),
    ("0 0 31 2 *", "it never fires"),
    ("0 0 15W * *", "not nW or L-n"),
    ("0 0 * * MON#6", "the week after # is 1 to 5"),
    ("*/0 * * * *", "the step after / in the minute is 1 to 59"),
    ("0 0 1,,2 * *", "empty item"),
    ("0 " * 200 + "*", f"the platform allows at most {MAX_CRON_CHARS}"),
])
def test_what_is_wrong_is_said(expression, problem):
    with pytest.raises(CronError) as caught:
        parse_cron(expression)
    assert problem in str(caught.value)


# ---- the config and dynwf check -----------------------------------------------------------------

def test_one_expression_or_a_list(tmp_path):
    one = load_config(write_project(tmp_path / "one", "*/5 * * * *") / "wrangler.jsonc")
    assert one.workflows[0].schedules == ("*/5 * * * *",)
    many = load_config(write_project(tmp_path / "many") / "wrangler.jsonc")
    assert many.workflows[0].schedules == ("*/5 * * * *", "0 * * * *")
    toml = tmp_path / "toml"
    write_project(toml)
    (toml / "wrangler.jsonc").unlink()
    (toml / "wrangler.toml").write_text(textwrap.dedent('''\
        name = "cron-lab"
        main = "src/entry.py"

        [[workflows]]
        name = "reports"
        binding = "REPORTS"
        class_name = "Report"
        schedules = ["0 9 * * MON-FRI"]
        '''))
    assert load_config(toml / "wrangler.toml").workflows[0].schedules == ("0 9 * * MON-FRI",)


def test_a_bad_expression_is_a_coded_error_naming_it_and_its_place(tmp_path):
    project = write_project(tmp_path / "bad", ["*/5 * * * *", "0 25 * * *"])
    with pytest.raises(InvalidScheduleError) as caught:
        load_config(project / "wrangler.jsonc")
    error = caught.value
    assert error.code == "config.invalid_schedule"
    assert 'workflows[0].schedules[1] "0 25 * * *"' in error.message
    assert "hour 25 is out of range: 0-23" in error.message
    assert error.line == 12 and "weekdays 1-7 from Sunday" in error.hint


def test_more_than_the_platforms_100_schedules_are_refused(tmp_path):
    project = write_project(tmp_path / "many", [f"{m % 60} {m // 60} * * *" for m in range(101)])
    with pytest.raises(InvalidScheduleError, match="101 schedules; the platform allows at most 100"):
        load_config(project / "wrangler.jsonc")


def test_schedules_must_be_text(tmp_path):
    project = write_project(tmp_path / "bad", 5)
    with pytest.raises(ConfigError, match="must be a cron expression or a list of them"):
        load_config(project / "wrangler.jsonc")


def test_dynwf_check_reports_dw104_and_dev_refuses_to_start(tmp_path):
    project = write_project(tmp_path / "bad", ["0 0 * * 0"])
    result = runner.invoke(app, ["check", "--config", str(project / "wrangler.jsonc"),
                                 "--format", "json"])
    assert result.exit_code == 1, result.output
    (finding,) = [d for d in json.loads(result.stdout) if d["code"] == "DW104"]
    assert '"0 0 * * 0"' in finding["message"] and "weekday 0 is out of range" in finding["message"]
    assert finding["file"].endswith("wrangler.jsonc") and finding["line"] == 11
    refused = runner.invoke(app, ["dev", "--config", str(project / "wrangler.jsonc"), "--port", "0"])
    # dev loads the config first: the coded error, with the expression and what is wrong
    assert refused.exit_code == 1, refused.output
    assert getattr(refused.exception, "code", None) == "config.invalid_schedule"
    assert '"0 0 * * 0"' in str(refused.exception)
    good = write_project(tmp_path / "good")
    assert runner.invoke(app, ["check", "--config", str(good / "wrangler.jsonc")]).exit_code == 0


# ---- the scheduler, on real SQLite and a virtual clock ------------------------------------------

def host_at(project: Path, start_ms: int, state: Path) -> ProjectHost:
    return ProjectHost(load_config(project / "wrangler.jsonc"),
                       HostOptions(state_dir=state, clock=VirtualClock(start_ms, flowing=False),
                                   isolation="inline"))


def instance_ids(host: ProjectHost) -> list[str]:
    return sorted(row.id for row in host.engine.store.list_instances())


def test_each_firing_creates_one_instance_with_the_cron_and_its_time(tmp_path):
    """§1.8: the payload is ``{"cron", "scheduledTime"}``; the id holds the firing time."""
    async def main():
        host = host_at(write_project(tmp_path / "p"), ms(2026, 1, 1, 11, 58, 30), tmp_path / "s")
        await host.start()
        try:
            host.scheduler.start()
            host.engine.clock.jump_to(ms(2026, 1, 1, 12, 0, 0) + 250)
            fired = host.scheduler.fire_due()
            assert [(f.schedule.expression, f.at, f.created) for f in fired] == [
                ("*/5 * * * *", ms(2026, 1, 1, 12), True), ("0 * * * *", ms(2026, 1, 1, 12), True)]
            assert fired[0].instance_id == firing_id("reports", "*/5 * * * *", ms(2026, 1, 1, 12))
            assert fired[0].instance_id.startswith("reports-cron-")
            await host.engine.drain(jump=False)
            status = host.engine.control.status(fired[0].instance_id)
            assert status["output"] == {"payload": {"cron": "*/5 * * * *",
                                                    "scheduledTime": ms(2026, 1, 1, 12)},
                                        "instance": fired[0].instance_id}
            assert host.scheduler.fire_due() == []           # nothing new is due
        finally:
            await host.close()
    asyncio.run(main())


def test_a_firing_is_created_once_across_processes_and_restarts(tmp_path):
    """§1.8: two schedulers on one state file (two dev servers, or one started again within
    the minute) create one instance per firing."""
    async def main():
        project, state = write_project(tmp_path / "p", ["*/5 * * * *"]), tmp_path / "s"
        first, second = host_at(project, ms(2026, 1, 1, 12, 4), state), \
            host_at(project, ms(2026, 1, 1, 12, 4, 30), state)
        for host in (first, second):
            host.scheduler.start()
            host.engine.clock.jump_to(ms(2026, 1, 1, 12, 5, 1))
        (one,), (other,) = first.scheduler.fire_due(), second.scheduler.fire_due()
        assert one.instance_id == other.instance_id and (one.created, other.created) == (True, False)
        assert len(instance_ids(first)) == 1
        for host in (first, second):
            host.engine.close()
    asyncio.run(main())


def test_missed_firings_are_not_made_up_for(tmp_path):
    """§1.8: a scheduler starts from the moment it starts; one that fell behind (the machine
    asleep) fires the latest due firing of each schedule only."""
    async def main():
        project, state = write_project(tmp_path / "p", ["*/5 * * * *"]), tmp_path / "s"
        host = host_at(project, ms(2026, 1, 1, 12, 7), state)   # dev was down at 12:05
        host.scheduler.start()
        assert host.scheduler.fire_due() == []
        host.engine.clock.jump_to(ms(2026, 1, 1, 12, 31))       # 12:10 ... 12:30 came due
        (fired,) = host.scheduler.fire_due()
        assert fired.at == ms(2026, 1, 1, 12, 30)
        assert instance_ids(host) == [firing_id("reports", "*/5 * * * *", ms(2026, 1, 1, 12, 30))]
        host.engine.close()
    asyncio.run(main())


def test_fast_forward_never_fires_a_schedule(tmp_path):
    """§1.8, §4.8: skipping an instance's sleep moves no clock, so no firing comes closer."""
    async def main():
        host = host_at(write_project(tmp_path / "p", ["0 0 * * *"]), ms(2026, 1, 1, 12),
                       tmp_path / "s")
        await host.start()
        try:
            host.scheduler.start()
            host.engine.control.create("reports", {"id": "napper", "params": {"nap": True}})
            await host.engine.drain(jump=False)
            assert host.engine.store.get_instance("napper").status == "waiting"
            assert host.engine.skip_ahead()                 # the day-long sleep ends now
            await host.engine.drain(jump=False)
            assert host.engine.store.get_instance("napper").status == "complete"
            assert host.engine.clock.now_ms() == ms(2026, 1, 1, 12)
            assert host.scheduler.fire_due() == [] and instance_ids(host) == ["napper"]
        finally:
            await host.close()
    asyncio.run(main())


def test_upcoming_firings_are_after_now(tmp_path):
    host = host_at(write_project(tmp_path / "p"), ms(2026, 1, 1, 12, 5), tmp_path / "s")
    assert host.scheduler.upcoming(3) == [
        {"workflow": "reports", "cron": "*/5 * * * *",
         "next": [ms(2026, 1, 1, 12, 10), ms(2026, 1, 1, 12, 15), ms(2026, 1, 1, 12, 20)]},
        {"workflow": "reports", "cron": "0 * * * *",
         "next": [ms(2026, 1, 1, 13), ms(2026, 1, 1, 14), ms(2026, 1, 1, 15)]}]
    host.engine.close()


def test_a_reloaded_config_brings_its_schedules(tmp_path):
    """§1.8: a changed wrangler file reloads the dispatcher and its schedules with it."""
    async def main():
        project = write_project(tmp_path / "p", ["*/5 * * * *"])
        host = host_at(project, ms(2026, 1, 1, 12, 1), tmp_path / "s")
        await host.start()
        try:
            host.scheduler.start()
            write_project(project, ["0 13 * * *"])
            await host.reload_dispatcher(load_config(project / "wrangler.jsonc"))
            assert host.scheduler.upcoming(1) == [
                {"workflow": "reports", "cron": "0 13 * * *", "next": [ms(2026, 1, 1, 13)]}]
            host.engine.clock.jump_to(ms(2026, 1, 1, 12, 5, 1))
            assert host.scheduler.fire_due() == []          # the old */5 is gone
        finally:
            await host.close()
    asyncio.run(main())


def test_schedules_of_reads_every_workflow(tmp_path):
    config = load_config(write_project(tmp_path / "p") / "wrangler.jsonc")
    assert [(s.workflow, s.expression) for s in schedules_of(config.workflows)] == [
        ("reports", "*/5 * * * *"), ("reports", "0 * * * *")]


# ---- the dev app -------------------------------------------------------------------------------

def test_the_dev_app_fires_schedules_and_answers_their_next_firings(tmp_path):
    """§1.8: the app ``dynwf dev`` serves runs the scheduler beside the engine, on its clock; the
    admin API lists the next three firings of each schedule, all after now."""
    project = write_project(tmp_path / "p", ["*/5 * * * *"])
    host = host_at(project, ms(2026, 1, 1, 12, 4, 50), tmp_path / "s")
    client = AppClient(create_app(host, token="t"))
    try:
        status, body = client.request("GET", f"{API}/schedules")
        answer = json.loads(body)
        assert status == 200 and answer["now"] == ms(2026, 1, 1, 12, 4, 50)
        assert answer["schedules"] == [{"workflow": "reports", "cron": "*/5 * * * *",
                                        "next": [ms(2026, 1, 1, 12, 5), ms(2026, 1, 1, 12, 10),
                                                 ms(2026, 1, 1, 12, 15)]}]
        host.engine.clock.jump_to(ms(2026, 1, 1, 12, 5, 0) + 100)
        expected = firing_id("reports", "*/5 * * * *", ms(2026, 1, 1, 12, 5))
        deadline = time.monotonic() + 10          # the scheduler looks at least once a second
        while time.monotonic() < deadline:
            row = host.engine.store.find_instance(expected)
            if row is not None and row.status == "complete":
                break
            time.sleep(0.05)
        assert row is not None and row.status == "complete", row
        answer = json.loads(client.request("GET", f"{API}/schedules")[1])
        assert answer["schedules"][0]["next"][0] == ms(2026, 1, 1, 12, 10)
    finally:
        client.close()


def test_dev_prints_the_schedules_at_start(tmp_path, servers):
    """§1.8: the banner names each schedule and its next firing (the real clock's)."""
    project = write_project(tmp_path / "p", ["*/5 * * * *"])
    dev = start(servers, project)
    ready = dev.wait_for_record(kind="server.ready")
    (schedule,) = ready["schedules"]
    assert schedule["workflow"] == "reports" and schedule["cron"] == "*/5 * * * *"
    (at,) = schedule["next"]
    now = time.time() * 1000
    assert now < at <= now + 5 * MINUTE and at % (5 * MINUTE) == 0
    status, answer = call(dev, "GET", f"{API}/schedules")
    assert status == 200 and len(answer["schedules"][0]["next"]) == 3
    assert all(at > answer["now"] for at in answer["schedules"][0]["next"])


def test_dev_on_a_terminal_prints_the_schedule_line(tmp_path):
    """The plain banner (what a person reads) has one line per schedule."""
    from dynwf_cli.commands.dev import _PlainOutput
    from dynwf_cli.console import console
    project = write_project(tmp_path / "p", ["0 9 * * MON-FRI"])
    output = _PlainOutput(None, False)   # type: ignore[arg-type]
    info = {"project": "cron-lab", "url": "http://127.0.0.1:1", "dashboard": "d",
            "state_dir": str(project), "tenants": [], "reload": True, "fast_forward": False,
            "isolation_missing": {}, "resuming": 0, "waiting": 0,
            "schedules": [{"workflow": "reports", "cron": "0 9 * * MON-FRI",
                           "next": [ms(2026, 1, 5, 9)]}]}
    with console.capture() as captured:
        output.banner(info)
    assert "schedule reports: 0 9 * * MON-FRI (next 2026-01-05 09:00 UTC)" in captured.get()
    schedule = schedules_of(load_config(project / "wrangler.jsonc").workflows)[0]
    fired = Firing(schedule, ms(2026, 1, 5, 9), "reports-cron-x-1", created=True)
    again = Firing(schedule, ms(2026, 1, 5, 9), "reports-cron-x-1", created=False)
    with console.capture() as captured:
        output.schedule_fired(fired)
        output.schedule_fired(again)
    assert captured.get().splitlines() == [
        "schedule 0 9 * * MON-FRI of reports fired for 2026-01-05 09:00 UTC: created "
        "reports-cron-x-1",
        "schedule 0 9 * * MON-FRI of reports fired for 2026-01-05 09:00 UTC: reports-cron-x-1 "
        "already exists (fired before)"]


def test_dev_json_lines_report_each_firing(capsys, tmp_path):
    """``--json``: a firing is one ``schedule.fired`` line."""
    from dynwf_cli.commands.dev import _JsonOutput
    schedule = schedules_of(load_config(write_project(tmp_path / "p") / "wrangler.jsonc")
                            .workflows)[0]
    _JsonOutput().schedule_fired(Firing(schedule, ms(2026, 1, 1, 12), "reports-cron-x-1", True))
    assert json.loads(capsys.readouterr().out) == {
        "kind": "schedule.fired", "workflow": "reports", "cron": "*/5 * * * *",
        "scheduled_time": ms(2026, 1, 1, 12), "instance": "reports-cron-x-1", "created": True}


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is not installed at "
                                                  "/usr/bin/chromium")
def test_the_dashboard_shows_each_schedules_next_firings(tmp_path, servers):
    """§1.8: the instances page lists each schedule with its next three firings, none past."""
    sync_api = pytest.importorskip("playwright.sync_api")
    project = write_project(tmp_path / "p")
    dev = start(servers, project)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page()
            page.goto(dev.url + "/__dynwf/#/instances")
            rows = page.locator("#schedules tr[data-cron]")
            rows.first.wait_for(timeout=15_000)
            assert [rows.nth(i).get_attribute("data-cron") for i in range(rows.count())] == \
                ["*/5 * * * *", "0 * * * *"]
            now = time.time() * 1000
            for i in range(rows.count()):
                times = [int(t) for t in
                         rows.nth(i).locator("li[data-at]").evaluate_all(
                             "(items) => items.map((li) => li.dataset.at)")]
                assert len(times) == 3 and times == sorted(times) and times[0] > now - 1000
            shown = rows.first.locator("li").first.inner_text()
            assert shown == datetime.fromtimestamp(int(rows.first.locator("li").first
                                                       .get_attribute("data-at")) / 1000,
                                                   tz=UTC).strftime("%Y-%m-%d %H:%M")
        finally:
            browser.close()

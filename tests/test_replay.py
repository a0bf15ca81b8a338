"""Changing tenant code safely (docs/semantics.md §4.10): ``dynwf replay`` finds the instances a
code change would break before they wake, ``dynwf instances rerun`` recovers one from a step,
``export``/``import`` make a history a file. Every case goes through the installed ``dynwf``
(a real process, real SQLite, tenant code in real isolates unless the case is about the host)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app

DYNWF = str(Path(sys.executable).with_name("dynwf"))
runner = CliRunner()

#: reserve, charge, approval, ship, notify, delivery: instance A stops at "delivery" (past every
#: edit below), instance B at "approval" (before all of them).
SHOP = '''
from workers import WorkflowEntrypoint

MARKERS = {markers!r}


def mark(name):
    if MARKERS:
        with open(MARKERS + "/" + name, "a") as f:
            f.write("ran\\n")


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("reserve")
        async def reserve():
            mark("reserve")
            return {{"reserved": True}}

        @step.do("charge")
        async def charge():
            mark("charge")
            return {{"charged": 42}}

        @step.do("audit")
        async def audit():
            mark("audit")
            return "audited"

        @step.do("ship")
        async def ship():
            mark("ship")
            return "shipped"

        @step.do("ship parcel")
        async def ship_parcel():
            mark("ship")
            return "shipped"

        @step.do("notify")
        async def notify():
            mark("notify")
            return "notified"

        await reserve()
        await charge()
        await step.wait_for_event("approval", "approval", timeout="1 hour")
{middle}
        await step.wait_for_event("delivery", "delivery", timeout="1 hour")
        mark("end")
        return "delivered"
'''
ORIGINAL = "        await ship()\n        await notify()"
#: each edit of the steps between "approval" and "delivery", and the step the code now runs
#: where the history holds "ship"
EDITS = {
    "insert": ("        await audit()\n        await ship()\n        await notify()", "audit"),
    "remove": ("        await notify()", "notify"),
    "rename": ("        await ship_parcel()\n        await notify()", "ship parcel"),
    "reorder": ("        await notify()\n        await ship()", "notify"),
}


def shop_source(middle: str = ORIGINAL, markers: Path | None = None) -> str:
    return SHOP.format(middle=middle, markers=str(markers) if markers else "")


def dynwf(*args: str, cwd: Path, check_code: int | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([DYNWF, *args], cwd=cwd, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "NO_COLOR": "1"})
    if check_code is not None:
        assert done.returncode == check_code, (args, done.stdout, done.stderr)
    return done


@pytest.fixture()
def shop(tmp_path):
    """A project with the tenant "shop"; instance A recorded past every edit, B before all."""
    assert runner.invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    (root / "tenants" / "shop").mkdir()
    (root / "tenants" / "shop" / "index.py").write_text(shop_source())
    dynwf("run", "--tenant", "shop", "--id", "A", "--event", "approval={}", cwd=root,
          check_code=3)
    dynwf("run", "--tenant", "shop", "--id", "B", cwd=root, check_code=3)
    return root


def replay_json(root: Path, *args: str) -> tuple[int, dict]:
    done = dynwf("replay", "--format", "json", *args, cwd=root)
    return done.returncode, json.loads(done.stdout)


def by_id(report: dict) -> dict[str, dict]:
    return {row["instance"].rsplit("-", 1)[-1]: row for row in report["instances"]}


def line_of(source: str, text: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if line.strip() == text)


def state_snapshot(root: Path) -> tuple[bytes, list]:
    """The state file's bytes and every row of every table."""
    database = root / ".dynwf" / "state.sqlite"
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                             "ORDER BY name")]
        rows = [(t, conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall()) for t in tables]
    finally:
        conn.close()
    return database.read_bytes(), rows


def test_unchanged_code_replays_compatible_and_changes_nothing(shop):
    """§4.10: every in-flight instance replays; the state file is byte- and row-identical."""
    before = state_snapshot(shop)
    code, report = replay_json(shop)
    assert code == 0, report
    rows = by_id(report)
    assert set(rows) == {"A", "B"} and report["compatible"] is True
    assert rows["A"]["verdict"] == "compatible" and rows["A"]["replayed"] == 5
    assert rows["A"]["stopped_at"] == 'step.wait_for_event "delivery"'
    assert rows["B"]["stopped_at"] == 'step.wait_for_event "approval"'
    assert state_snapshot(shop) == before


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edit_is_reported_at_the_right_step_only_for_instances_past_it(shop, edit):
    """§4.10: insert, remove, rename, reorder: A (recorded past the edit) diverges at "ship",
    naming the step the code now runs and its line; B (not there yet) is compatible; exit 1."""
    middle, reached = EDITS[edit]
    source = shop_source(middle)
    (shop / "tenants" / "shop" / "index.py").write_text(source)
    code, report = replay_json(shop)
    assert code == 1
    rows = by_id(report)
    assert rows["B"]["verdict"] == "compatible"
    assert rows["A"]["verdict"] == "diverges", rows["A"]
    assert rows["A"]["expected"] == 'step.do "ship"'
    assert rows["A"]["reached"] == f'step.do "{reached}"'
    assert rows["A"]["file"] == "tenants/shop/index.py"
    call = {"audit": "await audit()", "notify": "await notify()",
            "ship parcel": "await ship_parcel()"}[reached]
    assert rows["A"]["line"] == line_of(source, call)


def test_github_annotations_and_text_name_the_tenants_file(shop):
    source = shop_source(EDITS["rename"][0])
    (shop / "tenants" / "shop" / "index.py").write_text(source)
    github = dynwf("replay", "--format", "github", cwd=shop, check_code=1)
    line = line_of(source, "await ship_parcel()")
    assert f"::error file=tenants/shop/index.py,line={line},title=dynwf replay%3A diverges::" \
        in github.stdout
    assert 'expected step.do "ship" but the code now runs step.do "ship parcel"' in github.stdout
    assert github.stdout.count("::error") == 1        # B is compatible: no annotation
    text = dynwf("replay", "--tenant", "shop", cwd=shop, check_code=1)
    assert "✗ shop" in text.stdout and f"at tenants/shop/index.py:{line}" in text.stdout
    assert "1 of 2 instance(s) compatible" in text.stdout
    only_b = dynwf("replay", "--tenant", "shop", "--instance", "B", cwd=shop, check_code=0)
    assert "1 of 1 instance(s) compatible" in only_b.stdout


def test_code_that_does_not_load_is_reported_as_such(shop):
    (shop / "tenants" / "shop" / "index.py").write_text("def broken(:\n")
    code, report = replay_json(shop)
    assert code == 1
    assert {row["verdict"] for row in report["instances"]} == {"fails_to_load"}


def test_no_step_body_runs_and_no_timer_waits_in_the_host_either(tmp_path):
    """§4.10, inline (the workflow's code in the host): the bodies of recorded steps and of the
    step past the history write a marker when they run; none appears during a replay."""
    assert runner.invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    markers = tmp_path / "markers"
    markers.mkdir()
    (root / "tenants" / "shop").mkdir()
    (root / "tenants" / "shop" / "index.py").write_text(shop_source(markers=markers))
    dynwf("run", "--tenant", "shop", "--id", "A", "--event", "approval={}", "--isolation",
          "inline", cwd=root, check_code=3)
    assert sorted(p.name for p in markers.iterdir()) == ["charge", "notify", "reserve", "ship"]
    for marker in markers.iterdir():
        marker.unlink()
    before = state_snapshot(root)
    done = dynwf("replay", "--isolation", "inline", cwd=root, check_code=0)
    assert "compatible" in done.stdout
    assert list(markers.iterdir()) == []
    assert state_snapshot(root) == before


def test_rerun_from_a_failed_step_with_fixed_code_completes_without_repeating_earlier_steps(
        tmp_path):
    """§4.10: the rerun copies the steps before the failed one (not run again: their markers
    stay single), runs the fixed step on the current code and completes; the original is
    untouched and each names the other."""
    assert runner.invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    markers = tmp_path / "markers"
    markers.mkdir()
    failing = f'''
from workers import WorkflowEntrypoint
from workers.workflows import NonRetryableError


def mark(name):
    with open({str(markers)!r} + "/" + name, "a") as f:
        f.write("ran\\n")


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("reserve")
        async def reserve():
            mark("reserve")
            return 7

        @step.do("charge")
        async def charge(reserve):
            mark("charge")
            raise NonRetryableError("gateway refused")

        return {{"charged": await charge()}}
'''
    (root / "tenants" / "pay").mkdir()
    index = root / "tenants" / "pay" / "index.py"
    index.write_text(failing)
    dynwf("run", "--tenant", "pay", "--id", "p1", "--isolation", "inline", cwd=root,
          check_code=1)
    original = json.loads(dynwf("instances", "describe", "p1", "--tenant", "pay", "--json",
                                cwd=root, check_code=0).stdout)
    assert original["status"] == "errored"
    index.write_text(failing.replace('raise NonRetryableError("gateway refused")',
                                     'return reserve * 6'))
    made = json.loads(dynwf("instances", "rerun", "p1", "--tenant", "pay", "--from", "charge",
                            "--id", "p1-fixed", "--json", cwd=root, check_code=0).stdout)
    assert made["tenant_instance_id"] == "p1-fixed" and made["steps_kept"] == 1
    assert made["status"] == "queued"
    dynwf("run", "--resume", "p1-fixed", "--tenant", "pay", "--isolation", "inline", cwd=root,
          check_code=0)
    rerun = json.loads(dynwf("instances", "describe", "p1-fixed", "--tenant", "pay", "--json",
                             cwd=root, check_code=0).stdout)
    assert rerun["status"] == "complete" and rerun["output"] == {"charged": 42}
    assert (markers / "reserve").read_text() == "ran\n"          # not run again
    assert (markers / "charge").read_text() == "ran\nran\n"      # the failed try, the fixed one
    kept = rerun["steps"][0]
    assert (kept["name"], kept["result"]) == ("reserve", 7)
    assert kept["started_at"] == original["steps"][0]["started_at"]
    assert rerun["rerun_of"] == original["id"] and rerun["rerun_from"]["name"] == "charge"
    after = json.loads(dynwf("instances", "describe", "p1", "--tenant", "pay", "--json",
                             cwd=root, check_code=0).stdout)
    assert after["reruns"] == [{"id": rerun["id"], "from": rerun["rerun_from"],
                                "status": "complete"}]
    assert {k: v for k, v in after.items() if k not in ("reruns", "now", "current_code_version")} \
        == {k: v for k, v in original.items() if k not in ("reruns", "now", "current_code_version")}
    text = dynwf("instances", "describe", "p1", "--tenant", "pay", cwd=root, check_code=0).stdout
    assert f"rerun     {rerun['id']}  from do 'charge' #1 (complete)" in text


def test_rerun_with_a_replaced_output_and_refusals(shop):
    """--output keeps the step as done with that result; a step the history lacks, an id in use
    and --output on a wait are refused before anything is written."""
    made = json.loads(dynwf("instances", "rerun", "A", "--tenant", "shop", "--from", "ship",
                            "--output", '"hand-delivered"', "--id", "A2", "--json", cwd=shop,
                            check_code=0).stdout)
    assert made["steps_kept"] == 4 and made["output_replaced"] is True
    described = json.loads(dynwf("instances", "describe", "A2", "--tenant", "shop", "--json",
                                 cwd=shop, check_code=0).stdout)
    assert [(s["name"], s["status"]) for s in described["steps"]] == [
        ("reserve", "done"), ("charge", "done"), ("approval", "done"), ("ship", "done")]
    assert described["steps"][-1]["result"] == "hand-delivered"
    count = len(json.loads(dynwf("instances", "list", "--json", cwd=shop).stdout))
    missing = dynwf("instances", "rerun", "A", "--tenant", "shop", "--from", "nope", cwd=shop,
                    check_code=1)
    assert "instance.cannot_restart" in missing.stderr
    taken = dynwf("instances", "rerun", "A", "--tenant", "shop", "--from", "ship", "--id", "A2",
                  cwd=shop, check_code=1)
    assert "instance.already_exists" in taken.stderr
    wait = dynwf("instances", "rerun", "A", "--tenant", "shop", "--from", "approval", "--type",
                 "waitForEvent", "--output", "{}", cwd=shop, check_code=1)
    assert "replaces a do step's result" in wait.stderr
    assert len(json.loads(dynwf("instances", "list", "--json", cwd=shop).stdout)) == count


def test_an_exported_history_replays_identically_after_import_elsewhere(shop, tmp_path):
    """§4.10: export, import into another state folder, replay both (also as a --history
    file) against an edit: the same verdicts, messages, steps and lines."""
    exported = dynwf("instances", "export", "A", "--tenant", "shop", cwd=shop, check_code=0)
    history = json.loads(exported.stdout)
    assert (history["format"], history["version"]) == ("dynwf.history", 1)
    assert [s["name"] for s in history["steps"]] == ["reserve", "charge", "approval", "ship",
                                                     "notify", "delivery"]
    assert history["source"]["modules"]["index.py"] == shop_source()
    path = tmp_path / "A.json"
    path.write_text(exported.stdout)
    other = tmp_path / "other-state"
    imported = dynwf("instances", "import", str(path), "--state-dir", str(other), "--json",
                     cwd=shop, check_code=0)
    assert json.loads(imported.stdout)["status"] == "waiting"
    (shop / "tenants" / "shop" / "index.py").write_text(shop_source(EDITS["insert"][0]))
    _, here = replay_json(shop, "--instance", "A", "--tenant", "shop")
    _, there = replay_json(shop, "--instance", "A", "--tenant", "shop", "--state-dir", str(other))
    _, from_file = replay_json(shop, "--history", str(path))
    assert here == there == from_file
    assert here["instances"][0]["verdict"] == "diverges"
    again = dynwf("instances", "export", "A", "--tenant", "shop", "--state-dir", str(other),
                  cwd=shop, check_code=0)
    assert json.loads(again.stdout)["steps"] == history["steps"]


def test_import_checks_everything_and_writes_nothing_on_failure(shop, tmp_path):
    exported = json.loads(dynwf("instances", "export", "A", "--tenant", "shop", cwd=shop,
                                check_code=0).stdout)
    other = tmp_path / "other-state"
    cases = {
        "format": ({**exported, "format": "nope"}, "format is 'nope'"),
        "version": ({**exported, "version": 2}, "this dynwf reads version 1"),
        "step kind": ({**exported, "steps": [*exported["steps"][:-1],
                                             {**exported["steps"][-1], "kind": "eval"}]},
                      "steps[5].kind"),
        "result size": ({**exported, "steps": [{**exported["steps"][0],
                                                "result": "x" * (1024 * 1024 + 1)}]},
                        "steps[0].result is over the limit"),
        "count type": ({**exported, "steps": [{**exported["steps"][0], "count": "1"}]},
                       "steps[0].count is str, not int"),
        "another tenant's scope": ({**exported, "instance": {
            **exported["instance"], "params": {"__dispatcherMetadata": {"tenantId": "other"},
                                               "params": {}}}},
            "is not the scope of the params' dispatcher metadata"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        done = dynwf("instances", "import", str(path), "--state-dir", str(other), cwd=shop,
                     check_code=1)
        assert "history.invalid" in done.stderr and message in done.stderr, (name, done.stderr)
    listed = dynwf("instances", "list", "--json", "--state-dir", str(other), cwd=shop)
    assert json.loads(listed.stdout or "[]") == []


def test_help_of_the_new_commands_has_an_example():
    for args in (["replay"], ["instances", "rerun"], ["instances", "export"],
                 ["instances", "import"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, args


def test_dev_replays_in_flight_instances_on_each_reload_and_names_those_it_would_break(
        tmp_path, servers):
    """§4.10: a saved tenant is replayed against its in-flight instances before any wakes: an
    edit past where an instance stands is compatible, one before it is named with its step."""
    import signal

    from dev_harness import copy_hello, save_atomically, start
    project = copy_hello(tmp_path)
    dev = start(servers, project)
    dev.wait_for_record(kind="server.ready")
    status, order = dev.post("acme", {"items": [{"price": 2, "quantity": 3}]})
    assert status == 200, order
    dev.wait_for_record(kind="step.waiting", step__name="payment")
    index = project / "tenants" / "acme" / "index.py"
    good = index.read_text()

    mark = len(dev.lines)     # a change after the wait: the instance has not reached it
    save_atomically(index, good.replace('@step.do("ship")', '@step.do("ship parcel")'))
    reload = dev.wait_for_record(kind="reload", target="tenant", name="acme", after=mark)
    assert reload["replay"] == {"checked": 1, "unchecked": 0, "breaking": []}, reload

    mark = len(dev.lines)     # a recorded step renamed: the instance would diverge there
    renamed = good.replace('@step.do(config=', '@step.do("price quote", config=')
    assert renamed != good
    save_atomically(index, renamed)
    reload = dev.wait_for_record(kind="reload", target="tenant", name="acme", after=mark)
    [breaking] = reload["replay"]["breaking"]
    assert breaking["verdict"] == "diverges" and breaking["instance"].endswith(order["id"])
    assert (breaking["expected"], breaking["reached"]) == ('step.do "quote"',
                                                           'step.do "price quote"')
    assert breaking["file"] == "tenants/acme/index.py"
    assert breaking["line"] == line_of(renamed, "price = await quote()")
    # the instance itself is untouched: still waiting for its payment
    assert dev.stop(signal.SIGTERM) == 0
    described = json.loads(dynwf("instances", "describe", order["id"], "--tenant", "acme",
                                 "--json", cwd=project, check_code=0).stdout)
    assert described["status"] == "waiting"


@pytest.fixture
def dynwf_project(request, shop):
    """The shop project for the pytest plugin, with A's history kept as a test fixture and the
    tenant's code as the case asks (unchanged, or with "ship" renamed)."""
    exported = dynwf("instances", "export", "A", "--tenant", "shop", cwd=shop, check_code=0)
    (shop / "tests" / "histories").mkdir(parents=True, exist_ok=True)
    (shop / "tests" / "histories" / "order-A.json").write_text(exported.stdout)
    if getattr(request, "param", "same") == "renamed":
        (shop / "tenants" / "shop" / "index.py").write_text(shop_source(EDITS["rename"][0]))
    return shop


@pytest.mark.parametrize("dynwf_project", ["same"], indirect=True)
async def test_the_pytest_plugin_replays_a_history_file(dynwf, dynwf_project):
    """§4.10: a real run kept as a regression test: compatible code replays it."""
    outcome = await dynwf.replay("tests/histories/order-A.json")
    assert outcome.ok and outcome.replayed == 5
    assert outcome.stopped_at == 'step.wait_for_event "delivery"'


@pytest.mark.parametrize("dynwf_project", ["renamed"], indirect=True)
async def test_the_pytest_plugin_raises_with_the_divergence(dynwf, dynwf_project):
    from emulator.errors import ReplayDivergedError
    with pytest.raises(ReplayDivergedError) as raised:
        await dynwf.replay("tests/histories/order-A.json")
    line = line_of(shop_source(EDITS["rename"][0]), "await ship_parcel()")
    assert 'expected step.do "ship" but the code now runs step.do "ship parcel"' in str(raised.value)
    assert f"(at tenants/shop/index.py:{line})" in str(raised.value)
    assert raised.value.code == "replay.diverged"


GATHERED = '''
import asyncio

from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        async def chain(first, second, pause):
            @step.do(first)
            async def one():
                await asyncio.sleep(pause)
                return first

            @step.do(second)
            async def two():
                return second

            return [await one(), await two()]

        both = await asyncio.gather(chain("a1", "a2", 0), chain("b1", "b2", 0.05))
        await step.wait_for_event("go", "go", timeout="1 hour")
        return both
'''


def test_steps_gathered_in_parallel_replay_compatible_whatever_order_they_end_in(tmp_path):
    """§4.10: two chains gathered together were recorded interleaved (a1 and b1 before a2 and
    b2); replayed, each chain's answers come at once, yet that is not a reorder."""
    assert runner.invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    (root / "tenants" / "par").mkdir()
    (root / "tenants" / "par" / "index.py").write_text(GATHERED)
    dynwf("run", "--tenant", "par", "--id", "g1", cwd=root, check_code=3)
    steps = json.loads(dynwf("instances", "describe", "g1", "--tenant", "par", "--json",
                             cwd=root, check_code=0).stdout)["steps"]
    # both chains' first steps are reached before either's second, in whichever order
    assert {s["name"] for s in steps[:2]} == {"a1", "b1"}
    code, report = replay_json(root)
    assert code == 0, report
    assert report["instances"][0]["replayed"] == 4


def test_the_dev_log_for_a_person_names_the_instances_a_reload_would_break():
    from dynwf_cli.commands.dev import _PlainOutput
    from dynwf_cli.console import console
    from emulator.replay import ReplayOutcome
    from emulator.server import ReloadEvent
    broken = ReplayOutcome("93bd3ab5ab02-po-7", "automations", "globex", "diverges",
                           'expected step.do "ship" but the code now runs step.do "audit"',
                           file="globex/index.py", path="tenants/globex/index.py", line=37)
    fine = ReplayOutcome("93bd3ab5ab02-po-8", "automations", "globex", "compatible", "ok")
    event = ReloadEvent("tenant", "globex", 0.003, ("tenants/globex/index.py",),
                        replay=(broken, fine))
    with console.capture() as captured:
        _PlainOutput(project=None, fast_forward=False).reload(event)
    assert captured.get().splitlines() == [
        "reloaded tenant globex in 3 ms",
        "  replay: the new code would break 1 of 2 in-flight instance(s):",
        '    93bd3ab5ab02-po-7 diverges: expected step.do "ship" but the code now runs step.do '
        '"audit" (at tenants/globex/index.py:37)']
    with console.capture() as captured:
        _PlainOutput(project=None, fast_forward=False).reload(
            ReloadEvent("tenant", "globex", 0.003, replay=(fine,), unchecked=3))
    assert captured.get().splitlines()[1] == \
        "  replay: the new code is compatible with the 1 in-flight instance(s) (3 more not checked)"


def test_only_a_replay_check_may_say_its_history_ended():
    """The host checks what an isolate sends: a normal run's isolate cannot call history_end
    (which would stop the run without recording anything); a replay check's step reference
    tells the isolate's client to run no body."""
    from emulator.errors import StepCallError
    from emulator.sdk.client import StepClient
    from emulator.sdk.remote import StepBackendTarget
    normal = StepBackendTarget(StepClient(object(), "i", {}, step_limit=10))  # type: ignore[arg-type]
    with pytest.raises(StepCallError, match="only part of a replay check"):
        normal.history_end(["do", "x", 1])
    assert "replay" not in normal.__rpc_describe__()[1]
    check = StepBackendTarget(StepClient(object(), "i", {}, step_limit=10,  # type: ignore[arg-type]
                                         replay_only=True))
    assert check.__rpc_describe__()[1]["replay"] is True
    with pytest.raises(StepCallError, match="runs no step body"):
        asyncio.run(check.fetch(["do", "x", 1], None))


def test_code_that_now_returns_before_a_recorded_step_diverges(shop):
    """§4.10: run() ending before a step the instance recorded is a divergence too."""
    source = shop_source('        return "cut short"')
    (shop / "tenants" / "shop" / "index.py").write_text(source)
    code, report = replay_json(shop)
    assert code == 1
    rows = by_id(report)
    assert (rows["A"]["verdict"], rows["A"]["expected"], rows["A"]["reached"]) == (
        "diverges", 'step.do "ship"', "the end of run()")
    assert rows["B"]["verdict"] == "compatible"


def test_a_project_where_nothing_ran_yet_has_nothing_to_replay(tmp_path):
    assert runner.invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    done = dynwf("replay", cwd=tmp_path / "demo", check_code=0)
    assert "no instance to replay" in done.stdout
    named = dynwf("replay", "--instance", "x", cwd=tmp_path / "demo", check_code=1)
    assert "state.not_found" in named.stderr
    assert not (tmp_path / "demo" / ".dynwf" / "state.sqlite").exists()


def test_replay_rerun_and_export_on_a_postgresql_database(tmp_path, postgres_url):
    """§4.10 on the PostgreSQL store (--database): the same verdicts, a rerun, a history
    exported from it and imported into a SQLite state folder."""
    assert runner.invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    (root / "tenants" / "shop").mkdir()
    (root / "tenants" / "shop" / "index.py").write_text(shop_source())
    db = ("--database", postgres_url)
    dynwf("run", "--tenant", "shop", "--id", "A", "--event", "approval={}", *db, cwd=root,
          check_code=3)
    dynwf("run", "--tenant", "shop", "--id", "B", *db, cwd=root, check_code=3)
    assert not (root / ".dynwf" / "state.sqlite").exists()
    (root / "tenants" / "shop" / "index.py").write_text(shop_source(EDITS["reorder"][0]))
    code, report = replay_json(root, *db)
    assert code == 1
    rows = by_id(report)
    assert (rows["A"]["expected"], rows["A"]["reached"]) == ('step.do "ship"', 'step.do "notify"')
    assert rows["B"]["verdict"] == "compatible"
    made = json.loads(dynwf("instances", "rerun", "A", "--tenant", "shop", "--from", "ship",
                            "--id", "A2", "--json", *db, cwd=root, check_code=0).stdout)
    assert made["steps_kept"] == 3
    exported = dynwf("instances", "export", "A2", "--tenant", "shop", *db, cwd=root,
                     check_code=0)
    history = json.loads(exported.stdout)
    assert history["instance"]["rerun_of"].endswith("-A")
    path = tmp_path / "A2.json"
    path.write_text(exported.stdout)
    dynwf("instances", "import", str(path), "--state-dir", str(tmp_path / "local"), cwd=root,
          check_code=0)
    assert not (root / ".dynwf" / "state.sqlite").exists()

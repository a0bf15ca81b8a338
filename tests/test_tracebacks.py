"""A failed attempt's traceback in the tenant's own terms, and every attempt's outcome kept: a
project made by ``dynwf init``, a tenant whose step calls a helper module that fails twice, run
through the command line in a real isolate (``dynwf run``, ``dynwf instances describe``)."""

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from dynwf_cli.app import app
from dynwf_cli.checklist import Checklist
from dynwf_cli.console import THEME
from emulator.engine.progress import Progress
from emulator.errors import StepCallError
from emulator.rpc.errors import ProtocolViolation
from emulator.rules.limits import MAX_TRACEBACK_FRAMES
from emulator.sdk.remote import StepBackendTarget
from emulator.tracebacks import format_traceback, user_traceback

runner = CliRunner()
STATIC = Path(__file__).resolve().parents[1] / "emulator" / "server" / "static"

FLAKY = '''
from workers import WorkflowEntrypoint
from lib.prices import price_of

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("price", config={"retries": {"limit": 2, "delay": "1 second"}})
        async def price(ctx):
            return price_of(ctx["attempt"])
        return await price()
'''

PRICES = '''
TABLE = {3: 42}


def price_of(attempt):
    return TABLE[attempt]
'''

BROKEN = '''
from workers import WorkflowEntrypoint
from lib.prices import price_of

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("price", config={"retries": {"limit": 1, "delay": "1 second"}})
        async def price(ctx):
            return price_of(7)
        return await price()
'''

LOAD_FAILS = '''
from workers import WorkflowEntrypoint
import settings

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        return settings.VALUE
'''

RUN_FAILS = '''
from workers import WorkflowEntrypoint
from lib.prices import price_of

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        return price_of(9)
'''


@pytest.fixture()
def project(tmp_path, monkeypatch):
    assert runner.invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    for name, source in (("flaky", FLAKY), ("broken", BROKEN), ("runfails", RUN_FAILS)):
        (root / "tenants" / name / "lib").mkdir(parents=True)
        (root / "tenants" / name / "index.py").write_text(source)
        (root / "tenants" / name / "lib" / "prices.py").write_text(PRICES)
    (root / "tenants" / "loadfails").mkdir()
    (root / "tenants" / "loadfails" / "index.py").write_text(LOAD_FAILS)
    (root / "tenants" / "loadfails" / "settings.py").write_text(
        'CONFIG = {}\nVALUE = CONFIG["region"]\n')
    monkeypatch.chdir(root)
    return root


def run(tenant: str, *args: str):
    return runner.invoke(app, ["run", "--tenant", tenant, "--id", f"{tenant}-1", *args])


def checklist_text(stdout: str, **names: str) -> str:
    """The checklist a terminal shows for the run whose NDJSON progress is ``stdout`` (``names``:
    its tenant and workflow, named in its first line)."""
    checklist = Checklist(fast_forward=True, **names)
    for line in stdout.splitlines():
        data = json.loads(line)
        kind = data.pop("kind")
        if kind == "result":
            continue
        step = data.pop("step", None)
        key = (step["kind"], step["name"], step["count"]) if step else None
        checklist.apply(Progress(kind, data.pop("instance"), data.pop("at"), key, data))
    console = Console(width=100, no_color=True, record=True, force_terminal=False, theme=THEME,
                      file=io.StringIO())
    console.print(checklist.render())
    return console.export_text()


def describe(tenant: str) -> dict:
    result = runner.invoke(app, ["instances", "describe", f"{tenant}-1", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_describe_keeps_every_failed_attempt_with_the_tenants_frames(project):
    assert run("flaky", "--json").exit_code == 0
    step = describe("flaky")["steps"][0]
    assert (step["status"], step["attempts"], step["result"]) == ("done", 3, 42)
    failed = step["failed_attempts"]
    assert [a["attempt"] for a in failed] == [1, 2]
    assert [a["error"]["message"] for a in failed] == ["1", "2"]
    frames = [f for f in failed[0]["error"]["traceback"] if "file" in f]
    assert [(f["file"], f["function"]) for f in frames] == [
        ("flaky/index.py", "price"), ("flaky/lib/prices.py", "price_of")]
    assert frames[-1] == {"file": "flaky/lib/prices.py", "line": 6, "function": "price_of",
                          "source": "return TABLE[attempt]"}
    # the step client's own frames are left out, with their count
    elided = failed[0]["error"]["traceback"][0]
    assert elided["of"] == "dynwf" and elided["elided"] >= 1


def test_the_checklist_shows_each_attempt_and_the_frames_of_the_failure(project):
    result = run("flaky", "--json")
    assert result.exit_code == 0, result.output
    text = checklist_text(result.stdout)
    assert "attempt 1 failed: KeyError: 1" in text
    assert "attempt 2 failed: KeyError: 2" in text
    assert "attempt 3 done" in text

    result = run("broken", "--json")
    assert result.exit_code == 1
    text = checklist_text(result.stdout)
    assert "failed: KeyError: 7 · attempt 2 of 2" in text
    assert "attempt 1 failed: KeyError: 7" in text
    assert "attempt 2 raised it (most recent call last):" in text
    frames = text[text.index("raised it"):]
    assert frames.index(" frames of dynwf") < frames.index("broken/index.py:9 in price") \
        < frames.index("return price_of(7)") < frames.index("broken/lib/prices.py:6 in price_of") \
        < frames.index("return TABLE[attempt]")


def test_the_instances_error_keeps_the_platforms_shape(project):
    run("broken")
    info = describe("broken")
    assert info["error"] == {"name": "KeyError", "message": "7"}
    step = info["steps"][0]
    assert step["error"] == {"name": "KeyError", "message": "7"}
    assert step["failed_attempts"][-1]["error"]["traceback"][-1]["file"] == "broken/lib/prices.py"
    text = runner.invoke(app, ["instances", "describe", "broken-1"]).stdout
    assert "attempt 1 failed: KeyError: 7" in text
    assert "broken/lib/prices.py:6 in price_of" in text


def test_a_failure_of_run_itself_keeps_its_frames_beside_the_platforms_error(project):
    result = run("runfails", "--json")
    assert result.exit_code == 1
    info = describe("runfails")
    assert info["error"] == {"name": "KeyError", "message": "9"}
    frames = [f for f in info["error_traceback"] if "file" in f]
    assert [(f["file"], f["line"], f["function"]) for f in frames] == [
        ("runfails/index.py", 7, "run"), ("runfails/lib/prices.py", 6, "price_of")]
    text = checklist_text(result.stdout)
    assert "run() raised it (most recent call last):" in text
    assert "runfails/lib/prices.py:6 in price_of" in text
    described = runner.invoke(app, ["instances", "describe", "runfails-1"]).stdout
    assert "runfails/index.py:7 in run" in described and "return price_of(9)" in described


def test_a_step_failure_escaping_run_names_the_line_that_awaited_it(project):
    run("broken")
    frames = [f for f in describe("broken")["error_traceback"] if "file" in f]
    assert frames[-1] == {"file": "broken/index.py", "line": 10, "function": "run",
                          "source": "return await price()"}


def test_a_deep_recursion_keeps_a_bounded_traceback():
    def down(n):
        return down(n - 1) if n else {}["x"]
    try:
        down(200)
    except KeyError as exc:
        frames = user_traceback(exc)
    assert len(frames) == MAX_TRACEBACK_FRAMES
    assert frames[1]["of"] == "the traceback"
    assert frames[-1]["source"] == 'return down(n - 1) if n else {}["x"]'
    assert any("entries of the traceback" in line for line in format_traceback(frames))


@pytest.mark.parametrize(("error", "refused"), [
    ({"name": "E", "message": "m", "traceback": "x"}, ProtocolViolation),
    ({"name": "E", "message": "m", "traceback": [{"file": "a"}]}, ProtocolViolation),
    ({"name": "E", "message": "m", "extra": 1}, ProtocolViolation),
    ({"name": "E", "message": "m", "traceback": [{"elided": 1, "of": "dynwf"}] * 41},
     StepCallError),
    ({"name": "E", "message": "m", "traceback": [
        {"file": "a" * 300, "line": 1, "function": "f", "source": ""}]}, StepCallError),
])
def test_the_host_refuses_a_traceback_out_of_shape_or_bounds(error, refused):
    with pytest.raises(refused):
        StepBackendTarget._check_error(error)
    StepBackendTarget._check_error({"name": "E", "message": "m", "traceback": [
        {"elided": 2, "of": "dynwf"},
        {"file": "acme/index.py", "line": 3, "function": "f", "source": "x()"}]})


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_dashboard_lists_the_same_attempts_and_frames(project):
    """The dashboard's step lines (``static/checklist.js`` attemptLines) from describe's JSON."""
    run("flaky", "--json")
    step = describe("flaky")["steps"][0]
    script = STATIC / "checklist.js"
    code = (f"import {{ attemptLines }} from {json.dumps(script.as_uri())};\n"
            f"console.log(attemptLines({json.dumps(step)}).join('\\n'));")
    shown = subprocess.run(["node", "--input-type=module", "-e", code], capture_output=True,
                           text=True, timeout=30, check=True).stdout
    assert shown.startswith("attempt 1 failed: KeyError: 1\n")
    assert "  flaky/lib/prices.py:6 in price_of\n      return TABLE[attempt]\n" in shown
    assert shown.rstrip().endswith("attempt 3 done")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_dashboard_shows_the_frames_run_raised_its_error_from(project):
    run("runfails")
    frames = describe("runfails")["error_traceback"]
    code = (f"import {{ frameLines }} from {json.dumps((STATIC / 'checklist.js').as_uri())};\n"
            f"console.log(frameLines({json.dumps(frames)}).join('\\n'));")
    shown = subprocess.run(["node", "--input-type=module", "-e", code], capture_output=True,
                           text=True, timeout=30, check=True).stdout
    assert "  runfails/index.py:7 in run\n      return price_of(9)\n" in shown


def test_an_rpc_error_answer_carries_the_frames_it_was_raised_from():
    from emulator.rpc.peer import error_to_wire
    from emulator.tracebacks import carry, traceback_fault, traceback_of

    def fail():
        raise ValueError("no")
    try:
        fail()
    except ValueError as exc:
        wire = error_to_wire(exc)
    assert traceback_fault(wire["traceback"]) is None
    assert wire["traceback"][-1]["source"] == 'raise ValueError("no")'
    rebuilt = carry(ValueError("no"), wire["traceback"])
    assert traceback_of(rebuilt) == wire["traceback"]
    # an error raised only in dynwf's own code carries none
    assert "traceback" not in error_to_wire(ValueError("made, not raised"))


@pytest.mark.parametrize("in_isolate", [True, False])
def test_only_an_isolates_error_answers_carry_frames(in_isolate):
    """The host never sends a line of its own code (the dispatcher's) to a tenant."""
    from emulator.rpc.peer import Peer
    sent: list[bytes] = []
    peer = Peer(sent.append, send_tracebacks=in_isolate)

    def fail():
        raise ValueError("no")
    try:
        fail()
    except ValueError as exc:
        peer._answer_error(1, exc)
    assert (b'"traceback"' in b"".join(sent)) is in_isolate


def test_a_module_failing_to_load_names_loading_and_each_gap_in_one_line(project):
    result = run("loadfails", "--json")
    assert result.exit_code == 1
    frames = describe("loadfails")["error_traceback"]
    # the tenant's two module frames; each gap before them (dynwf's and Python's import
    # machinery) is one entry
    assert [f.get("file") for f in frames] == [None, "loadfails/index.py", None,
                                              "loadfails/settings.py"]
    assert frames[-1]["source"] == 'VALUE = CONFIG["region"]'
    assert all(set(f["of"].split(" and ")) <= {"dynwf", "Python"} for f in frames if "of" in f)
    text = checklist_text(result.stdout)
    assert "loading the code raised it (most recent call last):" in text
    assert "run() raised it" not in text
    described = runner.invoke(app, ["instances", "describe", "loadfails-1"]).stdout
    assert "loading the code raised it" in described


def test_a_carried_traceback_follows_the_callers_own_frames():
    from emulator.tracebacks import carry, traceback_of
    tenant = [{"elided": 2, "of": "dynwf"},
              {"file": "acme/index.py", "line": 4, "function": "fetch", "source": "x()"}]

    def dispatcher_fetch():
        raise carry(ValueError("no"), tenant)
    try:
        dispatcher_fetch()
    except ValueError as exc:
        frames = traceback_of(exc)
    # this test's frame (a user's here) called the raising one; then the carried gap and frame
    assert [f.get("function") for f in frames] == [
        "test_a_carried_traceback_follows_the_callers_own_frames", "dispatcher_fetch", None,
        "fetch"]
    assert frames[2] == {"elided": 2, "of": "dynwf"} and frames[-1]["file"] == "acme/index.py"


def test_a_carried_traceback_joined_stays_within_the_checked_bounds():
    """The frames an isolate sends are checked on the host (each owner name at most 128
    characters, each count at most 10,000,000); joining them to the host's own merges runs of
    elided entries, and the merge stays within the same bounds however the isolate chose them."""
    from emulator.rules.limits import MAX_TRACEBACK_FRAMES, MAX_TRACEBACK_NUMBER
    from emulator.tracebacks import joined, traceback_fault
    carried = [{"elided": MAX_TRACEBACK_NUMBER, "of": f"{n:03d}" * 42}
               for n in range(MAX_TRACEBACK_FRAMES)]
    assert traceback_fault(carried) is None      # as the host received and accepted it
    own = [{"file": "src/entry.py", "line": 3, "function": "fetch", "source": "x()"}]
    frames = joined(own, carried)
    assert traceback_fault(frames) is None, traceback_fault(frames)
    assert frames[1]["elided"] == MAX_TRACEBACK_NUMBER and len(frames[1]["of"]) == 128


README_ORDER = '''"""Acme's order workflow."""

from workers import WorkflowEntrypoint
from lib.prices import price_of

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("price", config={"retries": {"limit": 1, "delay": "1 second"}})
        async def price(ctx):
            return price_of(7)
        return await price()
'''


def test_the_readme_shows_the_checklist_of_a_failing_step_as_run_prints_it(project):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = "$ dynwf run --tenant acme --id order-7\n"
    shown = readme[readme.index(command) + len(command):]
    shown = shown[:shown.index("```")].splitlines()
    (project / "tenants" / "acme" / "index.py").write_text(README_ORDER)
    (project / "tenants" / "acme" / "lib").mkdir()
    (project / "tenants" / "acme" / "lib" / "prices.py").write_text(PRICES.lstrip("\n"))
    result = runner.invoke(app, ["run", "--tenant", "acme", "--id", "order-7", "--json"])
    assert result.exit_code == 1
    printed = [line.rstrip() for line in checklist_text(
        result.stdout, tenant="acme", workflow="tenant-workflows").splitlines()]
    assert shown[:-1] == [line for line in printed if line], printed
    assert shown[-1] == "errored: KeyError: 7" and shown[-1] in result.stderr


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_dashboard_heads_the_frames_as_the_cli_does(project):
    from emulator.tracebacks import traceback_heading
    for tenant in ("runfails", "loadfails"):
        run(tenant)
        frames = describe(tenant)["error_traceback"]
        code = (f"import {{ tracebackHeading }} from "
                f"{json.dumps((STATIC / 'checklist.js').as_uri())};\n"
                f"console.log(tracebackHeading({json.dumps(frames)}));")
        shown = subprocess.run(["node", "--input-type=module", "-e", code], capture_output=True,
                               text=True, timeout=30, check=True).stdout.strip()
        assert shown == traceback_heading(frames)
    assert shown.startswith("loading the code raised it")

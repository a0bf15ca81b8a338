"""``dynwf instances ...`` and ``emulator.ops``: state built by a real engine on a real SQLite file,
then listed, described and controlled through the command line (Typer's CliRunner, and the
installed ``dynwf`` script where the printed error line or another process matters).

Instances are created as a tenant's wrapped binding creates them: params in the dispatcher
envelope, ids in the tenant's namespace (``scoped_instance_id``). The engine runs a small
workflow that unwraps the envelope itself and follows a plan named in its params.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator.engine import Control, Engine, Store, SystemClock, VirtualClock, WorkflowDefinition
from emulator.sdk.client import current_step
from emulator.errors import DynwfError
from emulator.ops import InstanceOps, resolve_id
from emulator.runtime.dynamic_workflows import scoped_instance_id, unwrap_params, wrap_params
from proc_workflows import EVENT_TYPE, Worker, event_payload, expected_output, wait_until

runner = CliRunner()
DYNWF = Path(sys.executable).with_name("dynwf")
WORKFLOW = "tenant-workflows"
CONFIG = """{
  "name": "instances-test",
  "main": "src/entry.py",
  "compatibility_date": "2026-04-01",
  "workflows": [{"name": "tenant-workflows", "binding": "WORKFLOWS", "class_name": "DynamicWorkflow"}],
}
"""
NO_RETRY = {"retries": {"limit": 0, "delay": "1 second"}}
# (tenant metadata or None for a raw instance, the id its tenant knows, plan), oldest first
INSTANCES = [
    ({"tenantId": "acme"}, "sleeper", "sleep"),
    ({"tenantId": "acme"}, "order-1", "wait"),
    ({"tenantId": "globex"}, "order-1", "wait"),
    ({"tenantId": "acme"}, "done-1", "done"),
    ({"tenantId": "globex"}, "broken", "fail"),
    ({"tenantId": "hooli", "plan": "pro"}, "job-9", "done"),
    (None, "plain-1", "done"),
]


# ---- the workflow the engine runs -------------------------------------------------------------

def _log(level: str, message: str) -> None:
    """What a step's print() becomes in an isolate: a line on the step that is running."""
    where = current_step.get()
    assert where is not None
    where[2].log(where[1], level, message)


class PlanWorkflow:
    async def run(self, event: dict[str, Any], step: Any) -> Any:
        unwrapped = unwrap_params(event["payload"])
        params = unwrapped.params if unwrapped else event["payload"]
        plan = params["plan"]

        @step.do("prepare")
        async def prepare():
            _log("info", f"preparing {plan}")
            return {"plan": plan}

        await prepare()
        if plan == "sleep":
            await step.sleep("nap", "1 day")

            @step.do("after")
            async def after():
                _log("warning", "woke up")
                return "awake"
            return {"slept": await after()}
        if plan == "wait":
            approval = await step.wait_for_event("approval", "approval", timeout="1 hour")
            return {"approved": approval["payload"]}
        if plan == "fail":
            @step.do("explode", config=NO_RETRY)
            async def explode():
                raise RuntimeError("boom")
            await explode()
        return {"ok": plan}


DEFINITIONS = [WorkflowDefinition(WORKFLOW, lambda row: PlanWorkflow())]


# ---- the project and its state ----------------------------------------------------------------

class State:
    """A project folder whose .dynwf/state.sqlite holds the instances of ``INSTANCES``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "wrangler.jsonc"
        self.config.write_text(CONFIG)
        self.db = root / ".dynwf" / "state.sqlite"
        # The command line stamps what it writes with the system clock. This engine's clock
        # stands still, ahead of it as a fast-forwarded clock is, so what the command line makes
        # due "now" (a wake) is due for the engine too.
        self.clock = VirtualClock(SystemClock().now_ms() + 3_600_000, flowing=False)
        self.ids: dict[tuple[str | None, str], str] = {}

    def create_all(self) -> None:
        store = Store(self.db)
        try:
            control = Control(store, self.clock)
            for metadata, visible, plan in INSTANCES:
                if metadata is None:
                    real = control.create(WORKFLOW, {"id": visible, "params": {"plan": plan}})
                else:
                    real = control.create(WORKFLOW, {"id": scoped_instance_id(metadata, visible),
                                                     "params": wrap_params({"plan": plan}, metadata)})
                self.ids[(metadata["tenantId"] if metadata else None, visible)] = real
        finally:
            store.close()

    def run_engine(self) -> None:
        """A fresh engine (as a new process would be) runs everything runnable now, without
        jumping the clock over sleeps."""
        engine = Engine(self.db, DEFINITIONS, clock=self.clock, poll_ms=20)
        try:
            asyncio.run(asyncio.wait_for(engine.drain(jump=False), 60))
        finally:
            engine.close()

    def id(self, tenant: str | None, visible: str) -> str:
        return self.ids[(tenant, visible)]

    def cli(self, *args: str):
        return runner.invoke(app, ["instances", *args, "--config", str(self.config)])

    def ok(self, *args: str) -> str:
        result = self.cli(*args)
        assert result.exit_code == 0, (result.output, result.exception)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def error(self, *args: str) -> DynwfError:
        result = self.cli(*args)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, DynwfError), result.exception
        return result.exception

    def status(self, tenant: str | None, visible: str) -> str:
        return self.json("describe", self.id(tenant, visible))["status"]


@pytest.fixture
def state(tmp_path: Path) -> State:
    built = State(tmp_path)
    built.create_all()
    built.run_engine()
    return built


def test_the_engine_left_each_instance_where_the_plan_says(state: State):
    statuses = {(row["tenant"], row["tenant_instance_id"] or row["id"]): row["status"]
                for row in state.json("list")}
    assert statuses == {
        ("acme", "sleeper"): "waiting", ("acme", "order-1"): "waiting",
        ("globex", "order-1"): "waiting", ("acme", "done-1"): "complete",
        ("globex", "broken"): "errored", ("hooli", "job-9"): "complete",
        (None, "plain-1"): "complete",
    }


# ---- list -------------------------------------------------------------------------------------

def test_list_json_shape_newest_first(state: State):
    rows = state.json("list")
    assert [r["id"] for r in rows] == [state.id(m["tenantId"] if m else None, v)
                                      for m, v, _ in reversed(INSTANCES)]
    first = rows[-1]
    assert set(first) == {"id", "tenant", "tenant_instance_id", "workflow", "status", "created_at",
                          "updated_at", "code_version"}
    assert first["tenant"] == "acme" and first["tenant_instance_id"] == "sleeper"
    assert first["id"] == scoped_instance_id({"tenantId": "acme"}, "sleeper")
    assert first["workflow"] == WORKFLOW and first["code_version"] is None
    assert first["updated_at"] >= first["created_at"] == state.clock.now_ms()
    plain = rows[0]
    assert (plain["id"], plain["tenant"], plain["tenant_instance_id"]) == ("plain-1", None, None)


def test_list_filters_by_tenant_status_and_limit(state: State):
    acme = state.json("list", "--tenant", "acme")
    assert sorted(r["tenant_instance_id"] for r in acme) == ["done-1", "order-1", "sleeper"]
    waiting = state.json("list", "--status", "waiting")
    assert sorted((r["tenant"], r["tenant_instance_id"]) for r in waiting) == [
        ("acme", "order-1"), ("acme", "sleeper"), ("globex", "order-1")]
    both = state.json("list", "--tenant", "globex", "--status", "waiting")
    assert [r["id"] for r in both] == [state.id("globex", "order-1")]
    assert state.json("list", "--tenant", "hooli")[0]["tenant_instance_id"] == "job-9"
    assert [r["tenant_instance_id"] for r in state.json("list", "--limit", "2")] == [None, "job-9"]
    assert state.json("list", "--tenant", "initech") == []
    assert state.json("list", "--workflow", "other") == []


def test_list_table(state: State):
    out = state.ok("list")
    for header in ("ID", "TENANT", "STATUS", "CREATED", "UPDATED"):
        assert header in out
    assert "WORKFLOW" not in out  # one workflow: the column would say nothing
    assert state.id("acme", "sleeper") in out and "plain-1" in out
    assert "errored" in out and "globex" in out
    assert "newest 2" in state.ok("list", "--limit", "2")
    assert "no instances match" in state.ok("list", "--tenant", "initech")


def test_list_rejects_an_unknown_status(state: State):
    result = state.cli("list", "--status", "sleeping")
    assert result.exit_code == 2
    assert "waitingForPause" in result.output


# ---- describe ---------------------------------------------------------------------------------

def test_describe_a_sleeping_instance(state: State):
    info = state.json("describe", "sleeper", "--tenant", "acme")
    assert info["id"] == state.id("acme", "sleeper")
    assert (info["status"], info["tenant"], info["tenant_instance_id"]) == ("waiting", "acme", "sleeper")
    assert info["metadata"] == {"tenantId": "acme"}
    assert info["params"] == {"plan": "sleep"}  # unwrapped: what the tenant passed
    assert info["output"] is None and info["error"] is None
    prepare, nap = info["steps"]
    assert (prepare["kind"], prepare["name"], prepare["status"], prepare["attempts"]) == \
        ("do", "prepare", "done", 1)
    assert prepare["result"] == {"plan": "sleep"} and prepare["duration_ms"] == 0
    assert (nap["kind"], nap["status"], nap["requested_ms"], nap["duration_ms"]) == \
        ("sleep", "sleeping", 86_400_000, None)
    [timer] = info["timers"]
    assert timer["kind"] == "sleep" and timer["step"] == {"kind": "sleep", "name": "nap", "count": 1}
    assert timer["due_at"] == state.clock.now_ms() + 86_400_000
    assert info["events_buffered"] == 0

    text = state.ok("describe", "sleeper", "--tenant", "acme")
    assert "✓" in text and "☾" in text and "sleep 24h" in text
    assert "due " in text and "(its id: sleeper)" in text


def test_describe_piped_prints_every_line_whole_and_unpadded(state: State):
    """Piped (CliRunner's output is no terminal), describe is as script-safe as list: the id and
    a value longer than 80 columns stay on one line, and no line ends in padding."""
    text = state.ok("describe", state.id("globex", "order-1"))
    long_id = state.id("globex", "order-1")
    assert any(line.startswith("instance") and line.endswith(long_id) for line in text.splitlines())
    assert [line for line in text.splitlines() if line != line.rstrip()] == []


def test_describe_waiting_errored_and_raw_instances(state: State):
    waiting = state.json("describe", state.id("globex", "order-1"))
    assert [(s["kind"], s["name"], s["status"], s["event_type"]) for s in waiting["steps"]] == [
        ("do", "prepare", "done", None), ("wait", "approval", "waiting", "approval")]
    assert waiting["steps"][1]["requested_ms"] == 3_600_000
    assert [t["kind"] for t in waiting["timers"]] == ["event_timeout"]
    text = state.ok("describe", state.id("globex", "order-1"))
    assert "⏳" in text
    # the timer in words, as the dashboard says it, not the store's label
    assert "event timeout" in text and "event_timeout" not in text

    broken = state.json("describe", "broken")
    assert broken["status"] == "errored"
    assert broken["error"] == {"name": "RuntimeError", "message": "boom"}
    explode = broken["steps"][-1]
    assert (explode["name"], explode["status"], explode["attempts"]) == ("explode", "failed", 1)
    assert explode["error"] == {"name": "RuntimeError", "message": "boom"}
    # each failed attempt is kept, with the frame its error was raised in
    assert [a["attempt"] for a in explode["failed_attempts"]] == [1]
    assert explode["failed_attempts"][0]["error"]["traceback"][-1]["source"] == \
        'raise RuntimeError("boom")'
    assert broken["timers"] == []
    text = state.ok("describe", "broken")
    assert "✗" in text and "RuntimeError: boom" in text

    plain = state.json("describe", "plain-1")
    assert (plain["tenant"], plain["metadata"], plain["params"]) == (None, None, {"plan": "done"})
    assert plain["output"] == {"ok": "done"}
    hooli = state.json("describe", "job-9")
    assert hooli["metadata"] == {"tenantId": "hooli", "plan": "pro"}
    assert '"plan": "pro"' in state.ok("describe", "job-9")  # metadata beyond tenantId is shown


# ---- id resolution ----------------------------------------------------------------------------

def test_id_resolution(state: State):
    sleeper = state.id("acme", "sleeper")
    assert state.json("describe", sleeper)["id"] == sleeper                  # the full id
    assert state.json("describe", "sleeper")["id"] == sleeper                # the only one so named
    assert state.json("describe", "order-1", "--tenant", "acme")["id"] == state.id("acme", "order-1")
    assert state.json("describe", "order-1", "--tenant", "globex")["id"] == state.id("globex", "order-1")
    # metadata with more than tenantId has another namespace; --tenant still finds it
    assert state.json("describe", "job-9", "--tenant", "hooli")["id"] == state.id("hooli", "job-9")
    # a full id of another tenant's instance is not that tenant's
    assert state.error("describe", sleeper, "--tenant", "globex").code == "instance.not_found"


def test_ambiguous_and_unknown_ids(state: State):
    ambiguous = state.error("describe", "order-1")
    assert ambiguous.code == "instance.ambiguous"
    assert state.id("acme", "order-1") in ambiguous.message
    assert state.id("globex", "order-1") in ambiguous.message
    assert "--tenant" in ambiguous.hint

    missing = state.error("pause", "nope")
    assert missing.code == "instance.not_found" and missing.hint == "dynwf instances list"
    assert state.error("describe", "order-1", "--tenant", "initech").code == "instance.not_found"
    # the id a tenant knows is matched whole, never a shorter tail of it
    assert state.error("wake", "1").code == "instance.not_found"
    assert state.error("wake", "der-1", "--tenant", "acme").code == "instance.not_found"
    # not a valid tenant id at all: simply not found
    assert state.error("describe", "bad id!", "--tenant", "acme").code == "instance.not_found"

    store = Store(state.db)
    try:
        assert resolve_id(store, "sleeper").id == state.id("acme", "sleeper")
        with pytest.raises(DynwfError) as raised:
            resolve_id(store, "order-1")
        assert raised.value.code == "instance.ambiguous"
    finally:
        store.close()


# ---- send-event and wake ----------------------------------------------------------------------

def test_send_event_completes_the_waiting_instance(state: State):
    out = state.ok("send-event", "order-1", "--tenant", "acme", "--type", "approval",
                   "--payload", '{"ok": true, "by": "ann"}')
    assert "sent 'approval'" in out and "queued" in out
    state.run_engine()
    info = state.json("describe", "order-1", "--tenant", "acme")
    assert info["status"] == "complete"
    assert info["output"] == {"approved": {"ok": True, "by": "ann"}}
    assert info["steps"][1]["result"]["payload"] == {"ok": True, "by": "ann"}
    assert state.status("globex", "order-1") == "waiting"  # the other tenant's order-1 untouched


def test_send_event_payload_from_a_file_and_buffering(state: State, tmp_path: Path):
    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "file"}')
    result = state.json("send-event", "sleeper", "--type", "later", "--payload", f"@{payload}")
    # the sleep is a day long, on an engine clock an hour ahead of the command line's
    assert result.pop("next") == (
        "waiting: due again in 25h, then a running dynwf dev runs it (none runs? dynwf run "
        "--resume sleeper --tenant acme); to run it now: dynwf instances wake sleeper --tenant "
        "acme --wait")
    assert result == {"id": state.id("acme", "sleeper"), "workflow": WORKFLOW, "tenant": "acme",
                      "tenant_instance_id": "sleeper", "status": "waiting", "type": "later"}
    info = state.json("describe", "sleeper")
    assert info["events_buffered"] == 1 and info["events_buffered_by_type"] == {"later": 1}
    assert "events buffered: 1 (later: 1)" in state.ok("describe", "sleeper")

    no_payload = state.json("send-event", "order-1", "--tenant", "globex", "--type", "approval")
    assert no_payload["status"] == "queued"
    state.run_engine()
    assert state.json("describe", "order-1", "--tenant", "globex")["output"] == {"approved": None}


def test_bad_payload_is_a_usage_error_with_the_position(state: State, tmp_path: Path):
    result = state.cli("send-event", "order-1", "--tenant", "acme", "--type", "approval",
                       "--payload", '{"ok": tru}')
    assert result.exit_code == 2
    assert "line 1 column 8" in result.output and "--payload" in result.output
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "a": 1,\n}')
    result = state.cli("send-event", "order-1", "--tenant", "acme", "--type", "approval",
                       "--payload", f"@{broken}")
    assert result.exit_code == 2 and "line 3 column 1" in result.output
    missing = state.cli("send-event", "order-1", "--tenant", "acme", "--type", "approval",
                        "--payload", f"@{tmp_path / 'nope.json'}")
    assert missing.exit_code == 2 and "cannot read" in missing.output
    bad_type = state.cli("send-event", "order-1", "--tenant", "acme", "--type", "no spaces")
    assert bad_type.exit_code == 2 and "--type" in bad_type.output
    assert state.status("acme", "order-1") == "waiting"  # nothing was sent


def test_send_event_to_a_finished_instance_is_refused(state: State):
    refused = state.error("send-event", "done-1", "--type", "approval")
    assert refused.code == "instance.not_running"


def test_every_change_says_what_moves_the_instance_next(state: State):
    target = ("order-1", "--tenant", "globex")
    assert "next: waiting for an event 'approval': dynwf instances send-event order-1 " \
           "--tenant globex --type approval" in state.ok("wake", *target)
    assert "next: paused: nothing runs it until dynwf instances resume order-1 --tenant globex" \
        in state.ok("pause", *target)
    resumed = state.ok("resume", *target)
    assert "next: queued: a running dynwf dev runs it" in resumed
    assert "none runs? start one: dynwf dev or run it here: dynwf run --resume order-1 " \
           "--tenant globex" in " ".join(resumed.split())
    sent = state.ok("send-event", "order-1", "--tenant", "acme", "--type", "approval")
    assert "next: queued: a running dynwf dev runs it" in sent
    state.run_engine()
    assert state.json("send-event", *target, "--type", "approval")["next"].startswith("queued:")
    state.run_engine()
    assert state.status("globex", "order-1") == "complete"
    assert state.json("terminate", "sleeper")["next"] == (
        "terminated: finished, nothing moves it; to run it again: "
        "dynwf instances restart sleeper --tenant acme")
    assert "next: running" in state.ok("restart", "sleeper")


def test_wake_ends_the_sleep_and_the_engine_proceeds(state: State):
    result = state.json("wake", "sleeper")
    assert result["woken"] == 1 and result["status"] == "waiting"
    state.run_engine()
    info = state.json("describe", "sleeper")
    assert info["status"] == "complete" and info["output"] == {"slept": "awake"}
    assert [s["status"] for s in info["steps"]] == ["done", "done", "done"]
    assert info["timers"] == []
    # a sleep cut short says so (docs/semantics.md §4.8): in describe's data, which the dashboard
    # and the admin API show, and in its text
    nap = info["steps"][1]
    assert nap["woken_early"] is True and nap["requested_ms"] == 86_400_000
    assert 0 <= nap["duration_ms"] < nap["requested_ms"]
    assert "woken after 0ms of 24h" in state.ok("describe", "sleeper")
    assert "nothing to wake in" in state.ok("wake", "order-1", "--tenant", "acme")
    assert state.error("wake", "sleeper").code == "instance.not_running"


# ---- pause, resume, terminate, restart --------------------------------------------------------

def test_pause_resume_terminate_restart(state: State):
    target = ("order-1", "--tenant", "globex")
    assert state.json("pause", *target)["status"] == "paused"
    assert state.status("globex", "order-1") == "paused"
    state.run_engine()
    assert state.status("globex", "order-1") == "paused"    # an engine leaves it alone
    assert "resumed" in state.ok("resume", *target)
    assert state.status("globex", "order-1") == "queued"
    state.run_engine()
    assert state.status("globex", "order-1") == "waiting"   # back at its event wait
    assert state.json("resume", *target)["status"] == "waiting"  # not paused: a no-op
    assert "✓ not paused, left as it is: " in state.ok("resume", *target)
    assert "_verb" not in state.json("resume", *target)

    assert state.json("terminate", *target)["status"] == "terminated"
    assert state.error("terminate", *target).code == "instance.cannot_terminate"
    assert state.json("pause", "done-1")["status"] == "complete"  # finished: a no-op

    assert state.json("restart", *target)["status"] == "running"
    info = state.json("describe", *target)
    assert info["steps"] == [] and info["timers"] == []
    state.run_engine()
    assert state.status("globex", "order-1") == "waiting"

    assert "restarted" in state.ok("restart", "broken")
    state.run_engine()
    broken = state.json("describe", "broken")
    assert broken["status"] == "errored" and broken["steps"][-1]["attempts"] == 1


# ---- logs -------------------------------------------------------------------------------------

def test_logs(state: State):
    out = state.ok("logs", "done-1")
    assert "[prepare] preparing done" in out
    lines = [json.loads(line) for line in state.ok("logs", "done-1", "--json").splitlines()]
    assert [(row["step"], row["level"], row["message"]) for row in lines] == [
        ({"kind": "do", "name": "prepare", "count": 1}, "info", "preparing done")]
    # --follow on a finished instance prints what there is and stops
    followed = state.ok("logs", "done-1", "--follow")
    assert "preparing done" in followed and "instance complete" in followed

    state.ok("wake", "sleeper")
    state.run_engine()
    ops = InstanceOps(Store(state.db))
    try:
        first = ops.logs("sleeper")
        assert [row["message"] for row in first["lines"]] == ["preparing sleep", "woke up"]
        assert first["finished"] and first["last_seq"] == first["lines"][-1]["seq"]
        newer = ops.logs("sleeper", after_seq=first["lines"][0]["seq"])
        assert [row["message"] for row in newer["lines"]] == ["woke up"]
        assert ops.logs("sleeper", after_seq=first["last_seq"])["lines"] == []
    finally:
        ops.close()
    assert "warning: woke up" in state.ok("logs", "sleeper")


# ---- help, missing state, the installed script ------------------------------------------------

COMMANDS = ["list", "describe", "pause", "resume", "terminate", "restart", "delete", "send-event",
            "wake", "logs"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_help_ends_with_an_example(command: str | None):
    result = runner.invoke(app, ["instances", *([command] if command else []), "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.stdout
    if command:
        assert "--config" in result.stdout and "--state-dir" in result.stdout
        example = result.stdout.split("Example:")[1].strip().splitlines()[0].strip()
        assert example.startswith(f"dynwf instances {command}")


def test_missing_state_file_is_a_clear_error(tmp_path: Path):
    """Acting on an instance of a project with no state is an error; listing is not: no state
    means no instances, `[]` with --json, exit 0 (a script can list before anything ran)."""
    (tmp_path / "wrangler.jsonc").write_text(CONFIG)
    listed = runner.invoke(app, ["instances", "list", "--json", "--config",
                                 str(tmp_path / "wrangler.jsonc")])
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []
    for args in (["describe", "x"], ["send-event", "x", "--type", "t"], ["logs", "x"]):
        result = runner.invoke(app, ["instances", *args, "--config", str(tmp_path / "wrangler.jsonc")])
        assert result.exit_code == 1
        assert getattr(result.exception, "code", None) == "state.not_found", result.exception
        assert "dynwf run or dynwf dev" in result.exception.hint
    assert not (tmp_path / ".dynwf").exists()  # nothing created by looking


def test_state_dir_option(state: State, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "wrangler.jsonc").write_text(CONFIG)
    args = ["instances", "list", "--json", "--config", str(elsewhere / "wrangler.jsonc")]
    assert json.loads(runner.invoke(app, args).stdout) == []          # no state there
    result = runner.invoke(app, [*args, "--state-dir", str(state.db.parent)])
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == len(INSTANCES)


def dynwf(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(DYNWF), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NO_COLOR": "1", **(env or {})})


def test_installed_script_prints_one_error_line_and_acts(state: State):
    missing = dynwf("instances", "describe", "nope", cwd=state.root)
    assert missing.returncode == 1
    [line] = missing.stderr.splitlines()
    assert line == ("error [instance.not_found] Instance 'nope' does not exist "
                    "(hint: dynwf instances list)")
    ambiguous = dynwf("instances", "terminate", "order-1", cwd=state.root)
    assert ambiguous.returncode == 1 and "[instance.ambiguous]" in ambiguous.stderr
    assert "Traceback" not in ambiguous.stderr

    bad = dynwf("instances", "send-event", "order-1", "--type", "approval", "--payload", "{",
                cwd=state.root)
    assert bad.returncode == 2 and "line 1 column 2" in bad.stderr

    done = dynwf("instances", "terminate", "order-1", "--tenant", "acme", "--json", cwd=state.root)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "terminated"
    listed = dynwf("instances", "list", "--status", "terminated", cwd=state.root)
    assert listed.returncode == 0 and "order-1" in listed.stdout

    empty = state.root / "empty"
    empty.mkdir()
    (empty / "wrangler.jsonc").write_text(CONFIG)
    no_state = dynwf("instances", "list", cwd=empty)
    assert no_state.returncode == 0 and no_state.stdout == "no instances yet\n"
    no_state = dynwf("instances", "describe", "x", cwd=empty)
    assert no_state.returncode == 1 and no_state.stderr.startswith("error [state.not_found]")


# ---- an engine in another process -------------------------------------------------------------

def test_send_event_reaches_an_engine_in_another_process(tmp_path: Path):
    """``dynwf instances send-event`` writes to the database; a worker process serving it notices
    on its next poll and runs the instance to the end, while ``logs --follow`` (a third process)
    stops by itself once the instance has finished."""
    (tmp_path / "wrangler.jsonc").write_text(CONFIG)
    db = tmp_path / ".dynwf" / "state.sqlite"
    log = tmp_path / "steps.log"
    worker = Worker(db, log, "w1", tmp_path, lease_ms=2000, poll_ms=250)
    follower = None
    try:
        worker.wait_ready()
        real = scoped_instance_id({"tenantId": "acme"}, "deploy-7")
        store = Store(db)
        try:
            Control(store, SystemClock()).create("waiter", {"id": real, "params": {"n": 7}})
        finally:
            store.close()

        def status() -> str:
            result = dynwf("instances", "describe", "deploy-7", "--tenant", "acme", "--json",
                           cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)["status"]
        assert wait_until(lambda: status() == "waiting", 30), worker.output()

        follower = subprocess.Popen(
            [str(DYNWF), "instances", "logs", "deploy-7", "--tenant", "acme", "--follow"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "NO_COLOR": "1"})
        sent = dynwf("instances", "send-event", "deploy-7", "--tenant", "acme", "--type", EVENT_TYPE,
                     "--payload", json.dumps(event_payload(real)), cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        assert wait_until(lambda: status() == "complete", 10), worker.output()

        info = json.loads(dynwf("instances", "describe", real, "--json", cwd=tmp_path).stdout)
        assert info["output"] == expected_output("waiter", 7, real)
        out, err = follower.communicate(timeout=10)
        assert follower.returncode == 0, err
        assert "instance complete" in out
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait(timeout=10)
        assert worker.stop() == 0


def test_wait_with_no_engine_running_says_nothing_ran_it(state: State):
    refused = state.error("send-event", "order-1", "--tenant", "globex", "--type", "approval",
                          "--wait", "--timeout", "0.3")
    assert refused.code == "instance.wait_timeout"
    assert "is still queued after 0.3s: nothing ran it: is dynwf dev running?" in refused.message
    assert "dynwf run --resume order-1 --tenant globex" in refused.hint


def test_wait_on_an_instance_that_rests_already_returns_at_once(state: State):
    resumed = state.ok("resume", "sleeper", "--tenant", "acme", "--wait", "--timeout", "0")
    assert resumed.count("(status waiting)") == 2 and "✓ now " in resumed


def test_send_event_wait_and_restart_wait_follow_an_engine_in_another_process(tmp_path: Path):
    """``--wait`` reads the state file until the worker process has run the instance to where
    it rests, and exits by where that is."""
    (tmp_path / "wrangler.jsonc").write_text(CONFIG)
    db = tmp_path / ".dynwf" / "state.sqlite"
    worker = Worker(db, tmp_path / "steps.log", "w1", tmp_path, lease_ms=2000, poll_ms=250)
    try:
        worker.wait_ready()
        real = scoped_instance_id({"tenantId": "acme"}, "deploy-8")
        store = Store(db)
        try:
            Control(store, SystemClock()).create("waiter", {"id": real, "params": {"n": 8}})
        finally:
            store.close()

        def status() -> str:
            return json.loads(dynwf("instances", "describe", "deploy-8", "--tenant", "acme",
                                    "--json", cwd=tmp_path).stdout)["status"]
        assert wait_until(lambda: status() == "waiting", 30), worker.output()

        sent = dynwf("instances", "send-event", "deploy-8", "--tenant", "acme", "--type",
                     EVENT_TYPE, "--payload", json.dumps(event_payload(real)), "--wait",
                     "--timeout", "30", "--json", cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["status"] == "complete"

        restarted = dynwf("instances", "restart", "deploy-8", "--tenant", "acme", "--wait",
                          "--timeout", "30", cwd=tmp_path)
        assert restarted.returncode == 0, restarted.stderr
        assert "restarted" in restarted.stdout and "(status waiting)" in restarted.stdout
        assert "next: waiting for an event" in restarted.stdout
    finally:
        assert worker.stop() == 0


def test_dynwf_logs_tails_every_instance_and_filters_by_tenant(tmp_path, monkeypatch):
    """`dynwf logs` (as `wrangler tail`): the lines of every instance, oldest first, each naming
    its tenant and the id the tenant knows; --tenant keeps one tenant's; NDJSON without a TTY."""
    from emulator.runner import RunOptions, RunSession
    from emulator.project import open_project
    assert runner.invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    for tenant in ("loud", "quiet"):
        (root / "tenants" / tenant).mkdir()
        (root / "tenants" / tenant / "index.py").write_text(
            "from workers import WorkflowEntrypoint\n\n"
            "class TenantWorkflow(WorkflowEntrypoint):\n"
            "    async def run(self, event, step):\n"
            "        @step.do('speak')\n"
            "        async def speak():\n"
            f"            print('{tenant} says hello')\n"
            "            return 1\n"
            "        return await speak()\n")
    project = open_project(root / "wrangler.jsonc", None)
    for tenant in ("loud", "quiet"):
        async def one(tenant=tenant):
            async with RunSession(project, RunOptions(tenant=tenant, params={},
                                                      instance_id=f"{tenant}-1")) as session:
                await session.create()
                return await session.drive()
        assert asyncio.run(one()).status == "complete"
    monkeypatch.chdir(root)
    every = runner.invoke(app, ["logs"])
    assert every.exit_code == 0, every.output
    lines = [json.loads(line) for line in every.stdout.splitlines()]
    assert [(line["tenant"], line["tenant_instance_id"], line["message"]) for line in lines] == [
        ("loud", "loud-1", "loud says hello"), ("quiet", "quiet-1", "quiet says hello")]
    assert lines[0]["step"] == {"kind": "do", "name": "speak", "count": 1}
    one_tenant = runner.invoke(app, ["logs", "--tenant", "quiet"])
    assert [json.loads(line)["message"] for line in one_tenant.stdout.splitlines()] == [
        "quiet says hello"]
    last = runner.invoke(app, ["logs", "--lines", "1"])
    assert [json.loads(line)["message"] for line in last.stdout.splitlines()] == [
        "quiet says hello"]


def test_dynwf_logs_on_a_terminal_says_when_there_is_nothing_to_show(state: State, monkeypatch):
    from dynwf_cli.console import console
    monkeypatch.setattr(console, "_force_terminal", True)
    monkeypatch.chdir(state.root)
    shown = runner.invoke(app, ["logs", "--tenant", "initech"])
    assert shown.exit_code == 0 and shown.stdout == "no log lines of tenant initech yet\n"
    monkeypatch.setattr(console, "_force_terminal", False)
    assert runner.invoke(app, ["logs", "--tenant", "initech"]).stdout == ""  # a script: nothing

"""``dynwf run``: a project made by ``dynwf init`` plus tenants written for each case, run through
Typer's CliRunner and through the installed ``dynwf`` (docs/architecture.md §9 exit codes)."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app

runner = CliRunner()
DYNWF = str(Path(sys.executable).with_name("dynwf"))

LONG_SLEEP = '''
from workers import WorkflowEntrypoint

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("before")
        async def before():
            return event["payload"].get("n", 0) + 1

        first = await before()
        await step.sleep("wait", "365 days")

        @step.do("after")
        async def after():
            return first * 10
        return {"after": await after()}
'''

FAILING = '''
from workers import WorkflowEntrypoint
from workers.workflows import NonRetryableError

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("charge card", config={"retries": {"limit": 2, "delay": "1 minute"}})
        async def charge(ctx):
            if ctx["attempt"] < 3:
                raise ValueError(f"gateway timeout on attempt {ctx['attempt']}")
            raise NonRetryableError("card declined")
        return await charge()
'''


@pytest.fixture()
def project(tmp_path, monkeypatch):
    assert runner.invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    root = tmp_path / "demo"
    for name, source in (("sleepy", LONG_SLEEP), ("failing", FAILING)):
        (root / "tenants" / name).mkdir()
        (root / "tenants" / name / "index.py").write_text(source)
    monkeypatch.chdir(root)
    return root


def result_line(stdout: str) -> dict:
    results = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [line for line in results if line["kind"] == "result"][-1]


def test_run_completes_and_prints_the_output(project):
    result = runner.invoke(app, ["run", "--tenant", "acme", "--params", '{"name": "Alice"}'])
    assert result.exit_code == 0, result.output
    final = result_line(result.stdout)
    assert final["status"] == "complete"
    assert final["output"]["greeting"] == "Hello, Alice!"


def test_a_365_day_sleep_is_fast_forwarded(project):
    started = time.monotonic()
    completed = subprocess.run([DYNWF, "run", "--tenant", "sleepy", "--params", '{"n": 4}'],
                               capture_output=True, text=True, timeout=60, cwd=project)
    elapsed = time.monotonic() - started
    assert completed.returncode == 0, completed.stderr
    assert result_line(completed.stdout)["output"] == {"after": 50}
    progress = [json.loads(line) for line in completed.stdout.splitlines()]
    sleeping = next(p for p in progress if p["kind"] == "step.sleeping")
    woken = next(p for p in progress if p["kind"] == "step.woken")
    # the instance's own timer ended its wait a year early; no clock moved, no time lies
    assert woken["early_ms"] >= 365 * 86_400_000 - 60_000
    assert woken["at"] - sleeping["at"] < 60_000
    print(f"365-day sleep run took {elapsed:.2f}s")
    assert elapsed < 5  # fast-forward skips the year (a bound, not a benchmark)


def test_an_errored_run_exits_1_with_the_error(project):
    result = runner.invoke(app, ["run", "--tenant", "failing"])
    assert result.exit_code == 1
    final = result_line(result.stdout)
    assert final["status"] == "errored"
    assert final["error"] == {"name": "NonRetryableError", "message": "card declined"}
    assert "card declined" in result.stderr


def test_waiting_for_an_event_exits_3_with_the_command_to_continue(project):
    completed = subprocess.run([DYNWF, "run", "--tenant", "globex", "--id", "deploy-1"],
                               capture_output=True, text=True, timeout=60, cwd=project,
                               stdin=subprocess.DEVNULL)
    assert completed.returncode == 3, completed.stderr
    assert result_line(completed.stdout)["waiting_for"] == ["deploy-approval"]
    assert "dynwf instances send-event deploy-1 --tenant globex --type deploy-approval" in completed.stderr
    # the command printed to continue it here does continue it, as printed
    lines = completed.stderr.splitlines()
    printed = lines[lines.index("waiting for event 'deploy-approval'; continue it here with:") + 1]
    args = shlex.split(printed)
    assert args[0] == "dynwf", printed
    continued = subprocess.run([DYNWF, *args[1:]], capture_output=True, text=True, timeout=60,
                               cwd=project, stdin=subprocess.DEVNULL)
    assert continued.returncode == 0, continued.stderr
    assert result_line(continued.stdout)["status"] == "complete"


def test_a_given_event_is_sent_when_the_instance_waits_for_it(project):
    result = runner.invoke(app, ["run", "--tenant", "globex", "--event",
                                 'deploy-approval={"ok": true, "by": "ann"}'])
    assert result.exit_code == 0, result.output
    assert result_line(result.stdout)["output"]["deployed"] is True


@pytest.mark.parametrize("args, fragment", [
    (["--params", "{bad"], "--params is not valid JSON"),
    (["--event", "no-equals-sign"], "must look like TYPE=JSON"),
    (["--workflow", "nope"], "no workflow named 'nope'"),
])
def test_usage_errors_exit_2(project, args, fragment):
    from emulator.errors import UsageError
    result = runner.invoke(app, ["run", "--tenant", "acme", *args])
    assert isinstance(result.exception, UsageError)  # main() maps it to exit 2, shown below
    assert fragment in str(result.exception)
    completed = subprocess.run([DYNWF, "run", "--tenant", "acme", *args], capture_output=True,
                               text=True, timeout=60, cwd=project)
    assert completed.returncode == 2
    assert fragment in completed.stderr
    assert "Traceback" not in completed.stderr


def test_an_unknown_tenant_is_a_usage_error_listing_the_tenants(project):
    completed = subprocess.run([DYNWF, "run", "--tenant", "initech"], capture_output=True,
                               text=True, timeout=60, cwd=project)
    assert completed.returncode == 2
    assert "no tenant 'initech'" in completed.stderr and "acme" in completed.stderr


def test_run_help_has_an_example():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    assert "dynwf run --tenant acme" in result.stdout


def test_run_says_at_start_which_isolation_layers_are_missing(project, monkeypatch):
    """README, 'Isolates and tenant isolation': a layer the machine lacks (here switched off on
    purpose) is named once on standard error; the run itself goes on in the remaining layers."""
    monkeypatch.setenv("DYNWF_WEAKEN_ISOLATION", "seccomp,landlock")
    result = runner.invoke(app, ["run", "--tenant", "acme", "--params", '{"name": "Alice"}'])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("isolation is weaker on this machine") == 1
    assert "seccomp (no sockets, processes or machine-changing calls): switched off" in result.stderr
    assert "Landlock" in result.stderr
    assert result_line(result.stdout)["status"] == "complete"


def test_run_on_a_machine_with_every_layer_says_nothing_about_isolation(project, monkeypatch):
    from emulator.isolates.sandbox import missing_layers
    monkeypatch.delenv("DYNWF_WEAKEN_ISOLATION", raising=False)
    result = runner.invoke(app, ["run", "--tenant", "acme", "--params", '{"name": "Alice"}'])
    assert result.exit_code == 0, result.output
    assert ("isolation is weaker" in result.stderr) == bool(missing_layers())


def test_run_takes_a_100_character_id_and_refuses_an_invalid_one_as_usage(project):
    """docs/semantics.md, "Instances and statuses" and "Tenants and the dispatcher": a tenant's
    id may use the platform's 100 characters; an invalid --id is a usage error (exit 2)."""
    longest = "x" * 100
    result = runner.invoke(app, ["run", "--tenant", "acme", "--id", longest,
                                 "--params", '{"name": "Alice"}'])
    assert result.exit_code == 0, result.output
    assert result_line(result.stdout)["tenant_instance"] == longest
    listed = runner.invoke(app, ["instances", "list", "--tenant", "acme", "--json"])
    assert longest in listed.stdout
    for bad in ("bad id!", "x" * 101):
        refused = subprocess.run([DYNWF, "run", "--tenant", "acme",
                                  "--id", bad], capture_output=True, text=True, cwd=project)
        assert refused.returncode == 2, refused.stderr
        assert "is not a valid instance id" in refused.stderr


def test_run_from_a_tenants_folder_finds_the_project_above(project, monkeypatch):
    monkeypatch.chdir(project / "tenants" / "acme")
    result = runner.invoke(app, ["run", "--tenant", "acme", "--params", '{"name": "Alice"}'])
    assert result.exit_code == 0, result.output
    assert result_line(result.stdout)["status"] == "complete"
    assert (project / ".dynwf" / "state.sqlite").is_file()     # state beside the config


def test_ctrl_c_says_where_the_instance_was_left_and_exits_130(project):
    process = subprocess.Popen([DYNWF, "run", "--tenant", "sleepy", "--id", "nap-1", "--real-time"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=project, stdin=subprocess.DEVNULL)
    try:
        for line in process.stdout:      # NDJSON progress: wait until the instance sleeps
            event = json.loads(line)
            if event["kind"] == "instance.status" and event["status"] == "waiting":
                break
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted: instance nap-1 of tenant sleepy is kept in the state file" in stderr
    assert "next: waiting: due again in 364d" in stderr or "next: waiting: due again in 365d" in stderr
    described = subprocess.run([DYNWF, "instances", "describe", "nap-1", "--tenant", "sleepy",
                                "--json"], capture_output=True, text=True, timeout=60, cwd=project)
    assert json.loads(described.stdout)["status"] == "waiting"
    # with no engine running, the next move names the run that takes it on here; wake --wait
    # does it
    assert "dynwf run --resume nap-1 --tenant sleepy" in stderr
    woken = runner.invoke(app, ["instances", "wake", "nap-1", "--tenant", "sleepy", "--wait"])
    assert woken.exit_code == 0, woken.output
    assert "running it here" in woken.output and "(status complete)" in woken.output


def test_a_config_with_check_errors_is_refused_with_its_diagnostics(project):
    config = project / "wrangler.jsonc"
    config.write_text(config.read_text().replace('"worker_loaders"', '"worker_loader"'))
    completed = subprocess.run([DYNWF, "run", "--tenant", "acme"], capture_output=True,
                               text=True, timeout=60, cwd=project)
    assert completed.returncode == 1
    assert "SimpleNamespace" not in completed.stderr
    lines = completed.stderr.splitlines()
    assert any(line.split()[1:3] == ["warning", "DW001"] and
               "did you mean 'worker_loaders'?" in line for line in lines), lines
    assert any(line.split()[1:3] == ["error", "DW103"] for line in lines), lines
    assert lines[-1] == "dynwf run: 1 error in the project; fix it first (dynwf check lists every problem)"
    assert completed.stdout == ""


def test_only_the_run_tenants_errors_refuse_a_run(project):
    (project / "tenants" / "sleepy" / "net.py").write_text("import requests\n")
    refused = runner.invoke(app, ["run", "--tenant", "sleepy"])
    assert refused.exit_code == 1
    assert "DW208" in refused.stderr and "from workers import fetch" in refused.stderr
    result = runner.invoke(app, ["run", "--tenant", "failing"])
    assert result.exit_code == 1 and "DW208" not in result.stderr   # errored, as written
    assert result_line(result.stdout)["status"] == "errored"


def test_an_event_type_no_step_waits_for_is_named_with_the_closest_awaited_one(project):
    result = runner.invoke(app, ["run", "--tenant", "globex", "--event",
                                 'deploy-aproval={"ok": true}'])
    assert result.exit_code == 3, result.output         # left waiting: the event never matched
    assert ("warning: --event 'deploy-aproval': no step of tenant globex's workflow waits for it "
            "(it waits for: deploy-approval); did you mean 'deploy-approval'?") in \
        " ".join(result.stderr.split())
    sent = runner.invoke(app, ["run", "--tenant", "globex", "--event", 'deploy-approval={"ok": true}'])
    assert sent.exit_code == 0 and "--event" not in sent.stderr


def test_an_event_payload_that_is_not_json_shows_the_syntax(project):
    completed = subprocess.run([DYNWF, "run", "--tenant", "globex", "--event", "deploy-approval={ok"],
                               capture_output=True, text=True, timeout=60, cwd=project)
    assert completed.returncode == 2
    assert "--event deploy-approval is not valid JSON" in completed.stderr
    assert """quote it for the shell: --event 'deploy-approval={"key": "value"}'""" in \
        completed.stderr


ENV_VARS = '''
from workers import WorkflowEntrypoint

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        return {"greeting": self.env.GREETING, "token": self.env.TOKEN, "mode": self.env.MODE}
'''


def test_dev_vars_and_var_options_reach_the_dispatchers_env_with_wranglers_precedence(project):
    entry = project / "src" / "entry.py"
    old = '"env": {"WORKFLOWS": wrap_workflow_binding({"tenantId": tenant_id})},'
    assert old in entry.read_text()
    # This dispatcher hands three of its env values on to the tenant, whose output shows them.
    entry.write_text(entry.read_text().replace(old, (
        '"env": {"WORKFLOWS": wrap_workflow_binding({"tenantId": tenant_id}), '
        '"GREETING": env.GREETING, "TOKEN": env.TOKEN, "MODE": env.MODE},')))
    config = project / "wrangler.jsonc"
    config.write_text(config.read_text().replace(
        '"main":', '"vars": {"GREETING": "config", "TOKEN": "config", "MODE": "config"},\n  "main":'))
    (project / ".dev.vars").write_text('# local secrets\nTOKEN="dev vars"\nexport GREETING=dev\n')
    (project / "tenants" / "envy").mkdir()
    (project / "tenants" / "envy" / "index.py").write_text(ENV_VARS)
    completed = subprocess.run([DYNWF, "run", "--tenant", "envy", "--var", "GREETING:cli:1"],
                               capture_output=True, text=True, timeout=60, cwd=project)
    assert completed.returncode == 0, completed.stderr
    assert result_line(completed.stdout)["output"] == {"greeting": "cli:1", "token": "dev vars",
                                                       "mode": "config"}


def test_a_var_without_a_colon_is_a_usage_error(project):
    completed = subprocess.run([DYNWF, "run", "--tenant", "acme", "--var", "GREETING=x"],
                               capture_output=True, text=True, timeout=60, cwd=project)
    assert completed.returncode == 2
    assert "--var 'GREETING=x' must look like KEY:VALUE" in completed.stderr


def test_resume_continues_a_waiting_instance_with_an_event(project):
    waiting = subprocess.run([DYNWF, "run", "--tenant", "globex", "--id", "deploy-2"],
                             capture_output=True, text=True, timeout=60, cwd=project,
                             stdin=subprocess.DEVNULL)
    assert waiting.returncode == 3, waiting.stderr
    assert ("dynwf run --resume deploy-2 --tenant globex --event deploy-approval='{}'"
            in waiting.stderr)
    resumed = subprocess.run([DYNWF, "run", "--resume", "deploy-2", "--tenant", "globex",
                              "--event", 'deploy-approval={"ok": true, "by": "ann"}'],
                             capture_output=True, text=True, timeout=60, cwd=project,
                             stdin=subprocess.DEVNULL)
    assert resumed.returncode == 0, resumed.stderr
    final = result_line(resumed.stdout)
    assert final["status"] == "complete" and final["tenant_instance"] == "deploy-2"
    assert final["output"]["deployed"] is True
    listed = runner.invoke(app, ["instances", "list", "--tenant", "globex", "--json"])
    rows = [r for r in json.loads(listed.stdout) if r["tenant_instance_id"] == "deploy-2"]
    assert [r["status"] for r in rows] == ["complete"]     # the same instance, not a second one


def test_resume_without_the_event_is_left_waiting_again(project):
    assert runner.invoke(app, ["run", "--tenant", "globex", "--id", "deploy-3"]).exit_code == 3
    again = runner.invoke(app, ["run", "--resume", "deploy-3", "--tenant", "globex"])
    assert again.exit_code == 3, again.output
    assert result_line(again.stdout)["waiting_for"] == ["deploy-approval"]


def test_resume_of_an_unknown_id_is_a_usage_error(project):
    runner.invoke(app, ["run", "--tenant", "acme", "--params", '{"name": "Alice"}'])
    completed = subprocess.run([DYNWF, "run", "--resume", "nope-1", "--tenant", "acme"],
                               capture_output=True, text=True, timeout=60, cwd=project)
    assert completed.returncode == 2, completed.stderr
    assert "--resume: Instance 'nope-1' of tenant 'acme' does not exist" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_resume_refuses_a_finished_instance_naming_restart(project):
    assert runner.invoke(app, ["run", "--tenant", "acme", "--id", "done-1",
                               "--params", '{"name": "Alice"}']).exit_code == 0
    completed = subprocess.run([DYNWF, "run", "--resume", "done-1", "--tenant", "acme"],
                               capture_output=True, text=True, timeout=60, cwd=project)
    assert completed.returncode == 2, completed.stderr
    assert "is complete" in completed.stderr
    assert "dynwf instances restart done-1 --tenant acme" in " ".join(completed.stderr.split())


def test_resume_refuses_a_paused_instance_naming_instances_resume(project):
    assert runner.invoke(app, ["run", "--tenant", "globex", "--id", "deploy-4"]).exit_code == 3
    assert runner.invoke(app, ["instances", "pause", "deploy-4", "--tenant", "globex"]).exit_code == 0
    refused = runner.invoke(app, ["run", "--resume", "deploy-4", "--tenant", "globex"])
    assert refused.exit_code != 0
    assert "is paused" in str(refused.exception)
    assert "dynwf instances resume deploy-4 --tenant globex" in refused.exception.hint


@pytest.mark.parametrize("args", [["--params", "{}"], ["--id", "x-1"]])
def test_resume_with_params_or_id_is_a_usage_error(project, args):
    completed = subprocess.run([DYNWF, "run", "--resume", "x-1", "--tenant", "acme", *args],
                               capture_output=True, text=True, timeout=60, cwd=project)
    assert completed.returncode == 2, completed.stderr
    assert f"--resume cannot be given with {args[0]}" in completed.stderr


def test_resume_takes_on_an_instance_queued_by_an_interrupted_run(project):
    """Ctrl-C hands the instance back queued; next: names dynwf run --resume, which finishes it."""
    process = subprocess.Popen([DYNWF, "run", "--tenant", "sleepy", "--id", "nap-2", "--real-time",
                                "--params", '{"n": 1}'],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=project, stdin=subprocess.DEVNULL)
    try:
        for line in process.stdout:
            event = json.loads(line)
            if event["kind"] == "instance.status" and event["status"] == "waiting":
                break
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    finally:
        process.kill()
    resumed = subprocess.run([DYNWF, "run", "--resume", "nap-2", "--tenant", "sleepy"],
                             capture_output=True, text=True, timeout=60, cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    assert result_line(resumed.stdout)["output"] == {"after": 20}


def test_instances_wait_with_no_engine_running_drives_the_instance_here(project):
    """send-event/restart ... --wait: nothing else runs the instance, so the command runs it
    here (as dynwf run --resume does) to its end or next wait, and says where it rests."""
    assert runner.invoke(app, ["run", "--tenant", "globex", "--id", "deploy-9"]).exit_code == 3
    sent = runner.invoke(app, ["instances", "send-event", "deploy-9", "--tenant", "globex",
                               "--type", "deploy-approval", "--payload", '{"ok": true}',
                               "--wait", "--timeout", "30"])
    assert sent.exit_code == 0, sent.output
    assert "no running dynwf dev took it: running it here" in sent.output
    assert "now" in sent.output and "(status complete)" in sent.output
    described = runner.invoke(app, ["instances", "describe", "deploy-9", "--tenant", "globex",
                                    "--json"])
    assert json.loads(described.stdout)["output"]["deployed"] is True

    restarted = runner.invoke(app, ["instances", "restart", "deploy-9", "--tenant", "globex",
                                    "--wait", "--json"])
    assert restarted.exit_code == 0, restarted.output
    # --json: the one document of where it rests, nothing else on stdout
    rests = json.loads(restarted.stdout)
    assert rests["status"] == "waiting"
    assert rests["next"].startswith("waiting for an event 'deploy-approval'")


def test_piped_output_is_whole_rows_and_one_json_style(project):
    """Without a terminal: instances list prints each row whole (a long name is found by grep
    on the same line as its tenant), and run's result line is in the same compact JSON form as
    its event lines."""
    name = "nightly-deploy-of-the-globex-storefront-" + "x" * 40
    ran = subprocess.run([DYNWF, "run", "--tenant", "globex", "--id", name], capture_output=True,
                         text=True, timeout=120, cwd=project, stdin=subprocess.DEVNULL,
                         env={**os.environ, "COLUMNS": "80"})
    assert ran.returncode == 3, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines and all(line == json.dumps(json.loads(line), ensure_ascii=False,
                                            separators=(",", ":")) for line in lines), lines
    assert json.loads(lines[-1])["kind"] == "result"
    listed = subprocess.run([DYNWF, "instances", "list"], capture_output=True, text=True,
                            timeout=60, cwd=project, env={**os.environ, "COLUMNS": "80"})
    row = [line for line in listed.stdout.splitlines() if name in line]
    assert len(row) == 1 and " globex " in row[0] and " waiting " in row[0], listed.stdout


@pytest.mark.parametrize(("command", "said"), [
    (["run"], "otherwise (piped, in CI) or with --json, NDJSON"),
    (["dev"], "when stdout is not a terminal, or with --json, everything is printed as NDJSON"),
    (["logs"], "Without a terminal, or with --json, one JSON object per line"),
    (["instances", "list"], "Without a terminal each row is printed whole"),
    (["check"], "in the current folder or, as wrangler does, the nearest folder above it"),
])
def test_help_says_what_is_printed_without_a_terminal(command, said):
    shown = " ".join(runner.invoke(app, [*command, "--help"]).stdout.split())
    assert said in shown, shown


def test_a_long_output_is_wrapped_on_a_terminal_not_cut(monkeypatch):
    from dynwf_cli.commands.run import _report
    from dynwf_cli.console import console
    from emulator import RunResult
    reason = "the requirements did not install: " + " ".join(f"word{n}" for n in range(40))
    monkeypatch.setattr(console, "_width", 60)
    with console.capture() as captured:
        _report(RunResult("i-1", "i-1", "ci", "complete", {"reason": reason}), None,
                as_json=False, live_view=True)
    shown = captured.get()
    assert all(len(line) <= 60 for line in shown.splitlines())
    assert "word39" in shown and " ".join(shown.split()).count("word") == 40


ESCAPING = '''
from workers import WorkflowEntrypoint
from workers.workflows import NonRetryableError


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("loud")
        async def loud():
            print("title \\x1b]0;pwned\\x07 then a clipboard write \\x1b]52;c;cGF3bmVk\\x07")
            raise NonRetryableError("and the screen cleared \\x1b[2J\\x1b[H in an error")
        return await loud()
'''


def test_a_tenants_escape_sequences_are_shown_on_the_terminal_never_obeyed(project):
    """A tenant's log lines and error messages are its own text (any bytes, once it has switched
    off the Python checks): on a terminal, `dynwf run` shows their control characters (␛) and
    sends none of them, so no tenant sets the window title, writes the clipboard or clears the
    screen (docs/reliability.md, hostile tenant code)."""
    import pty
    import select
    (project / "tenants" / "escaping").mkdir()
    (project / "tenants" / "escaping" / "index.py").write_text(ESCAPING)
    pid, fd = pty.fork()
    if pid == 0:   # the child: a terminal on both ends, as a person would have
        os.execve(DYNWF, [DYNWF, "run", "--tenant", "escaping", "--params", "{}"],
                  {**os.environ, "NO_COLOR": "1"})
    deadline, seen = time.monotonic() + 60, b""
    while True:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"no end in time: {seen!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:    # the child closed its terminal
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1, seen
    shown = seen.decode()
    # what the tenant wrote is there, its control characters drawn, not sent
    assert "title ␛]0;pwned" in shown and "screen cleared ␛[2J␛[H" in shown, shown
    for sent in ("\x1b]0;pwned", "\x1b]52;", "\x1b[2J", "\x07"):
        assert sent not in shown, (sent, shown)

"""The examples, run end to end as a newcomer runs them: through the installed ``dynwf`` command,
on a copy of each example (so state and written files stay out of the repository).

Each test asserts what the example's README says you will see: the final status, the output,
the files a capability wrote, and for ``agent-plans`` that a plan waiting for a human survives
a ``dynwf dev`` killed with SIGKILL and completes when approved after the restart.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DYNWF = Path(sys.executable).with_name("dynwf")
NEW_EXAMPLES = ["saas-automations", "agent-plans", "ci-pipelines", "job-system"]

pytestmark = pytest.mark.skipif(not DYNWF.is_file(), reason="the dynwf command is not installed")


# ---- helpers ------------------------------------------------------------------------------------

def copy_example(name: str, tmp_path: Path) -> Path:
    project = tmp_path / name
    shutil.copytree(EXAMPLES / name, project,
                    ignore=shutil.ignore_patterns(".dynwf", "out", "__pycache__", ".pytest_cache"),
                    ignore_dangling_symlinks=True)
    # ci-pipelines' sample repositories keep their pipeline in .dynwf/ci.py: copy those back.
    for pipeline in (EXAMPLES / name).glob("repos/*/.dynwf"):
        shutil.copytree(pipeline, project / pipeline.relative_to(EXAMPLES / name))
    return project


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYNWF_")}
    env.update(NO_COLOR="1", COLUMNS="200")
    return env


def dynwf(project: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(DYNWF), *args], cwd=project, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def run(project: Path, tenant: str, params: Any = None, events: dict[str, Any] | None = None,
        expect: int = 0) -> tuple[dict, list[dict]]:
    """``dynwf run --json``: the final result line and the progress lines before it."""
    args = ["run", "--tenant", tenant, "--json"]
    if params is not None:
        args += ["--params", json.dumps(params)]
    for event_type, payload in (events or {}).items():
        args += ["--event", f"{event_type}={json.dumps(payload)}"]
    done = dynwf(project, *args)
    assert done.returncode == expect, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["kind"] == "result", done.stdout[-3000:]
    return lines[-1], lines[:-1]


def describe(project: Path, instance: str, tenant: str) -> dict:
    done = dynwf(project, "instances", "describe", instance, "--tenant", tenant, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def poll(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """``check()``'s first truthy value, asked again every 0.1 s until ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def wait_finished(project: Path, instance: str, tenant: str, what: str) -> dict:
    """The instance's description once it is complete, errored or terminated."""
    final = poll(lambda: (d := describe(project, instance, tenant))["status"]
                 in ("complete", "errored", "terminated") and d, what)
    assert final["status"] == "complete", final["error"]
    return final


def steps_named(progress: list[dict], kind: str, name: str) -> list[dict]:
    return [p for p in progress if p["kind"] == kind and p.get("step", {}).get("name") == name]


def http(method: str, url: str, body: Any = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class DevServer:
    """``dynwf dev --json --port 0 --no-reload`` in its own session, its output in a file."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.log = project / f"dev-{time.monotonic_ns()}.out"
        self._out = self.log.open("w")
        self.process = subprocess.Popen(
            [str(DYNWF), "dev", "--json", "--port", "0", "--no-reload"], cwd=project, env=_env(),
            stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        ready = poll(self._ready, "dynwf dev to be ready", timeout=30)
        self.url = ready["url"]

    def _ready(self) -> dict | None:
        if self.process.poll() is not None:
            raise AssertionError(f"dynwf dev exited with {self.process.returncode}:\n"
                                 + self.log.read_text())
        for line in self.log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("kind") == "server.ready":
                return json.loads(line)
        return None

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown code runs."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._out.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._out.close()


# ---- every example --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NEW_EXAMPLES)
def test_example_passes_check_strict(name, tmp_path):
    done = dynwf(tmp_path, "check", "--config", str(EXAMPLES / name / "wrangler.jsonc"),
                 "--strict", "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == []


# ---- saas-automations -----------------------------------------------------------------------------

def test_saas_acme_onboarding_branches_on_an_earlier_step(tmp_path):
    project = copy_example("saas-automations", tmp_path)
    result, progress = run(project, "acme", {"email": "ada@example.com", "projects_created": 2})
    assert result["status"] == "complete"
    assert result["output"] == {
        "welcome_delivered": True, "path": "upgrade", "offer": "pro-trial-14-days",
        "to": "ada@example.com",
        "nudge": {"channel": "email",
                  "text": "Ada, nice work on your first project! Here are three tips."}}
    sleep = steps_named(progress, "step.sleeping", "wait a day")
    # "at" is when the event was published, a millisecond or so after "until" was computed
    assert len(sleep) == 1 and 86_399_000 <= sleep[0]["until"] - sleep[0]["at"] <= 86_400_000

    result, progress = run(project, "acme", {"email": "bob@bounce.example"})
    assert result["output"]["path"] == "call"
    assert result["output"]["nudge"]["channel"] == "sms"       # the welcome email bounced
    assert steps_named(progress, "step.committed", "book onboarding call")
    assert not steps_named(progress, "step.committed", "offer upgrade")


def test_saas_globex_approval_chain(tmp_path):
    project = copy_example("saas-automations", tmp_path)
    result, _ = run(project, "globex", {"item": "laptop", "amount": 2400},
                    events={"manager-approval": {"approved": True},
                            "finance-approval": {"approved": True}})
    assert result["output"]["status"] == "approved"
    assert result["output"]["decisions"] == {"manager": True, "finance": True}
    assert result["output"]["purchase_order"] == "PO-laptop-2400"

    result, _ = run(project, "globex", {"item": "chair", "amount": 300},
                    events={"manager-approval": {"approved": False}})
    assert result["output"]["status"] == "rejected" and result["output"]["by"] == "manager"

    # Nobody answers for finance: the run stops, waiting, with exit status 3.
    result, _ = run(project, "globex", {"item": "server", "amount": 9000},
                    events={"manager-approval": {"approved": True}}, expect=3)
    assert result["status"] == "waiting" and result["waiting_for"] == ["finance-approval"]


def test_saas_globex_timeout_escalates_under_dynwf_dev(tmp_path):
    project = copy_example("saas-automations", tmp_path)
    server = DevServer(project)
    try:
        request = urllib.request.Request(
            server.url + "/", method="POST", headers={"x-tenant-id": "globex"},
            data=json.dumps({"item": "server", "amount": 5000,
                             "finance_timeout": "1 second"}).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            instance = json.loads(response.read())["id"]
        sent = dynwf(project, "instances", "send-event", instance, "--tenant", "globex",
                     "--type", "manager-approval", "--payload", '{"approved": true}')
        assert sent.returncode == 0, sent.stderr
        final = wait_finished(project, instance, "globex", "the finance approval to time out")
    finally:
        server.stop()
    output = final["output"]
    assert output["status"] == "escalated" and output["decisions"] == {"manager": True}
    assert output["timeout"] == "WorkflowTimeoutError"
    assert output["escalation"] == {"to": "director@globex.example", "level": "finance",
                                    "reason": "no finance decision within 1 second"}


def test_saas_initech_billing_retries_then_records_a_decline(tmp_path):
    project = copy_example("saas-automations", tmp_path)
    result, progress = run(project, "initech", {"invoice": "INV-7", "card": "tok_flaky"})
    assert result["status"] == "complete"
    assert result["output"]["status"] == "paid"
    assert result["output"]["charge"]["attempts"] == 3
    failures = steps_named(progress, "step.attempt_failed", "charge card")
    assert [f["error"]["name"] for f in failures] == ["GatewayUnavailable"] * 2
    # Exponential back-off from 30 seconds: 30 s, then 60 s (skipped by the virtual clock).
    assert [f["next_attempt_at"] - f["at"] for f in failures] == [30_000, 60_000]

    result, progress = run(project, "initech", {"invoice": "INV-8", "card": "tok_declined"})
    assert result["status"] == "complete"              # recorded, not crashed
    assert result["output"] == {"status": "payment_failed", "invoice": "INV-8",
                                "dunning": "email the customer to update their card",
                                "reason": "card declined by the issuer (invoice INV-8)"}
    assert len(steps_named(progress, "step.started", "charge card")) == 1   # never retried


# ---- job-system -----------------------------------------------------------------------------------

def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_job_system_acme_batches_with_a_flaky_batch_retried(tmp_path):
    project = copy_example("job-system", tmp_path)
    result, progress = run(project, "acme", {"file": "orders.csv", "flaky_batch": 3})
    assert result["status"] == "complete"
    output = result["output"]
    orders = read_csv(project / "data" / "acme" / "orders.csv")
    paid = [o for o in orders if o["status"] == "paid"]
    assert (output["rows_in"], output["rows_out"], output["batches"]) == (3000, len(paid), 6)
    assert output["cancelled"] == 3000 - len(paid)

    # One step per batch, in order; only batch 3 (the 4th) needed a second attempt.
    batches = steps_named(progress, "step.committed", "convert batch")
    assert [b["step"]["count"] for b in batches] == [1, 2, 3, 4, 5, 6]
    assert [(b["step"]["count"], b["attempt"]) for b in batches if b["attempt"] > 1] == [(4, 2)]

    # The merged result is every paid order, converted once (the retried batch not twice).
    merged = read_csv(project / output["result"])
    assert [row["order_id"] for row in merged] == [o["order_id"] for o in paid]
    cents = {"USD": 100, "EUR": 108, "GBP": 127, "JPY": 0.67}
    expected: dict[str, int] = {}
    for o in paid:
        value = round(float(o["unit_price"]) * int(o["quantity"]) * cents[o["currency"]])
        expected[o["country"]] = expected.get(o["country"], 0) + value
    assert output["revenue_usd"] == {c: round(v / 100, 2) for c, v in sorted(expected.items())}
    report = json.loads((project / output["result"]).with_name("report.json").read_text())
    assert report == output

    # Progress is persisted per batch: the instance's steps say how far each batch got.
    steps = describe(project, result["tenant_instance"], "acme")["steps"]
    progress_marks = [s["result"]["progress"] for s in steps if s["name"] == "convert batch"]
    assert progress_marks == ["500/3000", "1000/3000", "1500/3000", "2000/3000", "2500/3000",
                              "3000/3000"]


def test_job_system_other_customers_run_their_own_logic(tmp_path):
    project = copy_example("job-system", tmp_path)
    result, progress = run(project, "globex", {"file": "contacts.csv"})
    output = result["output"]
    assert result["status"] == "complete"
    assert output["rows_in"] == 2000 and output["batches"] == 5
    assert output["kept"] + output["rejected"] == 2000 and output["rejected"] > 0
    assert len(steps_named(progress, "step.committed", "clean batch")) == 5
    cleaned = read_csv(project / output["result"])
    assert len(cleaned) == output["kept"]
    assert all(row["email"] == row["email"].strip().lower() and "@" in row["email"]
               for row in cleaned)
    assert all(row["name"].endswith(".") for row in cleaned)          # surnames reduced

    result, progress = run(project, "initech", {"file": "readings.csv"})
    output = result["output"]
    assert result["status"] == "complete"
    assert (output["rows_in"], output["rows_out"], output["batches"]) == (2400, 2400, 4)
    flagged = [r for r in read_csv(project / output["result"]) if r["anomaly"] == "yes"]
    assert len(flagged) == output["anomalies"] > 0
    assert sum(output["anomalies_by_sensor"].values()) == output["anomalies"]

    result, _ = run(project, "acme", {"file": "missing.csv"}, expect=1)
    assert result["status"] == "errored"
    assert "no upload named 'missing.csv' (uploads: orders.csv)" in result["error"]["message"]


# ---- ci-pipelines ---------------------------------------------------------------------------------

def test_ci_pull_requests_run_each_repository_pipeline(tmp_path):
    project = copy_example("ci-pipelines", tmp_path)
    result, progress = run(project, "calc-lib",
                           {"repo": "calc-lib", "sha": "4f2a9c1", "branch": "fix-median", "pr": 12})
    output = result["output"]
    assert result["status"] == "complete"
    assert output["conclusion"] == "success"
    assert output["checks"] == {"lint": "passed", "test": "passed", "build": "passed"}
    assert output["artifact"]["bytes"] > 0
    assert "deploy" not in output                          # not main: no deploy approval asked
    # lint, test and build were started together, before any of them finished.
    order = [(p["kind"], p["step"]["name"]) for p in progress
             if p.get("step", {}).get("name") in ("lint", "test", "build")
             and p["kind"] in ("step.started", "step.committed")]
    assert [kind for kind, _ in order[:3]] == ["step.started"] * 3
    comment = (project / output["comment"]).read_text()
    assert "calc-lib CI: success at `4f2a9c1`" in comment and "| test | passed |" in comment

    # textkit has a real failing test: the pipeline finishes, and shows the failure.
    result, _ = run(project, "textkit", {"repo": "textkit", "sha": "9b1e0d4", "branch": "slugs",
                                         "pr": 13})
    output = result["output"]
    assert result["status"] == "complete"
    assert output["conclusion"] == "failure" and output["failed"] == ["unit tests"]
    assert output["failing_tests"] == ["tests/test_textkit.py::test_slugify_collapses_runs_of_spaces"]
    comment = (project / output["comment"]).read_text()
    assert "textkit CI failed at `9b1e0d4`: unit tests." in comment
    assert "test_slugify_collapses_runs_of_spaces" in comment

    result, _ = run(project, "no-such-repo", {"branch": "main"}, expect=1)
    assert result["status"] == "errored"
    assert result["error"]["message"].startswith("no repository 'no-such-repo' with a pipeline")


def test_ci_webhook_on_main_waits_for_deploy_approval(tmp_path):
    project = copy_example("ci-pipelines", tmp_path)
    server = DevServer(project)
    try:
        started = http("POST", server.url + "/webhook",
                       {"repo": "status-page", "sha": "c0ffee1", "branch": "main", "pr": None})
        instance = started["id"]
        poll(lambda: any(s["kind"] == "wait" and s["status"] == "waiting"
                         for s in describe(project, instance, "status-page")["steps"]),
             "the pipeline to wait for its deploy approval")
        assert not (project / "out" / "deployments").exists()      # nothing deployed yet
        waiting = describe(project, instance, "status-page")
        wait = next(s for s in waiting["steps"] if s["kind"] == "wait")
        assert (wait["event_type"], wait["requested_ms"]) == ("deploy-approval", 86_400_000)
        http("POST", server.url + "/approve",
             {"repo": "status-page", "id": instance, "approved": True, "by": "rene"})
        final = wait_finished(project, instance, "status-page", "the deploy to finish")
    finally:
        server.stop()
    output = final["output"]
    assert output["conclusion"] == "success"
    assert output["deploy"]["environment"] == "production"
    assert output["verified"] == {"url": "https://production.status-page.example",
                                  "serves_built_page": True}
    records = (project / "out" / "deployments" / "status-page.jsonl").read_text().splitlines()
    assert [json.loads(r)["sha"] for r in records] == ["c0ffee1"]


# ---- agent-plans ----------------------------------------------------------------------------------

def test_agent_plans_call_tools_and_gate_dangerous_ones(tmp_path):
    project = copy_example("agent-plans", tmp_path)
    result, progress = run(project, "research-agent")
    assert result["status"] == "complete"
    assert not [p for p in progress if p["kind"] == "step.waiting"]    # no dangerous tool
    report = (project / result["output"]["report"]).read_text()
    assert report.startswith("# What our notes say about retries") and "idempotency key" in report

    result, progress = run(project, "support-agent",
                           events={"human-approval": {"approved": True, "by": "lee"}})
    assert result["output"]["sent"] is True
    waits = [p for p in progress if p["kind"] == "step.waiting"]
    assert [(w["step"]["name"], w["event_type"]) for w in waits] == \
        [("approve send_email", "human-approval")]
    outbox = [json.loads(line) for line in
              (project / "out" / "support-agent" / "outbox.jsonl").read_text().splitlines()]
    assert [(m["to"], m["subject"]) for m in outbox] == [("dana@customer.example", "Your refund")]

    result, _ = run(project, "support-agent", {"customer": "sam@customer.example"},
                    events={"human-approval": {"approved": False, "by": "lee"}})
    assert result["output"]["sent"] is False and result["output"]["why"] == "lee declined send_email"
    assert len((project / "out" / "support-agent" / "outbox.jsonl").read_text().splitlines()) == 1

    result, _ = run(project, "ghost-agent", expect=1)
    assert result["error"]["message"].startswith("no agent 'ghost-agent': agents/ghost-agent/plan.py")

    # Model output is checked before it is loaded: a plan that does not parse fails its run.
    (project / "agents" / "broken-agent").mkdir()
    (project / "agents" / "broken-agent" / "plan.py").write_text("class Plan(:\n    pass\n")
    result, _ = run(project, "broken-agent", expect=1)
    assert result["error"] == {"name": "ValueError", "message": "agents/broken-agent/plan.py is "
                                                                "not valid Python: invalid syntax (line 1)"}


def test_agent_plan_waiting_for_approval_survives_a_killed_dev_server(tmp_path):
    project = copy_example("agent-plans", tmp_path)
    changes = project / "out" / "ops-agent" / "changes.jsonl"
    server = DevServer(project)
    try:
        instance = http("POST", server.url + "/agents/ops-agent/runs", {"service": "checkout"})["id"]
        waiting = poll(lambda: next((s for s in describe(project, instance, "ops-agent")["steps"]
                                     if s["kind"] == "wait" and s["status"] == "waiting"), None),
                       "the plan to wait for a human")
        assert (waiting["name"], waiting["event_type"]) == ("approve scale_service",
                                                            "human-approval")
        assert not changes.exists()                  # the dangerous tool has not run
    finally:
        server.kill()                                # a crash: SIGKILL, no shutdown

    assert describe(project, instance, "ops-agent")["status"] == "waiting"
    server = DevServer(project)
    try:
        sent = dynwf(project, "instances", "send-event", instance, "--tenant", "ops-agent",
                     "--type", "human-approval", "--payload", '{"approved": true, "by": "sam"}')
        assert sent.returncode == 0, sent.stdout + sent.stderr
        final = wait_finished(project, instance, "ops-agent", "the plan to finish after the restart")
    finally:
        server.stop()
    assert final["output"] == {"service": "checkout", "diagnosis": "short of capacity",
                               "scaled": {"from": 3, "to": 5},
                               "report": "out/ops-agent/reports/checkout-latency-incident.md"}
    # Steps finished before the crash were not run again, and the change was made once.
    tool_steps = [s for s in final["steps"] if s["kind"] == "do"]
    assert all(s["attempts"] == 1 for s in tool_steps), tool_steps
    assert [json.loads(line)["to"] for line in changes.read_text().splitlines()] == [5]
    assert "scaled to 5 replicas" in (project / final["output"]["report"]).read_text()


def test_ci_an_install_that_fails_fails_its_step_with_pips_reason_on_screen(tmp_path):
    """A repository whose requirements cannot install (pytest missing, after README line 1):
    the install step is failed, not green, and the run's output and checklist carry why."""
    project = copy_example("ci-pipelines", tmp_path)
    requirements = project / "repos" / "textkit" / "requirements.txt"
    requirements.write_text("pytest\nno-such-package-anywhere\n")
    result, progress = run(project, "textkit", {"repo": "textkit", "sha": "9b1e0d4",
                                                "branch": "slugs", "pr": 13})
    assert result["status"] == "complete"
    output = result["output"]
    assert output["conclusion"] == "failure" and output["failed"] == ["install"]
    assert output["reason"].startswith("the requirements did not install: ")
    assert "no-such-package-anywhere" in output["reason"]
    failed = steps_named(progress, "step.failed", "install")
    assert len(failed) == 1 and failed[0]["error"]["name"] == "NonRetryableError"
    assert "no-such-package-anywhere" in failed[0]["error"]["message"]
    assert not steps_named(progress, "step.committed", "install")

"""``sensitive: "output"`` (docs/semantics.md §2.3): a step's output is redacted on every surface a
person or a log reads (describe in text and JSON, the admin API's answer, the test API, the live
checklist and the NDJSON progress stream, ``dynwf logs``), while the real value is stored, reaches
later steps and comes back to ``run()`` on replay. Each case runs the tenant in an isolate process
and inline, through the pytest plugin, on real SQLite.
"""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from dev_harness import start
from dynwf_cli.app import app
from dynwf_cli.checklist import Checklist, to_ndjson
from dynwf_cli.console import THEME
from emulator.ops import InstanceOps
from emulator.rules.redaction import REDACTED
from plugin_projects import write_lab
from test_admin_api import API, call, token_of
from test_dashboard import CHROMIUM, CHROMIUM_ARGS

SECRET = "tok-s3cr3t-42"
# A sensitive step, a sleep (so run() hibernates and the next lifetime replays the step from the
# store), then a step that takes the sensitive output as its input (implicit dependency).
VAULT_TENANT = '''\
from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("token", config={"sensitive": "output"})
        async def token():
            print("minting a token")
            return {"token": "%s"}

        @step.do("plain")
        async def plain():
            return {"visible": True}

        await token()
        await plain()
        await step.sleep("nap", "1 hour")

        @step.do("use")
        async def use(token):
            return {"length": len(token["token"]), "prefix": token["token"][:4]}

        return {"used": await use()}
''' % SECRET

runner = CliRunner()
ISOLATIONS = [pytest.param("process", marks=pytest.mark.dynwf(isolation="process"), id="isolate"),
              pytest.param("inline", marks=pytest.mark.dynwf(isolation="inline"), id="inline")]


@pytest.fixture
def dynwf_project(tmp_path):
    return write_lab(tmp_path / "vault", {"vault": VAULT_TENANT})


async def run_vault(dynwf, events=None):
    """Create the instance, drive it to ``complete``; collects progress events when asked."""
    if events is not None:
        dynwf.host.engine.progress.subscribe(events.append)
    instance = dynwf.introspect_instance("vault", "v1")
    await dynwf.tenant("vault").binding.create({"id": "v1", "params": {}})
    await instance.wait_for_status("complete")
    return instance


def state_args(dynwf) -> list[str]:
    return ["--config", str(dynwf.root / "wrangler.jsonc"),
            "--state-dir", str(dynwf.host.database.parent)]


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_the_real_value_is_stored_reaches_later_steps_and_replays(dynwf, isolation):
    """§2.3: redaction is for people; the engine keeps and hands on the real value."""
    instance = await run_vault(dynwf)
    # "use" ran in the lifetime after the sleep: token() answered it from the store (a replay)
    assert await instance.get_output() == {"used": {"length": len(SECRET), "prefix": "tok-"}}
    (row,) = [r for r in dynwf.engine.store.list_steps(instance.instance_id) if r.name == "token"]
    assert json.loads(row.result) == {"token": SECRET}   # stored as it is
    assert row.is_sensitive and json.loads(row.config)["sensitive"] == "output"


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_the_test_api_shows_the_marker(dynwf, isolation):
    """§2.3, §7.3: ``wait_for_step_result`` and ``steps()`` show the marker, a plain step its
    value."""
    instance = await run_vault(dynwf)
    assert await instance.wait_for_step_result("token") == REDACTED
    assert await instance.wait_for_step_result("plain") == {"visible": True}
    steps = {s["name"]: s for s in instance.steps()}
    assert (steps["token"]["result"], steps["token"]["sensitive"]) == (REDACTED, True)
    assert (steps["plain"]["result"], steps["plain"]["sensitive"]) == ({"visible": True}, False)
    assert SECRET not in json.dumps(instance.steps())


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_describe_in_text_and_json_and_the_ops_answer(dynwf, isolation):
    """§2.3: ``dynwf instances describe`` (and the admin API, which returns ``InstanceOps``'s
    answer as it is) never show the value."""
    instance = await run_vault(dynwf)
    described = InstanceOps(dynwf.engine.store).describe(instance.instance_id)
    token = next(s for s in described["steps"] if s["name"] == "token")
    assert (token["result"], token["sensitive"]) == (REDACTED, True)
    assert SECRET not in json.dumps(described)

    as_json = runner.invoke(app, ["instances", "describe", "v1", "--tenant", "vault", "--json",
                                  *state_args(dynwf)])
    assert as_json.exit_code == 0, as_json.output
    steps = {s["name"]: s for s in json.loads(as_json.stdout)["steps"]}
    assert steps["token"]["result"] == REDACTED and steps["use"]["result"]["prefix"] == "tok-"
    assert SECRET not in as_json.stdout

    text = runner.invoke(app, ["instances", "describe", "v1", "--tenant", "vault",
                               *state_args(dynwf)])
    assert text.exit_code == 0, text.output
    assert f"output {REDACTED} (sensitive)" in text.stdout
    assert SECRET not in text.stdout and '"visible": true' in text.stdout


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_the_checklist_and_the_progress_stream_say_redacted(dynwf, isolation):
    """§2.3: progress events never carry an output; a sensitive step's says so, and the live
    checklist (``dynwf run``, ``dynwf dev``) reads "output redacted" on that step alone."""
    events = []
    await run_vault(dynwf, events)
    committed = {e.step[1]: e for e in events if e.kind == "step.committed"}
    assert committed["token"].data.get("sensitive") is True
    assert "sensitive" not in committed["plain"].data
    stream = "\n".join(to_ndjson(e) for e in events)
    assert SECRET not in stream

    checklist = Checklist(instance_id=events[0].instance_id)
    for event in events:
        checklist.apply(event)
    console = Console(width=100, no_color=True, record=True, force_terminal=False, theme=THEME,
                      file=io.StringIO())
    console.print(checklist.render())
    lines = console.export_text().splitlines()
    assert any("token" in line and "output redacted" in line for line in lines), lines
    assert not any("plain" in line and "redacted" in line for line in lines), lines
    assert SECRET not in "\n".join(lines)


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_logs_keep_what_the_code_printed_and_never_the_output(dynwf, isolation):
    """§2.3: the engine writes no step output to any log; what the code prints is its own."""
    await run_vault(dynwf)
    result = runner.invoke(app, ["logs", "--json", *state_args(dynwf)])
    assert result.exit_code == 0, result.output
    messages = [json.loads(line)["message"] for line in result.stdout.splitlines()]
    if isolation == "process":   # inline, print() goes to the host's own stdout
        assert "minting a token" in messages
    assert SECRET not in result.stdout


@pytest.mark.parametrize("isolation", ["process", "inline"])
def test_dev_its_admin_api_and_the_dashboard_never_show_the_output(tmp_path, servers, isolation):
    """§2.3: a real ``dynwf dev`` (tenant in an isolate, or inline): its NDJSON lines, the admin
    API's describe and the instance page in Chromium show the marker and never the value."""
    project = write_lab(tmp_path / "vault", {"vault": VAULT_TENANT})
    dev = start(servers, project, "--fast-forward", "--isolation", isolation)
    status, created = call(dev, "POST", f"{API}/instances", {"tenant": "vault", "id": "v1"},
                           token=token_of(project))
    assert status == 201, created
    dev.wait_for_record(kind="instance.status", status="complete", timeout=30)
    status, described = call(dev, "GET", f"{API}/instances/v1?tenant=vault")
    steps = {s["name"]: s for s in described["steps"]}
    assert (steps["token"]["result"], steps["token"]["sensitive"]) == (REDACTED, True)
    assert described["output"] == {"used": {"length": len(SECRET), "prefix": "tok-"}}
    assert SECRET not in json.dumps(described)
    committed = dev.wait_for_record(kind="step.committed", step__name="token")
    assert committed["sensitive"] is True
    assert not any(SECRET in line for line in dev.lines)
    if not CHROMIUM.exists():
        return
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(dev.url + f"/__dynwf/#/instances/{created['id']}")
            sync_api.expect(page.locator("#instance-status")).to_have_text("complete")
            token = page.locator('[data-step="token"]')
            sync_api.expect(token.locator(".step-redacted")).to_have_text(
                f"output {REDACTED} (sensitive)")
            sync_api.expect(page.locator('[data-step="plain"] .step-output')).to_contain_text(
                "visible")
            assert SECRET not in page.content()
        finally:
            browser.close()

"""The dashboard of ``dynwf dev`` at ``/__dynwf/``: its page and the admin routes behind it over
real HTTP, and an end-to-end run of the playground in headless Chromium (Debian's, driven by
Playwright's Python package; no browser is ever downloaded)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dev_harness import copy_hello, start
from test_admin_api import API, call, token_of

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def get(dev, path, headers=None):
    request = urllib.request.Request(dev.url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


# ---- the page and the API it uses ----------------------------------------------------------------

def test_the_page_carries_the_session_token_and_only_local_resources(tmp_path, servers):
    project = copy_hello(tmp_path)
    dev = start(servers, project)
    status, headers, page = get(dev, "/__dynwf/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert f'<meta name="dynwf-token" content="{token_of(project)}">' in page
    assert 'href="#/playground"' in page and "{{" not in page   # dev offers the playground
    assert "connect-src 'self'" in headers["content-security-policy"]
    # every script, style and link is served by dynwf itself
    for url in re.findall(r'(?:src|href)="([^"#]+)"', page):
        assert url.startswith("/__dynwf/static/") or url.startswith("data:"), url
        if url.startswith("/"):
            assert get(dev, url)[0] == 200, url
    for name in ("app.js", "api.js", "checklist.js"):
        status, _, source = get(dev, f"/__dynwf/static/{name}")
        assert status == 200 and "http://" not in source and "https://" not in source
    # another site (or a rebound DNS name) never gets the page, so never reads the token
    assert get(dev, "/__dynwf/", {"Host": "evil.example"})[0] == 403
    assert get(dev, "/__dynwf/static/../admin.py")[0] == 404
    assert get(dev, "/__dynwf/static/index.html")[0] == 404


def test_playground_checks_the_code_like_dynwf_check_and_needs_the_token(tmp_path, servers):
    project = copy_hello(tmp_path)
    dev = start(servers, project)
    token = token_of(project)
    status, sample = call(dev, "GET", f"{API}/playground/sample")
    assert status == 200 and "class TenantWorkflow(WorkflowEntrypoint)" in sample["code"]
    assert call(dev, "POST", f"{API}/playground", {"code": sample["code"]})[0] == 401
    assert call(dev, "POST", f"{API}/playground", {"code": sample["code"]}, token=token,
                headers={"Origin": "http://evil.example"})[0] == 403
    broken = "from workers import WorkflowEntrypoint\n\nclass TenantWorkflow(WorkflowEntrypoint):\n" \
             "    async def run(self, event, step):\n        await step.sleep('nap', 'soon')\n"
    status, body = call(dev, "POST", f"{API}/playground", {"code": broken}, token=token)
    assert status == 400 and body["error"]["code"] == "playground.check_failed"
    assert [(d["code"], d["line"]) for d in body["diagnostics"]] == [("DW303", 5)]
    status, body = call(dev, "POST", f"{API}/playground", {"code": "x = 1\n"}, token=token)
    assert status == 400 and body["diagnostics"][0]["code"] == "DW203"
    assert call(dev, "GET", f"{API}/instances")[1] == []        # nothing ran
    assert not (project / "tenants" / "scratch").exists()
    assert sorted(p.name for p in (project / "tenants").iterdir()) == ["acme", "globex"]


def test_outline_of_a_project_tenants_instance(tmp_path, servers):
    project = copy_hello(tmp_path)
    dev = start(servers, project)
    status, created = call(dev, "POST", f"{API}/instances", {"tenant": "globex", "id": "o-1"},
                           token=token_of(project))
    assert status == 201
    status, outline = call(dev, "GET", f"{API}/instances/o-1/outline?tenant=globex")
    assert status == 200 and outline["file"] == "tenants/globex/index.py"
    assert [(s["kind"], s["name"]) for s in outline["steps"]] == [
        ("do", "open account"), ("sleep", "grace period"), ("wait", "confirm email"),
        ("do", "activate")]
    assert call(dev, "GET", f"{API}/instances/nope/outline")[0] == 404


# ---- end to end in a browser ----------------------------------------------------------------------

@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="Debian's Chromium is not installed at /usr/bin/chromium "
                           "(apt-get install chromium; .ci/run installs it)")
def test_playground_runs_the_sample_and_drives_it_from_the_page(tmp_path, servers):
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    project = copy_hello(tmp_path)
    dev = start(servers, project)
    outside: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: None if request.url.startswith(dev.url)
                    or request.url.startswith("data:") else outside.append(request.url))
            page.set_default_timeout(20_000)
            page.goto(dev.url + "/__dynwf/#/playground")

            editor = page.locator("#editor")
            expect(editor).to_have_value(re.compile(r"class TenantWorkflow\(WorkflowEntrypoint\)"))
            sample = editor.input_value()

            # an error is shown inline with its line number, and nothing is run
            nap = '"short nap", "1 second"'
            editor.fill(sample.replace(nap, '"short nap", "one second"'))
            page.click("#run")
            problem = page.locator("#diagnostics .diag.error")
            expect(problem).to_have_count(1)
            line = sample.splitlines().index(
                next(text for text in sample.splitlines() if nap in text)) + 1
            expect(problem).to_have_attribute("data-line", str(line))
            expect(problem).to_contain_text("DW303")
            expect(page.locator(".gutter .mark.error")).to_have_text(str(line))

            # the sample itself runs: the page opens the new instance's checklist
            page.click("text=Reset to sample")
            expect(editor).to_have_value(sample)
            page.fill("#params", json.dumps({"name": "Grace", "items": [1, 2, 3]}))
            page.click("#run")
            page.wait_for_url(re.compile(r"#/instances/"))
            rows = page.locator("#checklist > li.step")
            expect(rows).to_have_count(5)
            expect(page.locator('[data-step="finish"]')).to_have_attribute("data-state", "pending")
            approval = page.locator('[data-step="approval"]')
            expect(approval).to_have_attribute("data-state", "waiting", timeout=30_000)
            expect(page.locator('[data-step="greet"]')).to_have_attribute("data-state", "done")
            expect(page.locator('[data-step="greet"] .logs')).to_contain_text("greeting Grace")
            expect(page.locator("#instance-status")).to_have_text("waiting")

            # send the event from the page's form
            expect(page.locator("#event-type")).to_have_value("approved")
            page.fill("#event-payload", json.dumps({"by": "the page"}))
            page.click("#send-event")
            expect(page.locator("#instance-status")).to_have_text("complete", timeout=30_000)
            for name in ("greet", "add up", "short nap", "approval", "finish"):
                expect(page.locator(f'[data-step="{name}"]')).to_have_attribute("data-state", "done")
            output = page.locator("#instance-output")
            expect(output).to_contain_text('"approved_by": "the page"')
            assert json.loads(output.inner_text()) == {
                "greeting": "Hello, Grace!", "total": 6, "approved_by": "the page"}
            expect(page.locator('[data-step="finish"] .logs')).to_contain_text("approved by the page")
            page.screenshot(path=str(tmp_path / "instance-view.png"), full_page=True)

            # the instances view lists it, live, and filters by status
            page.click("text=Instances")
            listed = page.locator("#instances-body tr[data-id]")
            expect(listed).to_have_count(1)
            expect(listed.first).to_contain_text("scratch-")
            page.select_option("#filter-status", "errored")
            expect(listed).to_have_count(0)
            page.select_option("#filter-status", "")
            expect(listed).to_have_count(1)
            status, _ = call(dev, "POST", f"{API}/instances", {"tenant": "globex", "id": "live-1"},
                             token=token_of(project))
            assert status == 201
            expect(listed).to_have_count(2)          # arrived without a reload
        finally:
            browser.close()
    assert (tmp_path / "instance-view.png").stat().st_size > 10_000
    assert outside == []
    # the scratch code stayed in the state directory, out of the project's tenants/
    assert sorted(p.name for p in (project / "tenants").iterdir()) == ["acme", "globex"]
    assert list((project / ".dynwf" / "playground").glob("*.py"))


LOOPY = '''from workers import WorkflowEntrypoint


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        for i in range(2):
            @step.do(f"fetch {i}")
            async def fetch():
                return i

            await fetch()
            await step.sleep(f"nap {i}", "1 second")
        return "done"
'''


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="Debian's Chromium is not installed at /usr/bin/chromium")
def test_the_instance_page_says_what_applies_asks_before_losing_work_and_marks_the_error(
        tmp_path, servers):
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    project = copy_hello(tmp_path)
    (project / "tenants" / "loopy").mkdir()
    (project / "tenants" / "loopy" / "index.py").write_text(LOOPY)
    dev = start(servers, project)
    token = token_of(project)
    for tenant in ("globex", "loopy"):
        assert call(dev, "POST", f"{API}/instances", {"tenant": tenant, "id": f"{tenant}-1"},
                    token=token)[0] == 201
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)

            # steps in the order they ran, not grouped by kind
            page.goto(dev.url + "/__dynwf/#/instances/loopy-1")
            expect(page.locator("#instance-status")).to_have_text("complete", timeout=30_000)
            expect(page.locator("#checklist > li.step")).to_have_count(4)
            assert page.locator("#checklist > li.step").evaluate_all(
                "rows => rows.map(r => r.dataset.step)") == ["fetch 0", "nap 0", "fetch 1", "nap 1"]
            # a finished instance: only restart applies
            for action, enabled in (("pause", False), ("resume", False), ("terminate", False),
                                    ("restart", True)):
                button = page.locator(f'[data-action="{action}"]')
                expect(button).to_be_enabled() if enabled else expect(button).to_be_disabled()

            # a tenant of the project started from the page; its error is under its step
            page.goto(dev.url + "/__dynwf/#/instances")
            expect(page.locator("#start-tenant option")).to_have_count(3)
            page.select_option("#start-tenant", "acme")
            page.fill("#start-params", "{not json")
            page.click("#start")
            expect(page.locator("#start-error")).to_contain_text("not JSON")
            page.fill("#start-params", json.dumps({"items": []}))
            page.click("#start")
            page.wait_for_url(re.compile(r"#/instances/"))
            expect(page.locator("#instance-status")).to_have_text("errored", timeout=30_000)
            failing = page.locator('[data-step="reserve_stock"]')
            expect(failing).to_have_attribute("data-state", "failed")
            expect(failing.locator(".step-error")).to_contain_text(
                "an order needs at least one item")
            # run() let the step's error through: its frames, in the tenant's terms, follow it
            expect(failing.locator(".step-error")).to_contain_text(
                re.compile(r"run\(\) raised it \(most recent call last\):\s+.*acme/index\.py:\d+ in run",
                           re.S))
            expect(page.locator("#instance-error")).to_be_hidden()
            expect(page.locator(".facts")).to_contain_text(
                re.compile(r"Created\s*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))

            # restart asks first; cancelling keeps every step
            page.click('[data-action="restart"]')
            expect(page.locator("#confirm")).to_contain_text("runs again from the first step")
            page.click("#confirm-no")
            expect(page.locator("#confirm")).to_have_count(0)
            expect(failing).to_have_attribute("data-state", "failed")

            # a waiting instance: pause applies, resume does not; event timeout in words
            page.goto(dev.url + "/__dynwf/#/instances/globex-1")
            expect(page.locator("#instance-status")).to_have_text(
                re.compile("waiting|running"), timeout=30_000)
            page.click('[data-action="wake"]')
            expect(page.locator("#instance-status")).to_have_text("waiting", timeout=30_000)
            expect(page.locator('[data-action="resume"]')).to_be_disabled()
            expect(page.locator('[data-action="pause"]')).to_be_enabled()
            expect(page.locator(".timers")).to_contain_text("event timeout of confirm email")
            expect(page.locator(".timers")).not_to_contain_text("event_timeout")

            # the code changed since it started: said on the page, as by the CLI
            index = project / "tenants" / "globex" / "index.py"
            index.write_text(index.read_text() + "\n# changed\n")
            page.reload()
            expect(page.locator("#code-changed")).to_contain_text(
                "the code changed since this instance started")

            # terminate asks too; confirmed, it ends the instance
            page.click('[data-action="terminate"]')
            page.click("#confirm-yes")
            expect(page.locator("#instance-status")).to_have_text("terminated")
            expect(page.locator('[data-action="terminate"]')).to_be_disabled()

            # a narrow window scrolls the instance table, not the page
            page.set_viewport_size({"width": 380, "height": 800})
            page.goto(dev.url + "/__dynwf/#/instances")
            expect(page.locator("#instances-body tr[data-id]")).to_have_count(3)
            assert page.evaluate("document.documentElement.scrollWidth") <= 380
        finally:
            browser.close()


PAYER = '''
from workers import WorkflowEntrypoint
from workers.workflows import NonRetryableError


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("reserve")
        async def reserve():
            return {"held": 5}

        @step.do("charge")
        async def charge(reserve):
            raise NonRetryableError("gateway refused")

        return await charge()
'''


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="Debian's Chromium is not installed at /usr/bin/chromium")
def test_rerun_from_here_on_a_step_makes_a_new_instance_that_continues_on_the_current_code(
        tmp_path, servers):
    """docs/semantics.md §4.10: every recorded step of the timeline offers "rerun from here";
    confirmed, a new instance keeps the steps before it, runs the fixed code and completes, and
    each instance's page links to the other."""
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    project = copy_hello(tmp_path)
    (project / "tenants" / "payer").mkdir()
    index = project / "tenants" / "payer" / "index.py"
    index.write_text(PAYER)
    dev = start(servers, project)
    token = token_of(project)
    assert call(dev, "POST", f"{API}/instances", {"tenant": "payer", "id": "pay-1"},
                token=token)[0] == 201
    # the route checks its input before anything is written
    status, body = call(dev, "POST", f"{API}/instances/pay-1/rerun", {"from": "charge"},
                        token=token)
    assert status == 400 and "from" in body["error"]["message"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(dev.url + "/__dynwf/#/instances/pay-1")
            expect(page.locator("#instance-status")).to_have_text("errored", timeout=30_000)
            expect(page.locator("#checklist button.rerun")).to_have_count(2)
            index.write_text(PAYER.replace('raise NonRetryableError("gateway refused")',
                                           'return {"paid": reserve["held"]}'))
            page.locator('[data-step="charge"] button.rerun').click()
            expect(page.locator("#confirm")).to_contain_text('Rerun from "charge"?')
            page.click("#confirm-yes")
            page.wait_for_url(re.compile(r"#/instances/[0-9a-f]{12}-[0-9a-f]{32}$"))
            expect(page.locator("#instance-status")).to_have_text("complete", timeout=30_000)
            expect(page.locator("#instance-output")).to_contain_text('"paid": 5')
            expect(page.locator("#rerun-of")).to_contain_text("pay-1")
            expect(page.locator("#rerun-of")).to_contain_text("from charge")
            expect(page.locator('[data-step="reserve"]')).to_have_attribute("data-state", "done")
            page.locator("#rerun-of a").click()
            expect(page.locator("#instance-status")).to_have_text("errored")
            expect(page.locator("#reruns")).to_contain_text("from charge (complete)")
        finally:
            browser.close()

"""``dynwf dev`` as a user runs it: a real server process on a real port, real HTTP requests,
real file saves (atomic, as editors do them) picked up by the watcher, and real signals.

Each test copies the hello example, so edits and state never touch the repository.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator.errors import DynwfError

from dev_harness import DYNWF, DevServer, copy_hello, free_port, save_atomically, start

runner = CliRunner()


def new_globex_fetch(source: str) -> str:
    old = '        return Response.json({"id": instance.id})\n'
    assert source.count(old) == 1
    return source.replace(old, '        return Response.json({"id": instance.id, "version": 2})\n')


# ---- serving, progress and hot reload -----------------------------------------------------------

def test_requests_reach_each_tenant_progress_streams_and_a_saved_tenant_serves_at_once(
        tmp_path, servers):
    project = copy_hello(tmp_path)
    dev = start(servers, project, "--fast-forward")
    ready = dev.wait_for_record(kind="server.ready")
    assert ready["url"] == dev.url and ready["tenants"] == ["acme", "globex"]

    status, acme = dev.post("acme", {"items": [{"price": 2, "quantity": 3}]})
    assert status == 200, acme
    status, globex = dev.post("globex", {"email": "ann@globex.com"})
    assert status == 200, globex
    acme_real = _suffix_match(dev, acme["id"])
    # acme priced the order and waits for payment; globex's 5 s sleep was fast-forwarded
    dev.wait_for_record(kind="step.committed", instance=acme_real, step__name="quote")
    dev.wait_for_record(kind="step.waiting", instance=acme_real, step__name="payment",
                        event_type="payment-received")
    globex_real = _suffix_match(dev, globex["id"])
    dev.wait_for_record(kind="step.woken", instance=globex_real, step__name="grace period")
    dev.wait_for_record(kind="step.waiting", instance=globex_real, step__name="confirm email")
    logged = [r for r in dev.records() if r["kind"] == "http.request"]
    assert [(r["method"], r["path"], r["tenant"], r["status"]) for r in logged] == [
        ("POST", "/", "acme", 200), ("POST", "/", "globex", 200)]

    index = project / "tenants" / "globex" / "index.py"
    mark = len(dev.lines)
    saved_at = time.monotonic()
    save_atomically(index, new_globex_fetch(index.read_text()))
    reload = dev.wait_for_record(kind="reload", target="tenant", name="globex", after=mark,
                                 timeout=1)
    assert reload["paths"] == ["tenants/globex/index.py"] and "error" not in reload
    status, answer = dev.post("globex", {"email": "bob@globex.com"})
    latency = time.monotonic() - saved_at
    assert status == 200 and answer.get("version") == 2, answer
    assert latency < 1.0, f"the new code answered {latency:.3f}s after the save"
    # the other tenant was not reloaded and still runs its own code
    assert dev.post("acme", {"items": [{"price": 1}]})[1].keys() == {"id"}
    assert not [r for r in dev.records() if r["kind"] == "reload" and r["name"] == "acme"]

    assert dev.stop(signal.SIGTERM) == 0
    assert dev.records()[-1] == {"kind": "server.stopped", "signal": "SIGTERM"}


def _suffix_match(dev: DevServer, tenant_visible_id: str) -> str:
    """The real (namespaced) id of the instance a tenant knows as ``tenant_visible_id``."""
    line = dev.wait_for(lambda line: line.startswith("{") and
                        json.loads(line).get("instance", "").endswith("-" + tenant_visible_id))
    return json.loads(line)["instance"]


def test_a_syntax_error_in_one_tenant_is_reported_and_the_others_keep_serving(tmp_path, servers):
    project = copy_hello(tmp_path)
    dev = start(servers, project)
    acme_index = project / "tenants" / "acme" / "index.py"
    good = acme_index.read_text()
    assert dev.post("acme", {"items": []})[0] == 200

    mark = len(dev.lines)
    save_atomically(acme_index, good + "\ndef broken(:\n    pass\n")
    reload = dev.wait_for_record(kind="reload", target="tenant", name="acme", after=mark)
    line = len(good.splitlines()) + 2
    assert reload["error"].startswith(f"tenants/acme/index.py:{line}:"), reload
    assert "invalid syntax" in reload["error"]

    status, body = dev.post("acme", {"items": []})
    assert status == 500
    assert body["error"]["code"] == "worker.exception"
    assert body["error"]["message"].startswith("SyntaxError:"), body
    status, body = dev.post("globex", {"email": "ann@globex.com"})
    assert status == 200 and "id" in body
    failed = dev.wait_for_record(kind="http.request", tenant="acme", status=500, after=mark)
    assert failed["error"]["code"] == "worker.exception"

    mark = len(dev.lines)
    save_atomically(acme_index, good)
    reload = dev.wait_for_record(kind="reload", target="tenant", name="acme", after=mark)
    assert "error" not in reload
    assert dev.post("acme", {"items": []})[0] == 200

    # the dispatcher reloads too; while its new code does not import, the old one serves
    entry = project / "src" / "entry.py"
    dispatcher = entry.read_text()
    mark = len(dev.lines)
    save_atomically(entry, dispatcher + "\nbroken = (\n")
    failed_reload = dev.wait_for_record(kind="reload", target="dispatcher", after=mark)
    assert failed_reload["error"].startswith("src/entry.py:"), failed_reload
    assert dev.post(None, {})[1]["error"].startswith("unknown tenant")
    mark = len(dev.lines)
    save_atomically(entry, dispatcher.replace("unknown tenant;", "no such tenant;"))
    reloaded = dev.wait_for_record(kind="reload", target="dispatcher", after=mark)
    assert "error" not in reloaded
    assert dev.post(None, {}) == (404, {"error": "no such tenant; send an x-tenant-id header "
                                                 "naming a folder of tenants/"})
    assert dev.post("globex", {"email": "ann@globex.com"})[0] == 200

    assert dev.stop(signal.SIGINT) == 130


# ---- what a change means (logic only: no server) ------------------------------------------------

def test_changes_map_to_the_tenant_or_the_dispatcher_and_noise_is_ignored(tmp_path):
    from types import SimpleNamespace

    import watchfiles

    from emulator.config import load_config
    from emulator.server.reload import ProjectFilter, Reloader
    project = copy_hello(tmp_path)
    host = SimpleNamespace(config=load_config(project / "wrangler.jsonc"), loaders={})
    reloader = Reloader(host, lambda event: None)  # type: ignore[arg-type]
    root = reloader.root
    batch = reloader._classify([root / "tenants/acme/index.py", root / "tenants/acme/lib/x.py",
                                root / "tenants/globex/index.py", root / "src/entry.py",
                                root / "README.md", root / "tenants/notes.txt"])
    assert batch.tenants == {"acme": {"tenants/acme/index.py", "tenants/acme/lib/x.py"},
                             "globex": {"tenants/globex/index.py"}}
    assert batch.dispatcher == {"src/entry.py"} and not batch.config
    assert batch.code == set()                   # README.md and notes.txt reload nothing
    assert reloader._classify([root / "wrangler.jsonc"]).config
    assert reloader._classify([root / ".dev.vars"]).dev_vars     # the dispatcher's env anew
    assert not reloader._classify([root / "tenants/acme/.dev.vars"]).dev_vars
    other = reloader._classify([root / "agents/planner/plan.py", root / "data/runs.jsonl"])
    assert other.code == {"agents/planner/plan.py"} and not other.tenants and not other.dispatcher

    keep = ProjectFilter(tmp_path / "elsewhere")
    added, modified = watchfiles.Change.added, watchfiles.Change.modified
    assert keep(added, str(root / "tenants/acme/index.py"))       # an atomic save's rename
    assert keep(modified, str(root / "src/entry.py"))
    for noise in (".dynwf/state.sqlite-wal", "tenants/acme/index.py.tmp",
                  "tenants/acme/.index.py.swp", "tenants/acme/__pycache__/index.cpython-311.pyc",
                  "tenants/acme/4913", "src/entry.py~", ".git/index"):
        assert not keep(added, str(root / noise)), noise
    assert not keep(modified, str(tmp_path / "elsewhere" / "state.sqlite"))


def test_other_python_files_of_the_project_reload_every_isolate(tmp_path):
    """A dispatcher may read tenant code from any folder (agents/<id>/, repos/<name>/): a
    change to a .py file there marks every isolate stale, and a syntax error is reported."""
    import asyncio
    from types import SimpleNamespace

    from emulator.config import load_config
    from emulator.server.reload import Reloader
    project = copy_hello(tmp_path)
    stale: list[str] = []
    host = SimpleNamespace(config=load_config(project / "wrangler.jsonc"), loaders={},
                           pool=SimpleNamespace(mark_all_stale=lambda: stale.append("all")))
    reloader = Reloader(host, lambda event: None)  # type: ignore[arg-type]
    plan = project / "agents" / "planner" / "plan.py"
    plan.parent.mkdir(parents=True)
    plan.write_text("def plan(:\n")
    (project / "data").mkdir()
    (project / "data" / "runs.jsonl").write_text("{}\n")
    [event] = asyncio.run(reloader.apply([plan, project / "data" / "runs.jsonl"]))
    assert stale == ["all"]
    assert (event.target, event.name, event.paths) == ("isolates", "every tenant",
                                                       ("agents/planner/plan.py",))
    assert event.error.startswith("agents/planner/plan.py:1:"), event.error
    assert asyncio.run(reloader.apply([project / "data" / "runs.jsonl"])) == []


# ---- stopping and resuming ----------------------------------------------------------------------

def test_sigterm_hands_instances_back_and_the_next_session_resumes_them(tmp_path, servers):
    project = copy_hello(tmp_path)
    state = tmp_path / "state"
    first = start(servers, project, "--state-dir", str(state), "--no-reload")
    status, acme = first.post("acme", {"items": [{"price": 2, "quantity": 3}]})
    assert status == 200
    real_id = _suffix_match(first, acme["id"])
    first.wait_for_record(kind="instance.status", instance=real_id, status="waiting")
    assert first.stop(signal.SIGTERM) == 0

    database = state / "state.sqlite"
    with sqlite3.connect(database) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT status, lease_owner FROM instances WHERE id = ?",
                            (real_id,)).fetchone() == ("waiting", None)
        assert conn.execute("SELECT count(*) FROM instances WHERE lease_owner IS NOT NULL"
                            ).fetchone() == (0,)
        steps = conn.execute("SELECT name, status FROM steps WHERE instance_id = ? ORDER BY rowid",
                             (real_id,)).fetchall()
    assert steps == [("reserve_stock", "done"), ("quote", "done"), ("payment", "waiting")]

    # without --json, but stdout is a pipe: every line is still NDJSON (no plain text mixed in)
    second = start(servers, project, "--state-dir", str(state), "--fast-forward",
                   json_output=False)
    ready = json.loads(second.wait_for(lambda line: '"kind":"server.ready"' in line))
    assert ready["waiting"] == 1
    from emulator.engine import Control, Store, SystemClock
    store = Store(database)
    try:
        Control(store, SystemClock()).send_event(real_id, "payment-received", {"amount": 6})
    finally:
        store.close()
    done = second.wait_for_record(kind="instance.status", instance=real_id, status="complete")
    assert done["output"]["total"] == 6 and done["output"]["paid"] == {"amount": 6}
    replayed = [r["step"]["name"] for r in second.records()
                if r["kind"] == "step.replayed" and r["instance"] == real_id]
    assert replayed[:2] == ["reserve_stock", "quote"]
    assert second.stop(signal.SIGTERM) == 0
    assert json.loads(second.lines[-1]) == {"kind": "server.stopped", "signal": "SIGTERM"}


# ---- the command line ---------------------------------------------------------------------------

def test_help_ends_with_an_example():
    result = runner.invoke(app, ["dev", "--help"])
    assert result.exit_code == 0
    description = result.stdout.split("Options:")[0].rstrip()
    assert description.splitlines()[-2:] == [
        "    dynwf dev --port 8787 --fast-forward",
        """    curl -X POST localhost:8787 -H 'x-tenant-id: acme' -d '{"items": [{"price": 2}]}'"""]
    for option in ("--ip", "--port", "--no-reload", "--fast-forward", "--json", "--state-dir"):
        assert option in result.stdout


def test_a_port_in_use_is_one_line_and_exit_status_1(tmp_path):
    project = copy_hello(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_process = runner.invoke(app, ["dev", "--config", str(project / "wrangler.jsonc"),
                                         "--port", str(port)])
        assert isinstance(in_process.exception, DynwfError)
        assert in_process.exception.code == "dev.port_in_use"
        result = subprocess.run([str(DYNWF), "dev", "--config", str(project / "wrangler.jsonc"),
                                 "--port", str(port)], capture_output=True, text=True,
                                timeout=30)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error [dev.port_in_use] port {port} on 127.0.0.1 is already in use "
                           "(hint: stop the other server, or pass --port ")
    assert result.stdout == ""
    assert not (project / ".dynwf").exists()      # nothing was started, nothing written


def test_a_dispatcher_that_does_not_import_is_one_line_with_its_file_and_line(tmp_path):
    project = copy_hello(tmp_path)
    entry = project / "src" / "entry.py"
    # A module the dispatcher imports: dynwf check reads only the dispatcher, so loading finds it.
    (project / "src" / "settings.py").write_text("limits = {\n    'max': (\n}\n")
    entry.write_text(entry.read_text() + "import settings  # noqa: E402\n")
    lines = 3      # where Python finds the unmatched bracket
    result = subprocess.run([str(DYNWF), "dev", "--config", str(project / "wrangler.jsonc"),
                             "--port", str(free_port()), "--json"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error [dev.dispatcher_failed] the dispatcher failed to load: "
                           f"src/settings.py:{lines}:"), line
    assert result.stdout == ""


def test_a_project_with_check_errors_is_refused_with_its_diagnostics(tmp_path):
    project = copy_hello(tmp_path)
    config = project / "wrangler.jsonc"
    config.write_text(config.read_text().replace('"worker_loaders"', '"worker_loader"'))
    result = runner.invoke(app, ["dev", "--config", str(config), "--port", str(free_port())])
    assert result.exit_code == 1
    assert "DW103" in result.stderr and "env.LOADER is used" in result.stderr
    assert "did you mean 'worker_loaders'?" in result.stderr
    assert "dynwf dev: 1 error in the project" in result.stderr
    assert "SimpleNamespace" not in result.output


def test_var_options_and_dev_vars_reach_the_dispatchers_env(tmp_path, servers):
    project = copy_hello(tmp_path)
    entry = project / "src" / "entry.py"
    old = '            return Response.json({"error": "unknown tenant; send an x-tenant-id header naming "'
    assert entry.read_text().count(old) == 1
    # This dispatcher answers a request without a tenant with two of its env values.
    entry.write_text(entry.read_text().replace(old, (
        '            return Response.json({"token": self.env.TOKEN, "mode": self.env.MODE})\n' + old)))
    (project / ".dev.vars").write_text("TOKEN=from-dev-vars\nMODE=from-dev-vars\n")
    dev = start(servers, project, "--var", "MODE:from-cli")
    assert dev.post(None, {}) == (200, {"token": "from-dev-vars", "mode": "from-cli"})

    # An edited .dev.vars is seen without a restart, as wrangler dev restarts on it; --var
    # still wins. A .dev.vars that does not parse leaves the old values serving, and says why.
    mark = len(dev.lines)
    (project / ".dev.vars").write_text("TOKEN=edited\nMODE=edited\n")
    reload = dev.wait_for_record(kind="reload", target="dispatcher", after=mark)
    assert reload["paths"] == [".dev.vars"] and "error" not in reload, reload
    assert dev.post(None, {}) == (200, {"token": "edited", "mode": "from-cli"})
    mark = len(dev.lines)
    (project / ".dev.vars").write_text("TOKEN edited twice\n")
    broken = dev.wait_for_record(kind="reload", target="dispatcher", after=mark)
    assert ".dev.vars" in broken["error"] and "KEY=VALUE" in broken["error"], broken
    assert dev.post(None, {}) == (200, {"token": "edited", "mode": "from-cli"})


def test_a_tenants_failing_fetch_answers_and_logs_the_tenants_own_frames(tmp_path, servers):
    project = copy_hello(tmp_path)
    dev = start(servers, project)
    mark = len(dev.lines)
    request = urllib.request.Request(dev.url + "/", data=b"not json", method="POST",
                                     headers={"x-tenant-id": "acme"})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    body = json.loads(answer.value.read())
    assert answer.value.code == 500 and body["error"]["code"] == "worker.exception"
    # named as the tenant's code raised it, not as the class that carried it from the isolate
    assert body["error"]["message"].startswith("JSONDecodeError: Expecting value"), body
    frames = [f for f in body["error"]["traceback"] if "file" in f]
    # the dispatcher's fetch that called the tenant comes first, outermost call first
    assert [f["file"] for f in frames][:2] == ["src/entry.py", "acme/index.py"], frames
    # the tenant's frame as the tenant knows it, then the dispatcher's, relative to the project
    assert {"file": "acme/index.py", "function": "fetch",
            "source": 'instance = await self.env.WORKFLOWS.create({"params": await request.json()})',
            } in [{k: f[k] for k in ("file", "function", "source")} for f in frames], frames
    failed = dev.wait_for_record(kind="http.request", tenant="acme", status=500, after=mark)
    assert failed["error"]["traceback"] == body["error"]["traceback"]


def test_the_dev_log_for_a_person_prints_a_failed_requests_frames_under_it():
    from dynwf_cli.commands.dev import _PlainOutput
    from dynwf_cli.console import console
    from emulator.server import RequestRecord
    frames = [{"elided": 3, "of": "dynwf"},
              {"file": "acme/index.py", "line": 43, "function": "fetch",
               "source": "params = await request.json()"}]
    record = RequestRecord("POST", "/", "acme", 500, 0.004,
                           {"code": "worker.exception", "message": "JSONDecodeError: Expecting value",
                            "traceback": frames})
    with console.capture() as captured:
        _PlainOutput(project=None, fast_forward=False).request(record)
    assert captured.get().splitlines() == [
        "POST   /  acme  500  4 ms  [worker.exception] JSONDecodeError: Expecting value",
        "  raised at (most recent call last):",
        "    ... 3 frames of dynwf",
        "    acme/index.py:43 in fetch",
        "        params = await request.json()"]

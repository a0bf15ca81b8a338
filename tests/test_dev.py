"""``dynwf dev`` as a user runs it: a real server process on a real port, real HTTP requests,
real file saves (atomic, as editors do them) picked up by the watcher, and real signals.

Each test copies the hello example, so edits and state never touch the repository.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator.errors import DynwfError

HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello"
DYNWF = Path(sys.executable).with_name("dynwf")
runner = CliRunner()


# ---- helpers ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_hello(tmp_path: Path) -> Path:
    project = tmp_path / "hello"
    shutil.copytree(HELLO, project, ignore=shutil.ignore_patterns(".dynwf", "__pycache__"))
    return project


def save_atomically(path: Path, text: str) -> None:
    """What editors do: write a temporary file beside the real one, then rename it over."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


class DevServer:
    """A ``dynwf dev`` subprocess whose stdout lines are collected as they arrive."""

    def __init__(self, project: Path, *args: str, json_output: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "DYNWF_STATE_DIR"}
        command = [str(DYNWF), "dev", "--config", str(project / "wrangler.jsonc"),
                   "--port", str(self.port), *args] + (["--json"] if json_output else [])
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, cwd=project)
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._arrived: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True).start()

    def _read(self, stream: Any, is_stdout: bool) -> None:
        for line in stream:
            if is_stdout:
                self._arrived.put(line.rstrip("\n"))
            else:
                self.stderr.append(line)
        if is_stdout:
            self._arrived.put(None)

    def records(self) -> list[dict[str, Any]]:
        """Every NDJSON line so far (other lines are left out)."""
        self._drain(0)
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def _drain(self, timeout: float) -> bool:
        """Move arrived lines into ``lines``; False when stdout has ended."""
        try:
            line = self._arrived.get(timeout=timeout) if timeout > 0 else self._arrived.get_nowait()
        except queue.Empty:
            return True
        while True:
            if line is None:
                return False
            self.lines.append(line)
            try:
                line = self._arrived.get_nowait()
            except queue.Empty:
                return True

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 15,
                 after: int = 0) -> str:
        """The first stdout line from index ``after`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            for line in self.lines[seen:]:
                if predicate(line):
                    return line
            seen = max(seen, len(self.lines))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching line within {timeout}s; stdout so far:\n"
                                     + "\n".join(self.lines[-40:]) + "\nstderr:\n"
                                     + "".join(self.stderr))
            if not self._drain(remaining):
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                raise AssertionError("dynwf dev exited: " + "".join(self.stderr))

    def wait_for_record(self, timeout: float = 15, after: int = 0,
                        **fields: Any) -> dict[str, Any]:
        def matches(line: str) -> bool:
            if not line.startswith("{"):
                return False
            record = json.loads(line)
            return all(_get(record, key) == value for key, value in fields.items())
        return json.loads(self.wait_for(matches, timeout, after))

    def wait_until_healthy(self, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/__dynwf/health", timeout=5) as response:
                    health = json.loads(response.read())
                if health["ok"]:
                    return health
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("dynwf dev did not become healthy: " + "".join(self.stderr))
            try:  # the pause between polls, which also notices a server that died
                self.proc.wait(timeout=0.05)
                raise AssertionError("dynwf dev exited: " + "".join(self.stderr))
            except subprocess.TimeoutExpired:
                pass

    def post(self, tenant: str | None, body: Any, path: str = "/") -> tuple[int, Any]:
        headers = {"content-type": "application/json"}
        if tenant is not None:
            headers["x-tenant-id"] = tenant
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=20)
        while self._drain(0.5):
            pass
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _get(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("__"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


@pytest.fixture
def servers():
    started: list[DevServer] = []
    yield started
    for server in started:
        server.kill()


def start(servers: list[DevServer], project: Path, *args: str, **kwargs: Any) -> DevServer:
    server = DevServer(project, *args, **kwargs)
    servers.append(server)
    server.wait_until_healthy()
    return server


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
    line = dev.wait_for(lambda l: l.startswith("{") and
                        json.loads(l).get("instance", "").endswith("-" + tenant_visible_id))
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
    assert reloader._classify([root / "wrangler.jsonc"]).config

    keep = ProjectFilter(tmp_path / "elsewhere")
    added, modified = watchfiles.Change.added, watchfiles.Change.modified
    assert keep(added, str(root / "tenants/acme/index.py"))       # an atomic save's rename
    assert keep(modified, str(root / "src/entry.py"))
    for noise in (".dynwf/state.sqlite-wal", "tenants/acme/index.py.tmp",
                  "tenants/acme/.index.py.swp", "tenants/acme/__pycache__/index.cpython-311.pyc",
                  "tenants/acme/4913", "src/entry.py~", ".git/index"):
        assert not keep(added, str(root / noise)), noise
    assert not keep(modified, str(tmp_path / "elsewhere" / "state.sqlite"))


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

    # the second session prints for a person (stdout is a pipe: progress stays NDJSON)
    second = start(servers, project, "--state-dir", str(state), "--fast-forward",
                   json_output=False)
    second.wait_for(lambda line: "sleeping or waiting for an event" in line)
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
    assert second.lines[-1] == "stopped (SIGTERM)"


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
    lines = len(entry.read_text().splitlines())
    entry.write_text(entry.read_text() + "broken = (\n")
    result = subprocess.run([str(DYNWF), "dev", "--config", str(project / "wrangler.jsonc"),
                             "--port", str(free_port()), "--json"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error [dev.dispatcher_failed] the dispatcher failed to load: "
                           f"src/entry.py:{lines + 1}:"), line
    assert result.stdout == ""

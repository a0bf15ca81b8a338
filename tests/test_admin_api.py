"""The admin API of ``dynwf dev`` over real HTTP: the ops of the CLI, local-only, token-guarded
(docs/architecture.md §1 ops.py; docs/reliability.md, "dev server exposure")."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

from dev_harness import copy_hello, start

API = "/__dynwf/api"


def call(dev, method, path, body=None, *, token=None, headers=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(dev.url + path, data=data, method=method,
                                     headers={"content-type": "application/json", **(headers or {})})
    if token:
        request.add_header("x-dynwf-token", token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def token_of(project):
    return (project / ".dynwf" / "admin-token").read_text().strip()


def test_create_inspect_and_drive_an_instance_through_the_api(tmp_path, servers):
    project = copy_hello(tmp_path)
    dev = start(servers, project)
    token = token_of(project)
    status, created = call(dev, "POST", f"{API}/instances",
                           {"tenant": "globex", "id": "signup-1", "params": {"email": "a@b.co"}},
                           token=token)
    assert status == 201, created
    assert created["tenant"] == "globex" and created["tenant_instance_id"] == "signup-1"
    dev.wait_for_record(kind="step.waiting", step__name="confirm email", timeout=30)
    status, listed = call(dev, "GET", f"{API}/instances?tenant=globex")
    assert status == 200 and [row["tenant_instance_id"] for row in listed] == ["signup-1"]
    status, sent = call(dev, "POST", f"{API}/instances/signup-1/events?tenant=globex",
                        {"type": "email-confirmed", "payload": {"ok": True}}, token=token)
    assert status == 200, sent
    dev.wait_for_record(kind="instance.status", status="complete", timeout=30)
    status, described = call(dev, "GET", f"{API}/instances/signup-1?tenant=globex")
    assert described["status"] == "complete"
    assert described["output"] == {"account": "a", "plan": "free", "active": True, "confirmed": True}
    assert [s["name"] for s in described["steps"]][:2] == ["open account", "grace period"]


def test_refusals_are_clear_and_change_nothing(tmp_path, servers):
    project = copy_hello(tmp_path)
    dev = start(servers, project)
    token = token_of(project)
    create = {"tenant": "acme", "id": "o-1", "params": {}}
    assert call(dev, "POST", f"{API}/instances", create)[0] == 401                    # no token
    assert call(dev, "POST", f"{API}/instances", create, token="wrong")[0] == 401
    assert call(dev, "GET", f"{API}/instances", headers={"Host": "evil.example"})[0] == 403
    status, body = call(dev, "POST", f"{API}/instances", create, token=token,
                        headers={"Origin": "http://evil.example"})
    assert status == 403 and body["error"]["code"] == "admin.forbidden"
    status, body = call(dev, "POST", f"{API}/instances", token=token, raw=b"{not json")
    assert status == 400 and "not JSON" in body["error"]["message"]
    status, body = call(dev, "GET", f"{API}/instances/nope")
    assert status == 404 and body["error"]["code"] == "instance.not_found"
    status, body = call(dev, "POST", f"{API}/instances/nope/pause", token=token)
    assert status == 404
    status, body = call(dev, "POST", f"{API}/instances", token=token, raw=b" " * (3 * 1024 * 1024))
    assert status == 413
    ten_mb_event = b'{"type": "go", "payload": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    status, body = call(dev, "POST", f"{API}/instances/o-1/events", token=token, raw=ten_mb_event)
    assert status == 413 and body["error"]["code"] == "admin.too_large"
    status, body = call(dev, "POST", f"{API}/instances", {"tenant": "acme", "id": "bad id!"},
                        token=token)
    assert status == 400 and body["error"]["code"] == "instance.invalid_id"
    assert call(dev, "GET", f"{API}/instances")[1] == []    # nothing was created by any of it


def test_progress_streams_as_server_sent_events(tmp_path, servers):
    project = copy_hello(tmp_path)
    dev = start(servers, project)
    lines: list[str] = []
    connected = threading.Event()

    def listen():
        with urllib.request.urlopen(dev.url + f"{API}/events", timeout=30) as response:
            for raw in response:
                line = raw.decode().rstrip("\n")
                if line.startswith(": connected"):
                    connected.set()
                lines.append(line)
                if '"status": "waiting"' in line or '"status":"waiting"' in line:
                    return
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert connected.wait(10)
    status, _ = call(dev, "POST", f"{API}/instances", {"tenant": "globex", "id": "s-2"},
                     token=token_of(project))
    assert status == 201
    thread.join(30)
    events = [json.loads(line[len("data: "):]) for line in lines if line.startswith("data: ")]
    kinds = [event["kind"] for event in events]
    assert "step.started" in kinds and "step.committed" in kinds
    assert events[-1]["status"] == "waiting"

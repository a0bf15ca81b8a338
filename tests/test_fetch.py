"""``fetch`` from tenant code: the host sends every request as the dispatcher's ``global_outbound``
says, refuses what is out of bounds, and logs each request under its instance and step.

Real isolates (processes forked from the zygote, and the inline mode) and a real HTTP server on
127.0.0.1 in a thread of this process; the server's record of what reached it is part of every
assertion, so "refused" also means "never sent"."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from dynwf_cli.app import app
from dynwf_cli.checklist import Checklist
from dynwf_cli.console import THEME
from emulator.engine.progress import Progress
from emulator.isolates.guard import NO_GLOBAL_OUTBOUND_MESSAGE
from emulator.isolates.outbound import MAX_RESPONSE_BODY_BYTES, private_listener
from emulator.isolates.pool import IsolateLimits, IsolatePool
from emulator.loader import LoaderError, WorkerLoader
from emulator.rpc.target import RpcTarget
from emulator.runtime.workers import Response

ISOLATIONS = ["process", "inline"]


# ---- a real HTTP server ---------------------------------------------------------------------

class Server:
    """An HTTP server on 127.0.0.1 that records every request it receives."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.release = threading.Event()    # answers /slow
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                server.received.append({"method": self.command, "path": self.path,
                                        "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "body": body})
                if self.path == "/hello":
                    self._send(200, b'{"hello": "world"}', {"content-type": "application/json",
                                                            "x-served-by": "test-server"})
                elif self.path == "/echo":
                    self._send(201, body, {"content-type": self.headers.get("content-type", "")})
                elif self.path == "/redirect":
                    self._send(302, b"", {"location": "/hello"})
                elif self.path == "/redirect-to-file":
                    self._send(302, b"", {"location": "file:///etc/passwd"})
                elif self.path == "/slow":
                    server.release.wait(30)
                    self._send(200, b"late", {})
                elif self.path.startswith("/go?to="):
                    self._send(307, b"", {"location": self.path[len("/go?to="):]})
                elif self.path == "/big":
                    self._send(200, b"x" * (MAX_RESPONSE_BODY_BYTES + 1), {})
                else:
                    self._send(404, b"no such page", {"content-type": "text/plain"})

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def paths(self) -> list[str]:
        return [r["path"] for r in self.received]

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture()
def server():
    running = Server()
    yield running
    running.close()


# ---- isolates through the loader ------------------------------------------------------------

TENANT = '''
from workers import WorkerEntrypoint, fetch


async def outcome(call):
    try:
        response = await call
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"status": response.status, "headers": dict(response.headers.items()),
            "body": await response.text()}


class Default(WorkerEntrypoint):
    async def fetch_url(self, url, options=None):
        return await outcome(fetch(url, **(options or {})))

    async def socket_to(self, port):
        import socket
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return "connected"
        except OSError as exc:
            return type(exc).__name__

    async def give_up_after(self, url, seconds):
        import asyncio
        try:
            await asyncio.wait_for(fetch(url), seconds)
        except asyncio.TimeoutError:
            return "gave up"

    async def raw_host_call(self, method, args):
        """What hostile code can do: reach the runtime's connection to the host by reference
        and write a call frame of its own, around everything the workers module checks."""
        import asyncio, workers
        peer = workers.outbound_route.get().__self__.peer
        call_id = 1_000_000 + len(peer._pending)
        answer = asyncio.get_running_loop().create_future()
        peer._pending[call_id] = answer
        peer._send({"t": "call", "id": call_id, "ref": 0, "m": method, "a": args})
        return await outcome(answer)
'''

EGRESS_WORKER = '''
from workers import Response, WorkerEntrypoint

class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return Response.json({"egress worker saw": [str(request.method), request.url]}, status=299)
'''


class Egress(RpcTarget):
    """A dispatcher's egress control: sees every request; answers some, refuses the rest."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def fetch(self, request):
        self.seen.append((str(request.method), request.url, dict(request.headers.items()),
                          request.body))
        if "blocked.example" in request.url:
            raise PermissionError("egress policy: blocked.example is not allowed")
        return Response.json({"answered by": "egress"}, status=203,
                             headers={"x-egress": "yes"})


def tenant_code(**extra: Any):
    return lambda: {"compatibility_date": "2026-04-01", "main_module": "index.py",
                    "modules": {"index.py": TENANT}, **extra}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def with_pool(body, isolation: str, lines: list[tuple[str, str, str]] | None = None):
    lines = [] if lines is None else lines
    pool = IsolatePool(limits=IsolateLimits(memory_mb=256, cpu_ms=5_000), isolation=isolation,
                       log_sink=lambda *line: lines.append(line))
    await pool.start()
    try:
        return await body(WorkerLoader(pool)), lines
    finally:
        await pool.close()


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_with_global_outbound_omitted_the_host_makes_the_request(server, isolation):
    async def body(loader):
        tenant = loader.get("open", tenant_code()).get_entrypoint()
        if isolation == "process":  # fetch is the way out: the isolate itself has no socket
            assert await tenant.socket_to(int(server.base.rsplit(":", 1)[1])) == "PermissionError"
        return [
            await tenant.fetch_url(server.base + "/hello"),
            await tenant.fetch_url(server.base + "/echo", {
                "method": "POST", "headers": {"x-api-key": "k1"}, "body": "ping"}),
            await tenant.fetch_url(server.base + "/missing"),
            await tenant.fetch_url(server.base + "/redirect"),
        ]
    (hello, echo, missing, redirected), lines = run(with_pool(body, isolation))
    assert hello["status"] == 200
    assert hello["headers"]["x-served-by"] == "test-server"
    assert json.loads(hello["body"]) == {"hello": "world"}
    assert echo["status"] == 201 and echo["body"] == "ping"
    assert echo["headers"]["content-type"] == "text/plain;charset=UTF-8"  # fetch's, for a str body
    assert missing == {"status": 404, "headers": missing["headers"], "body": "no such page"}
    assert redirected["status"] == 200 and json.loads(redirected["body"]) == {"hello": "world"}
    posted = next(r for r in server.received if r["path"] == "/echo")
    assert posted["method"] == "POST" and posted["body"] == b"ping"
    assert posted["headers"]["x-api-key"] == "k1"
    assert server.paths() == ["/hello", "/echo", "/missing", "/redirect", "/hello"]
    # outside any step: logged as the tenant's own lines
    fetches = [(label, message) for label, level, message in lines if level == "fetch"]
    assert [label for label, _ in fetches] == ["LOADER:open"] * 4
    assert fetches[0][1].startswith(f"GET {server.base}/hello → 200 in ")
    assert fetches[1][1].startswith(f"POST {server.base}/echo → 201 in ")
    assert fetches[2][1].startswith(f"GET {server.base}/missing → 404 in ")


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_with_global_outbound_none_fetch_raises_the_platforms_message(server, isolation):
    async def body(loader):
        tenant = loader.get("closed", tenant_code(global_outbound=None)).get_entrypoint()
        return await tenant.fetch_url(server.base + "/hello")
    refused, lines = run(with_pool(body, isolation))
    assert refused == {"error": "PermissionError", "message": NO_GLOBAL_OUTBOUND_MESSAGE}
    assert server.received == []
    ((level, message),) = [(level, message) for _, level, message in lines]
    assert level == "fetch"
    assert re.fullmatch(rf"GET {re.escape(server.base)}/hello failed in \d+ ms: PermissionError: "
                        rf"{re.escape(NO_GLOBAL_OUTBOUND_MESSAGE)}", message)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_dispatcher_stub_receives_every_request_and_answers_or_refuses(server, isolation):
    egress = Egress()

    async def body(loader):
        tenant = loader.get("proxied", tenant_code(global_outbound=egress)).get_entrypoint()
        return [
            await tenant.fetch_url(server.base + "/hello", {"headers": {"authorization": "t0k"}}),
            await tenant.fetch_url("https://blocked.example/x", {"method": "PUT", "body": b"\x00"}),
        ]
    (answered, refused), lines = run(with_pool(body, isolation))
    assert answered == {"status": 203, "body": '{"answered by":"egress"}',
                        "headers": {"content-type": "application/json", "x-egress": "yes"}}
    assert refused == {"error": "PermissionError",
                       "message": "egress policy: blocked.example is not allowed"}
    assert egress.seen == [("GET", server.base + "/hello", {"authorization": "t0k"}, b""),
                           ("PUT", "https://blocked.example/x", {}, b"\x00")]
    assert server.received == []                    # the stub answered: nothing went out
    messages = [message for _, level, message in lines if level == "fetch"]
    assert messages[0].startswith(f"GET {server.base}/hello → 203 in ")
    assert messages[0].endswith(" via global_outbound")
    assert "failed in" in messages[1] and "PermissionError: egress policy" in messages[1]


def test_a_loaded_worker_can_be_the_global_outbound(server):
    async def body(loader):
        egress = loader.get("egress", lambda: {"main_module": "index.py",
                                               "modules": {"index.py": EGRESS_WORKER},
                                               "global_outbound": None}).get_entrypoint()
        tenant = loader.get("proxied", tenant_code(global_outbound=egress)).get_entrypoint()
        return await tenant.fetch_url(server.base + "/hello", {"method": "DELETE"})
    answer, _ = run(with_pool(body, "process"))
    assert answer["status"] == 299
    assert json.loads(answer["body"]) == {"egress worker saw": ["DELETE", server.base + "/hello"]}
    assert server.received == []


def test_a_global_outbound_without_fetch_is_a_loader_error():
    async def body(loader):
        with pytest.raises(LoaderError) as info:
            await loader.get("t", tenant_code(global_outbound="https://proxy")).get_entrypoint() \
                .fetch_url("https://example.com/")
        return str(info.value)
    message, _ = run(with_pool(body, "process"))
    assert "global_outbound of 't' must be None" in message and "not str" in message


def request_value(url: str, method: str = "GET", headers: Any = (), body: Any = None) -> dict:
    """A Request as it crosses the wire, written by hand so nothing on the isolate's side
    checks it first."""
    return {"$rpc": "val", "tag": "request",
            "v": {"url": url, "method": method, "headers": [list(h) for h in headers], "body": body}}


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_the_host_refuses_a_hostile_call_to_its_fetch(server, isolation):
    """The isolate writes call frames itself, to the host root and to its step handle's method
    name on the root, with what the workers module would never send."""
    hello = server.base + "/hello"
    cases = {
        "not a request": ("fetch", [hello]),
        "file url": ("fetch", [request_value("file:///etc/passwd")]),
        "no host": ("fetch", [request_value("http:///path")]),
        "credentials": ("fetch", [request_value("http://user:pw@127.0.0.1/")]),
        "long url": ("fetch", [request_value(hello + "?" + "a" * 20_000)]),
        "control character": ("fetch", [request_value(hello + "\r\nx: y")]),
        "connect": ("fetch", [request_value(hello, "CONNECT")]),
        "connection header": ("fetch", [request_value(hello, headers=[("transfer-encoding",
                                                                        "chunked")])]),
        "many headers": ("fetch", [request_value(hello, headers=[(f"x-{n}", "v")
                                                                 for n in range(200)])]),
        "huge header": ("fetch", [request_value(hello, headers=[("x-a", "v" * 20_000)])]),
        "wide header": ("fetch", [request_value(hello, headers=[("x-a", "\u2603")])]),
        "lying length": ("fetch", [request_value(server.base + "/echo", "POST",
                                                 [("content-length", "1")], "abc")]),
        "huge body": ("fetch", [request_value(server.base + "/echo", "POST",
                                              body="x" * (2 * 1024 * 1024 + 1))]),
    }

    async def body(loader):
        open_tenant = loader.get("open", tenant_code()).get_entrypoint()
        answers = {name: await open_tenant.raw_host_call(method, args)
                   for name, (method, args) in cases.items()}
        closed = loader.get("closed", tenant_code(global_outbound=None)).get_entrypoint()
        # a valid request, sent straight to the host: the policy is the host's, not the call's
        answers["closed, straight to the host"] = await closed.raw_host_call(
            "fetch", [request_value(hello)])
        answers["open, straight to the host"] = await open_tenant.raw_host_call(
            "fetch", [request_value(hello)])
        return answers
    answers, _ = run(with_pool(body, isolation))
    expected = {
        "not a request": ("TypeError", "fetch needs a Request, not str"),
        "file url": ("TypeError", "only http and https URLs"),
        "no host": ("TypeError", "names no host"),
        "credentials": ("TypeError", "includes credentials"),
        "long url": ("ValueError", "over the limit of 16,384"),
        "control character": ("TypeError", "spaces or control characters"),
        "connect": ("TypeError", "the CONNECT method is not allowed"),
        "connection header": ("TypeError", "belongs to the connection"),
        "many headers": ("ValueError", "200 headers, over the limit of 128"),
        "huge header": ("ValueError", "over the limit of 16,384"),
        "wide header": ("TypeError", "above U+00FF"),
        "lying length": ("ValueError", "does not match the body's 3 bytes"),
        "huge body": ("ValueError", "over the 2 MiB limit"),
        "closed, straight to the host": ("PermissionError", NO_GLOBAL_OUTBOUND_MESSAGE),
    }
    for name, (error, fragment) in expected.items():
        assert answers[name].get("error") == error and fragment in answers[name]["message"], \
            (name, answers[name])
    assert answers["open, straight to the host"]["status"] == 200   # the same frame, allowed
    assert server.paths() == ["/hello"]                 # nothing refused reached the server


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_what_the_server_answers_out_of_bounds_is_refused(server, isolation):
    async def body(loader):
        tenant = loader.get("open", tenant_code()).get_entrypoint()
        return [await tenant.fetch_url(server.base + "/redirect-to-file"),
                await tenant.fetch_url(server.base + "/big"),
                await tenant.fetch_url("http://127.0.0.1:1/")]
    (to_file, big, unreachable), _ = run(with_pool(body, isolation))
    assert to_file["error"] == "ConnectionError" and "file:///etc/passwd" in to_file["message"]
    assert big["error"] == "ConnectionError" and "over the 16 MiB limit" in big["message"]
    assert unreachable["error"] == "ConnectionError"
    assert unreachable["message"].startswith("could not reach 127.0.0.1:1: ")


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_request_the_tenant_gives_up_on_is_cancelled_in_the_host_and_logged(server, isolation):
    async def body(loader):
        tenant = loader.get("open", tenant_code()).get_entrypoint()
        outcome = await tenant.give_up_after(server.base + "/slow", 0.3)
        deadline = time.monotonic() + 10
        while not any("cancelled" in line[2] for line in lines) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return outcome

    lines: list[tuple[str, str, str]] = []
    outcome, logged = run(with_pool(body, isolation, lines))
    assert outcome == "gave up"
    (message,) = [message for _, level, message in logged if level == "fetch"]
    assert re.fullmatch(rf"GET {re.escape(server.base)}/slow cancelled after \d+ ms", message)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_private_listener_is_reached_by_no_spelling_and_no_redirect(server, isolation):
    other = Server()
    port = server.base.rsplit(":", 1)[1]

    async def body(loader):
        tenant = loader.get("open", tenant_code()).get_entrypoint()
        with private_listener("127.0.0.1", int(port)):
            refused = [await tenant.fetch_url(server.base + "/hello"),
                       await tenant.fetch_url(f"http://localhost:{port}/hello"),
                       await tenant.fetch_url(f"{other.base}/go?to={server.base}/hello")]
        return refused, await tenant.fetch_url(server.base + "/hello")
    try:
        (refused, afterwards), _ = run(with_pool(body, isolation))
    finally:
        other.close()
    for answer in refused:
        assert answer == {"error": "ConnectionError", "message": f"127.0.0.1:{port} is the dev "
                          "server itself, which requests from the host may not reach"}, answer
    assert other.paths() == [f"/go?to={server.base}/hello"]
    assert afterwards["status"] == 200 and server.paths() == ["/hello"]


# ---- a project: the request in the instance's logs -----------------------------------------

WRANGLER = '''{
  "name": "fetching", "main": "src/entry.py", "compatibility_date": "2026-04-01",
  "workflows": [{"name": "tenant-workflows", "binding": "WORKFLOWS",
                 "class_name": "DynamicWorkflow"}],
  "worker_loaders": [{"binding": "LOADER"}]
}
'''

DISPATCHER = '''
from pathlib import Path

from workers import Response, RpcTarget, WorkerEntrypoint
from dynamic_workflows import (DynamicWorkflowBinding, create_dynamic_workflow_entrypoint,
                               wrap_workflow_binding)

TENANTS = Path(__file__).resolve().parent.parent / "tenants"


class Egress(RpcTarget):
    async def fetch(self, request):
        return Response.json({"hello": "from egress"}, status=200)


def load_tenant(env, tenant_id):
    async def code():
        code = {"compatibility_date": "2026-04-01", "main_module": "index.py",
                "modules": {"index.py": (TENANTS / tenant_id / "index.py").read_text()},
                "env": {"WORKFLOWS": wrap_workflow_binding({"tenantId": tenant_id})}}
        if tenant_id == "closed":
            code["global_outbound"] = None
        elif tenant_id == "proxied":
            code["global_outbound"] = Egress()
        return code
    return env.LOADER.get(tenant_id, code)


DynamicWorkflow = create_dynamic_workflow_entrypoint(
    lambda ctx: load_tenant(ctx.env, ctx.metadata["tenantId"]).get_entrypoint("TenantWorkflow"))


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        tenant = request.headers.get("x-tenant-id")
        return await load_tenant(self.env, tenant).get_entrypoint().fetch(request)
'''

WORKFLOW = '''
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint, fetch


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        try:
            response = await fetch((await request.json())["url"])
        except Exception as exc:
            return Response.json({"error": type(exc).__name__, "message": str(exc)})
        return Response.json({"status": response.status})


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("call api", config={"retries": {"limit": 0, "delay": "1 second"}})
        async def call_api():
            try:
                response = await fetch(event["payload"]["url"])
            except PermissionError as exc:
                return {"refused": str(exc)}
            return {"status": response.status, "body": await response.json()}

        return await call_api()
'''

HOSTILE_WORKFLOW = '''
import asyncio
import workers
from workers import WorkflowEntrypoint


async def raw_call(ref, method, args):
    """A call frame written by hand to the host object ``ref`` (here: the step handle)."""
    peer = workers.outbound_route.get().__self__.peer
    call_id = 2_000_000 + len(peer._pending)
    answer = asyncio.get_running_loop().create_future()
    peer._pending[call_id] = answer
    peer._send({"t": "call", "id": call_id, "ref": ref, "m": method, "a": args})
    try:
        return ["allowed", repr(await answer)[:200]]
    except Exception as exc:
        return [type(exc).__name__, str(exc)]


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        handle = step._client.backend._stub._ref
        request = {"$rpc": "val", "tag": "request",
                   "v": {"url": event["payload"]["url"], "method": "GET", "headers": [],
                         "body": None}}
        file_request = {**request, "v": {**request["v"], "url": "file:///etc/passwd"}}
        refused = {
            "file url": await raw_call(handle, "fetch", [["do", "x", 1], file_request]),
            "not a request": await raw_call(handle, "fetch", [["do", "x", 1], "http://x/"]),
        }
        if event["payload"].get("break"):   # a frame the runtime never sends: a protocol break
            await raw_call(handle, "fetch", [["do", 5, 1], request])
        return refused
'''

runner = CliRunner()


@pytest.fixture()
def project(tmp_path, monkeypatch):
    root = tmp_path / "fetching"
    (root / "src").mkdir(parents=True)
    (root / "wrangler.jsonc").write_text(WRANGLER)
    (root / "src" / "entry.py").write_text(DISPATCHER)
    for tenant in ("open", "closed", "proxied", "hostile"):
        (root / "tenants" / tenant).mkdir(parents=True)
        (root / "tenants" / tenant / "index.py").write_text(
            HOSTILE_WORKFLOW if tenant == "hostile" else WORKFLOW)
    monkeypatch.chdir(root)
    return root


def dynwf_run(tenant: str, url: str, isolation: str) -> tuple[dict, list[dict]]:
    result = runner.invoke(app, ["run", "--tenant", tenant, "--params", json.dumps({"url": url}),
                                 "--isolation", isolation, "--json"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return events[-1], events[:-1]


def checklist_text(events: list[dict]) -> str:
    """The run's live checklist as a person would see it, rebuilt from its progress events."""
    checklist = Checklist([], instance_id=events[0]["instance"], tenant="open")
    for event in events:
        step = event.get("step")
        data = {k: v for k, v in event.items() if k not in ("kind", "instance", "at", "step")}
        checklist.apply(Progress(event["kind"], event["instance"], event["at"],
                                 (step["kind"], step["name"], step["count"]) if step else None,
                                 data))
    console = Console(width=120, no_color=True, record=True, force_terminal=False, theme=THEME,
                      file=io.StringIO())
    console.print(checklist.render())
    return console.export_text()


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_request_in_a_step_is_logged_under_its_instance_and_step(project, server, isolation):
    result, events = dynwf_run("open", server.base + "/hello", isolation)
    assert result["status"] == "complete"
    assert result["output"] == {"status": 200, "body": {"hello": "world"}}
    logs = [e for e in events if e["kind"] == "log"]
    assert len(logs) == 1
    assert logs[0]["step"] == {"kind": "do", "name": "call api", "count": 1}
    assert logs[0]["level"] == "fetch"
    message = logs[0]["message"]
    assert message.startswith(f"GET {server.base}/hello → 200 in ") and message.endswith(" ms")
    assert int(message.split(" in ")[1].split()[0]) >= 0

    # where a developer looks: the live checklist, under the step ...
    shown = checklist_text(events)
    step_line = next(n for n, line in enumerate(shown.splitlines()) if "call api" in line)
    assert f"│ fetch: GET {server.base}/hello → 200 in " in shown.splitlines()[step_line + 1]
    # ... and `dynwf instances logs`, the same lines the dashboard's instance view reads
    listed = runner.invoke(app, ["instances", "logs", result["tenant_instance"],
                                 "--tenant", "open"])
    assert listed.exit_code == 0, listed.output
    assert f"[call api] fetch: GET {server.base}/hello → 200 in " in listed.stdout
    as_json = runner.invoke(app, ["instances", "logs", result["tenant_instance"],
                                  "--tenant", "open", "--json"])
    line = json.loads(as_json.stdout.splitlines()[0])
    assert (line["level"], line["message"]) == ("fetch", message)
    assert line["step"]["name"] == "call api"


@pytest.mark.parametrize("tenant, output, logged", [
    ("closed", {"refused": NO_GLOBAL_OUTBOUND_MESSAGE},
     r"failed in \d+ ms: PermissionError: " + re.escape(NO_GLOBAL_OUTBOUND_MESSAGE)),
    ("proxied", {"status": 200, "body": {"hello": "from egress"}},
     r"→ 200 in \d+ ms via global_outbound"),
])
def test_refused_and_proxied_requests_are_logged_too(project, server, tenant, output, logged):
    result, events = dynwf_run(tenant, server.base + "/hello", "process")
    assert result["output"] == output
    (log,) = [e for e in events if e["kind"] == "log"]
    assert log["level"] == "fetch" and log["step"]["name"] == "call api"
    assert re.fullmatch(rf"GET {re.escape(server.base)}/hello {logged}", log["message"]), log
    assert server.received == []


def test_the_step_handle_refuses_a_hostile_call_to_its_fetch(project, server):
    result, events = dynwf_run("hostile", server.base + "/hello", "process")
    assert result["status"] == "complete", result
    refused = result["output"]
    assert refused["file url"][0] == "TypeError" and "only http and https" in refused["file url"][1]
    assert refused["not a request"] == ["TypeError", "fetch needs a Request, not str"]
    assert server.received == []
    logged = [e["message"] for e in events if e["kind"] == "log"]
    assert len(logged) == 2 and all(" failed in " in line for line in logged)


def test_a_malformed_fetch_frame_to_the_step_handle_kills_the_isolate(project, server):
    """A step key the runtime never sends is a protocol break, not a refusal: the host kills the
    isolate and the instance fails with isolate.protocol (docs/reliability.md)."""
    result = runner.invoke(app, ["run", "--tenant", "hostile", "--params",
                                 json.dumps({"url": server.base + "/hello", "break": True}),
                                 "--isolation", "process", "--json"])
    assert result.exit_code == 1, result.output
    final = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")][-1]
    assert final["status"] == "errored"
    assert "[isolate.protocol]" in final["error"]["message"]
    assert "a step key is not [str, str, int]" in final["error"]["message"]
    assert server.received == []


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("case", ["bad method", "header injection", "body on get", "body type"])
def test_a_request_value_the_runtime_never_builds_is_a_protocol_break(server, isolation, case):
    """The workers module never builds such a Request: receiving one means the isolate wrote the
    frame itself, which kills it; its neighbours go on."""
    hello = server.base + "/hello"
    value, expected = {
        "bad method": (request_value(hello, "GE T"), "Invalid HTTP method"),
        "header injection": (request_value(hello, headers=[("x-a", "1\r\nx-b: 2")]),
                             "Invalid header value"),
        "body on get": (request_value(hello, body="x"), "cannot have body"),
        "body type": (request_value(server.base + "/echo", "POST", body=5),
                      "body must be str, bytes or None"),
    }[case]

    async def body(loader):
        tenant = loader.get("open", tenant_code()).get_entrypoint()
        with pytest.raises(Exception) as broken:
            await tenant.raw_host_call("fetch", [value])
        neighbour = loader.get("other", tenant_code()).get_entrypoint()
        return broken.value, await neighbour.fetch_url(hello)
    (error, neighbour), _ = run(with_pool(body, isolation))
    assert getattr(error, "code", None) == "isolate.protocol", error
    assert expected in str(error)
    assert neighbour["status"] == 200


def test_dynwf_dev_logs_a_tenants_requests_and_keeps_its_own_address_from_them(
        project, server, servers):
    from dev_harness import start
    dev = start(servers, project)
    status, answered = dev.post("open", {"url": server.base + "/hello"})
    assert (status, answered) == (200, {"status": 200})
    status, refused = dev.post("open", {"url": dev.url + "/__dynwf/"})
    assert status == 200 and refused["error"] == "ConnectionError"
    assert "is the dev server itself" in refused["message"]
    # outside any step: tenant log lines of dynwf dev, at level fetch
    def fetch_line(prefix: str) -> dict:
        def matches(line: str) -> bool:
            record = json.loads(line) if line.startswith("{") else {}
            return record.get("kind") == "tenant.log" and record.get("level") == "fetch" \
                and record["message"].startswith(prefix)
        return json.loads(dev.wait_for(matches))
    answered_line = fetch_line(f"GET {server.base}/hello ")
    assert answered_line["tenant"] == "open"
    assert re.fullmatch(rf"GET {re.escape(server.base)}/hello → 200 in \d+ ms",
                        answered_line["message"])
    refused_line = fetch_line(f"GET {dev.url}/__dynwf/ ")
    assert " failed in " in refused_line["message"] and "dev server itself" in refused_line["message"]
    assert server.paths() == ["/hello"]

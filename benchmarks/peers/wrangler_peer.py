"""Cloudflare's local stack, ``wrangler dev`` on loopback, with a generated Worker: the same
3-step and 100-step workflows as Workflows (``WorkflowEntrypoint``), a route that creates an
instance and one that returns its status.

The local ``status()`` carries no timestamps, so "create to complete" is observed by polling
status over a keep-alive connection: its resolution is one poll round trip (about a millisecond
here, against tens of milliseconds measured). Throughput uses ``clients`` concurrent clients, each
creating an instance and polling it to completion, as a caller of the real service would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.peers.env import Installed, PeerUnavailable

WORKER = """\
import { WorkflowEntrypoint } from "cloudflare:workers";

export class ThreeSteps extends WorkflowEntrypoint {
  async run(event, step) {
    const first = await step.do("first", async () => 1);
    const second = await step.do("second", async () => first + 1);
    return await step.do("third", async () => second + 1);
  }
}

export class HundredSteps extends WorkflowEntrypoint {
  async run(event, step) {
    let total = 0;
    for (let i = 0; i < 100; i++) {
      total += await step.do(`step-${i}`, async () => i);
    }
    return total;
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const binding = url.searchParams.get("wf") === "hundred" ? env.HUNDRED : env.THREE;
    if (url.pathname === "/create") {
      const instance = await binding.create({ params: {} });
      return Response.json({ id: instance.id });
    }
    if (url.pathname === "/status") {
      const instance = await binding.get(url.searchParams.get("id"));
      const status = await instance.status();
      return Response.json({ status: status.status, error: status.error ?? null });
    }
    return new Response("ok");
  },
};
"""

CONFIG = {
    "name": "dynwf-bench-peer",
    "main": "src/index.js",
    "compatibility_date": "2025-09-01",
    "workflows": [
        {"name": "three", "binding": "THREE", "class_name": "ThreeSteps"},
        {"name": "hundred", "binding": "HUNDRED", "class_name": "HundredSteps"},
    ],
}

FINISHED = ("complete", "errored", "terminated")


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to the local server (GET only, JSON bodies)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, Any]:
        for attempt in (1, 2):
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                return await self._exchange(path)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _exchange(self, path: str) -> tuple[int, Any]:
        assert self._reader is not None and self._writer is not None
        self._writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Connection: keep-alive\r\n\r\n".encode())
        status_line = await self._reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await self._reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self._reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
            body = b"".join(chunks)
        else:
            body = b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, body.decode(errors="replace")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WranglerSubject:
    name = "wrangler"

    def __init__(self, installed: Installed, clients: int = 16) -> None:
        self.installed = installed
        self.clients = clients
        self.version = installed.version
        self.node_version = installed.details.get("node_version")
        self.start_s = 0.0
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._state = tempfile.TemporaryDirectory(prefix="dynwf-bench-wrangler-")
        self._conn = HttpConnection(self.port)

    def _write_project(self) -> Path:
        project = self.installed.folder  # node_modules is found from here
        (project / "src").mkdir(exist_ok=True)
        (project / "src" / "index.js").write_text(WORKER)
        (project / "wrangler.json").write_text(json.dumps(CONFIG, indent=2))
        return project

    async def start(self) -> None:
        project = self._write_project()
        node = self.installed.details["node"]
        env = {k: v for k, v in os.environ.items()
               if k not in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID")}
        env.update({"WRANGLER_SEND_METRICS": "false", "CI": "true", "NO_COLOR": "1",
                    "PATH": os.pathsep.join([str(Path(node).parent), env.get("PATH", "")])})
        log = open(Path(self._state.name) / "wrangler.log", "wb")
        started = time.perf_counter()
        self._process = subprocess.Popen(
            [node, self.installed.details["wrangler"], "dev", "--ip", "127.0.0.1",
             "--port", str(self.port), "--persist-to", str(Path(self._state.name) / "state"),
             "--config", str(project / "wrangler.json")],
            cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + 90
        while True:
            if self._process.poll() is not None:
                tail = self._log_tail()
                raise PeerUnavailable(f"wrangler dev exited with status {self._process.returncode}: "
                                      f"{tail}")
            try:
                status, _ = await asyncio.wait_for(self._conn.get("/"), 5)
                if status == 200:
                    break
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                self._conn.close()
            if time.monotonic() > deadline:
                raise PeerUnavailable("wrangler dev did not answer on loopback within 90 s: "
                                      + self._log_tail())
            await asyncio.sleep(0.2)
        self.start_s = time.perf_counter() - started
        await self.latency(5)  # warm up: the first instances pay for the engine's start-up

    def _log_tail(self) -> str:
        try:
            lines = (Path(self._state.name) / "wrangler.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " / ".join(line.strip() for line in lines[-3:] if line.strip())

    async def _create_and_wait(self, conn: HttpConnection, workflow: str,
                               poll_gap_s: float = 0.0) -> None:
        status, body = await conn.get(f"/create?wf={workflow}")
        if status != 200:
            raise RuntimeError(f"wrangler /create answered {status}: {body}")
        instance = body["id"]
        deadline = time.monotonic() + 120
        while True:
            status, body = await conn.get(f"/status?wf={workflow}&id={instance}")
            if status == 200 and body.get("status") in FINISHED:
                if body["status"] != "complete":
                    raise RuntimeError(f"wrangler instance ended {body['status']}: {body.get('error')}")
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"wrangler instance {instance} did not complete within 120 s")
            if poll_gap_s:
                await asyncio.sleep(poll_gap_s)

    async def latency(self, samples: int) -> list[float]:
        values = []
        for _ in range(samples):
            start = time.perf_counter()
            await self._create_and_wait(self._conn, "three")
            values.append((time.perf_counter() - start) * 1000)
        return values

    async def steps_sequential(self, instances: int) -> float:
        start = time.perf_counter()
        for _ in range(instances):
            await self._create_and_wait(self._conn, "hundred")
        return instances * 100 / (time.perf_counter() - start)

    async def throughput(self, instances: int) -> float:
        remaining = [instances]
        connections = [HttpConnection(self.port) for _ in range(self.clients)]

        async def client(conn: HttpConnection) -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                await self._create_and_wait(conn, "three", poll_gap_s=0.005)
        start = time.perf_counter()
        try:
            await asyncio.gather(*(client(c) for c in connections))
        finally:
            for conn in connections:
                conn.close()
        return instances / (time.perf_counter() - start)

    def rss_mb(self) -> float:
        """Resident memory of the whole wrangler dev process tree (node and workerd)."""
        from benchmarks.common import rss_mb
        if self._process is None:
            return 0.0
        total, pending = 0.0, [self._process.pid]
        while pending:
            pid = pending.pop()
            total += rss_mb(pid)
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as children:
                    pending += [int(p) for p in children.read().split()]
            except OSError:
                pass
        return total

    async def close(self) -> None:
        self._conn.close()
        process = self._process
        if process is not None:
            # wrangler runs in a session of its own: the signal reaches node and workerd alike,
            # even when node has already gone
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                for _ in range(50):
                    if process.poll() is not None and not _group_alive(process.pid):
                        break
                    await asyncio.sleep(0.1)
                else:
                    continue
                break
            process.poll()
        self._state.cleanup()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

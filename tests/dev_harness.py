"""A ``dynwf dev`` process for tests: started on a free port, its NDJSON stdout collected as it
arrives, requests made with the standard library."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable


HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello"
DYNWF = Path(sys.executable).with_name("dynwf")


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


def start(servers: list[DevServer], project: Path, *args: str, **kwargs: Any) -> DevServer:
    server = DevServer(project, *args, **kwargs)
    servers.append(server)
    server.wait_until_healthy()
    return server


# ---- processes ----------------------------------------------------------------------------------

def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux: /proc/<pid>/task/*/children)."""
    found: set[int] = set()
    stack = [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    stack.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"

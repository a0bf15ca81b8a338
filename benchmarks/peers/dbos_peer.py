"""DBOS Transact on its SQLite system database, driven through ``dbos_driver.py`` in its own
virtual environment (one long-lived process, so rounds alternate with dynwf's)."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.peers.env import Installed, PeerUnavailable

DRIVER = Path(__file__).with_name("dbos_driver.py")


class DbosSubject:
    name = "dbos"

    def __init__(self, installed: Installed, clients: int = 16) -> None:
        self.installed = installed
        self.clients = clients
        self.version = installed.version
        self.start_s = 0.0
        self._process: asyncio.subprocess.Process | None = None
        self._state = tempfile.TemporaryDirectory(prefix="dynwf-bench-dbos-")
        self._log = open(Path(self._state.name) / "dbos.log", "wb")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._process = await asyncio.create_subprocess_exec(
            self.installed.details["python"], "-I", str(DRIVER), self._state.name,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=self._log,
            limit=16 * 1024 * 1024)
        ready = await self._read(timeout=120)
        if not ready.get("ready"):
            raise PeerUnavailable(f"the DBOS driver did not start: {ready}")
        self.version = ready.get("version") or self.version
        self.start_s = loop.time() - started
        await self.latency(5)  # warm up

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            raise PeerUnavailable(f"the DBOS driver gave no answer within {timeout:.0f} s") from None
        if not line:
            self._log.flush()
            tail = Path(self._log.name).read_text(errors="replace").strip().splitlines()[-3:]
            raise PeerUnavailable("the DBOS driver exited: " + " / ".join(tail))
        return json.loads(line)

    async def _ask(self, request: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write((json.dumps(request) + "\n").encode())
        await self._process.stdin.drain()
        answer = await self._read(timeout)
        if "error" in answer:
            raise RuntimeError(f"DBOS driver: {answer['error']}")
        return answer

    async def latency(self, samples: int) -> list[float]:
        return (await self._ask({"op": "latency", "n": samples}))["values"]

    async def steps_sequential(self, instances: int) -> float:
        return (await self._ask({"op": "steps", "n": instances}))["steps_per_s"]

    async def throughput(self, instances: int) -> float:
        return (await self._ask({"op": "throughput", "n": instances, "clients": self.clients}))["per_s"]

    async def rss_mb(self) -> float | None:
        return (await self._ask({"op": "rss"}))["rss_mb"]

    async def close(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            try:
                assert process.stdin is not None
                process.stdin.write(b'{"op": "quit"}\n')
                await process.stdin.drain()
                await asyncio.wait_for(process.wait(), 20)
            except (asyncio.TimeoutError, ConnectionError):
                process.kill()
                await process.wait()
        self._log.close()
        self._state.cleanup()


def describe() -> str:
    return f"DBOS Transact (SQLite system database), Python {sys.version.split()[0]}"

"""The dev loop: the commands a developer runs all day, timed as whole processes.

Four figures, each the median of ``runs`` processes after one that is not counted:

- ``help``: ``dynwf --help``;
- ``check``: ``dynwf check`` on the template project;
- ``run``: ``dynwf run`` of the template's acme tenant (the README's first command; ``dynwf init``
  is not timed), output piped, so NDJSON;
- ``dev``: ``dynwf dev`` started, and the README's first request (``POST /`` with
  ``x-tenant-id: acme``) sent at once, retried until the port listens: the time from the start
  of the process to the end of the response (an HTTP 200; anything else fails the figure). The
  server is then stopped with SIGTERM, outside the figure.

Each process is this checkout's ``dynwf`` (the console script's own two lines, with the checkout
first on ``PYTHONPATH``), started from a fresh interpreter. Wall time is what the targets are
about; each figure also carries the CPU time (user + system) of the process and every process it
waited for (the isolate zygote and its isolates included), which a busy machine moves less.

The packages' bytecode is compiled first (``compileall``, as ``pip install`` does), so a figure
is what an installed dynwf takes, not the one-off cost of compiling the sources.
"""

from __future__ import annotations

import compileall
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.report import DEVLOOP_TARGETS_S as TARGETS

ROOT = Path(__file__).resolve().parents[1]
#: The console script's body (``dynwf = "dynwf_cli.app:main"`` in pyproject.toml).
DYNWF = [sys.executable, "-c",
         "import sys; from dynwf_cli.app import main; sys.argv[0] = 'dynwf'; sys.exit(main())"]
PARAMS = '{"name": "Alice"}'
BODY = b'{"name": "Bob"}'


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("DYNWF_STATE_DIR", None)
    env.pop("PYTHONPYCACHEPREFIX", None)   # the bytecode beside the sources, as installed
    env["NO_COLOR"] = "1"
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall s, cpu s) of one whole process; a non-zero exit fails the figure."""
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[3:])} exited {done.returncode}: "
                           f"{done.stderr.decode(errors='replace')[-500:]}")
    return wall, _children_cpu() - cpu


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _first_response(port: int, deadline: float) -> bytes:
    """Send the README's request as soon as the port accepts it; the whole response."""
    request = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nx-tenant-id: acme\r\n"
               b"content-type: application/json\r\nconnection: close\r\n"
               b"content-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=30)
            break
        except ConnectionRefusedError:
            if time.perf_counter() > deadline:
                raise RuntimeError("dynwf dev never listened") from None
            time.sleep(0.002)
    with conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _dev_once(config: Path, cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(s from the start of ``dynwf dev`` to its first response, cpu s of the whole server)."""
    port = _free_port()
    cpu = _children_cpu()
    started = time.perf_counter()
    server = subprocess.Popen([*DYNWF, "dev", "--config", str(config), "--port", str(port),
                               "--json"], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        response = _first_response(port, started + 60)
        wall = time.perf_counter() - started
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, stderr = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            _, stderr = server.communicate()
    status = response.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise RuntimeError(f"dynwf dev answered {status!r}: {stderr.decode(errors='replace')[-500:]}")
    return wall, _children_cpu() - cpu   # the cpu includes the stop: the server is reaped after it


def _figure(samples: list[tuple[float, float]], target: float) -> dict[str, Any]:
    walls = sorted(s[0] for s in samples)
    return {"median_s": round(statistics.median(walls), 3), "min_s": round(walls[0], 3),
            "max_s": round(walls[-1], 3),
            "cpu_median_s": round(statistics.median(s[1] for s in samples), 3),
            "runs": len(samples), "target_s": target}


def measure(runs: int, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    for package in ("dynwf_cli", "emulator"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    env = _environment()
    with tempfile.TemporaryDirectory(prefix="dynwf-devloop-") as folder:
        cwd = Path(folder)
        subprocess.run([*DYNWF, "init", "demo", "--force"], cwd=cwd, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        config = cwd / "demo" / "wrangler.jsonc"
        commands: dict[str, Callable[[], tuple[float, float]]] = {
            "help": lambda: _timed([*DYNWF, "--help"], cwd, env),
            "check": lambda: _timed([*DYNWF, "check", "--config", str(config)], cwd, env),
            "run": lambda: _timed([*DYNWF, "run", "--config", str(config), "--tenant", "acme",
                                   "--params", PARAMS], cwd, env),
            "dev": lambda: _dev_once(config, cwd, env),
        }
        results: dict[str, Any] = {}
        for name, once in commands.items():
            once()  # not counted: the file cache, the state folder made
            results[name] = _figure([once() for _ in range(runs)], TARGETS[name])
            log(f"{name}: median {results[name]['median_s']} s "
                f"(target <= {TARGETS[name]} s)")
    return {"figures": results, "runs": runs, "bytecode": "compiled"}


def run(quick: bool = False) -> dict[str, Any]:
    return measure(5 if quick else 15,
                   lambda line: print(f"  {line}", file=sys.stderr, flush=True))


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))

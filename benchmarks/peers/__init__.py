"""Peers measured in the same invocation as dynwf: DBOS Transact (SQLite) and ``wrangler dev``.

:func:`start_peers` installs what is missing (timed apart from every figure), starts each peer
and returns the running ones with a printed reason for each one skipped. A peer never fails the
run: no network, no Node.js, a crash at start -- each is a skip with its reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from benchmarks.peers.env import PeerUnavailable, default_dir, ensure_dbos, ensure_wrangler

Log = Callable[[str], None]


async def start_peers(root: Path | None, names: list[str], log: Log) -> tuple[list[Any], dict]:
    """The running peers among ``names`` ("dbos", "wrangler"), and a report per peer:
    version, install seconds (0 when cached), start seconds, or the reason it was skipped."""
    from benchmarks.peers.dbos_peer import DbosSubject
    from benchmarks.peers.wrangler_peer import WranglerSubject
    root = root or default_dir()
    running: list[Any] = []
    report: dict[str, dict[str, Any]] = {}
    makers = {"dbos": (ensure_dbos, DbosSubject), "wrangler": (ensure_wrangler, WranglerSubject)}
    for name in names:
        ensure, subject_class = makers[name]
        try:
            log(f"peer {name}: preparing its environment in {root}")
            installed = ensure(root)
            if installed.install_s:
                log(f"peer {name}: installed in {installed.install_s:.1f} s (not part of any figure)")
            subject = subject_class(installed)
            try:
                await subject.start()
            except BaseException:
                await subject.close()
                raise
            log(f"peer {name} {subject.version}: started in {subject.start_s:.1f} s")
            running.append(subject)
            report[name] = {"version": subject.version, "install_s": round(installed.install_s, 1),
                            "start_s": round(subject.start_s, 1), "skipped": None}
            if name == "wrangler":
                report[name]["node"] = installed.details.get("node_version")
        except (PeerUnavailable, OSError, RuntimeError, ValueError, KeyError) as exc:
            log(f"peer {name}: skipped: {exc}")
            report[name] = {"skipped": str(exc)}
    return running, report


__all__ = ["PeerUnavailable", "default_dir", "start_peers"]

"""A stand-alone engine process: ``python -m emulator.engine.worker --db FILE|URL --workflows MOD:ATTR``.

``MOD:ATTR`` names an iterable of :class:`WorkflowDefinition` (or a callable returning one).
Several workers may serve one database file; each runs only instances it holds the lease of,
optionally only the ids given with ``--only``. SIGTERM/SIGINT stop it gracefully (leases are
handed back); SIGKILL is recovered by lease expiry.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys

from emulator.clock import SystemClock
from emulator.defaults import LEASE_MS, POLL_MS
from emulator.engine.engine import Engine
from emulator.interpreter import tune_for_serving


def load_definitions(spec: str):
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise SystemExit(f"--workflows must look like module:attribute, got {spec!r}")
    value = getattr(importlib.import_module(module_name), attribute)
    return list(value() if callable(value) else value)


async def serve(args: argparse.Namespace) -> None:
    only = None
    if args.only:
        only = [i for i in args.only.split(",") if i]
    clock = SkewedClock(args.clock_skew_ms) if args.clock_skew_ms else None
    engine = Engine(args.db, load_definitions(args.workflows), owner=args.owner, clock=clock,
                    lease_ms=args.lease_ms, poll_ms=args.poll_ms, only=only)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"worker {engine.owner} ready", flush=True)
    try:
        await engine.serve(stop)
    finally:
        engine.close()


class SkewedClock(SystemClock):
    """The system clock off by ``skew_ms``: a host whose clock is wrong."""

    def __init__(self, skew_ms: int) -> None:
        self.skew_ms = skew_ms

    def now_ms(self) -> int:
        return super().now_ms() + self.skew_ms

    def real_ms(self) -> int:
        return super().real_ms() + self.skew_ms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulator.engine.worker", description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--workflows", required=True, help="module:attribute of WorkflowDefinitions")
    parser.add_argument("--owner", default=None)
    parser.add_argument("--lease-ms", type=int, default=LEASE_MS,
                        help=f"how long a lease lasts unless renewed (default: {LEASE_MS})")
    parser.add_argument("--poll-ms", type=int, default=POLL_MS,
                        help=f"how often to look for other processes' changes (default: {POLL_MS})")
    parser.add_argument("--only", default=None, help="comma-separated instance ids to run")
    parser.add_argument("--clock-skew-ms", type=int, default=0,
                        help="run as a host whose clock is off by this much (tests of lease rules)")
    args = parser.parse_args(argv)
    tune_for_serving()
    asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())

"""A hostile tenant floods the host; its neighbour's latency and the host's memory are the figures.

``python -m benchmarks.flood [--quick]``; also the ``flood`` group of ``python -m benchmarks``.

On one :class:`~benchmarks.common.FullPath` host, tenant ``t0`` runs the 3-step workflow one
instance at a time (create-to-complete, as the latency figure does) while tenant ``hostile``,
whose code writes its own bytes to its RPC socket (found through ``gc``, as hostile code would),
floods the host in one of these ways, each in a phase of its own, then all at once:

- ``oversized``: a frame announcing 63 MiB, then bytes without end (the reported attack);
- ``dense``: frames of the largest size allowed (4 MiB) made of ``{}`` objects (the other one);
- ``text``: frames of the largest size allowed that the host accepts, a 4 MiB log line each;
- ``costliest``: accepted frames as costly to parse as the limits allow (an answer to no call:
  lists nested 100 deep up to the limit of lists, then the slowest floats to read up to the
  limit of separators);
- ``logs``: 16 KiB lines printed outside any step, as fast as the isolate can;
- ``step_logs``: instances whose steps print 16 KiB lines, one after another.

A flood that breaks the protocol gets the hostile isolate killed; the driver calls it again at
once, so a fresh isolate floods again (``kills`` counts them). Each phase lasts a fixed time (4 s
quick, 15 s full), starts with a fresh hostile isolate and reports the neighbour's latency
(median, p99, max over every instance it ran), the host's RSS (before and peak; sampled every
20 ms) and how long the hostile connection was held back by its loop budget. Afterwards the cost
of decoding one frame of each kind in this process is measured (``frame_costs_ms``), and what
``json.loads`` alone would spend on the ``dense`` frame. Targets: neighbour p99 <= 50 ms in every
phase, host RSS peak <= 100 MB over its quiet level.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

from benchmarks.common import FullPath, percentiles, rss_mb
from emulator.rpc import frames

#: The frames of the floods that write their own bytes (run in the hostile isolate, and here to
#: time how long the host spends decoding one).
FRAME_BUILDERS = '''
import struct

FRAME = %(frame)d
CONTAINERS = %(containers)d
SEPARATORS = %(separators)d


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def oversized():
    return struct.pack(">I", 63 * 1024 * 1024) + b"[" + b"{}," * (1024 * 1024)


def dense():
    return frame(b"[" + b"{}," * ((FRAME - 4) // 3 - 1) + b"{}]")


def text():
    return frame(b'{"t":"send","ref":0,"m":"log","a":["info","' + b"x" * (FRAME - 64) + b'"]}')


def costliest():
    # as costly to parse as the counts allow, and answering no call: lists nested 100 deep up to
    # the limit of lists, then the floats slowest to read (~260 ns each) up to that of separators
    blocks = CONTAINERS // 100 - 1
    values = [b"[" * 100 + b"]" * 100] * blocks + [b"1e-300"] * (SEPARATORS - blocks - 8)
    return frame(b'{"t":"ok","id":999999999,"v":[' + b",".join(values) + b"]}")
''' % {"frame": frames.ISOLATE_FRAME_BYTES, "containers": frames.MAX_FRAME_CONTAINERS,
       "separators": frames.MAX_FRAME_SEPARATORS}

HOSTILE = '''
import asyncio
import gc

from workers import WorkerEntrypoint, WorkflowEntrypoint
''' + FRAME_BUILDERS + '''

def connection():
    for thing in gc.get_objects():  # the live one, not one closed after the warm-up
        if type(thing).__name__ == "StreamTransport" and not thing.writer.is_closing():
            return thing
    raise RuntimeError("no RPC connection found")


async def drained(transport):
    while transport.writer.get_write_buffer_size() > 0:
        await asyncio.sleep(0.001)


class Default(WorkerEntrypoint):
    async def flood(self, kind, seconds):
        transport = connection()
        data = {"oversized": oversized, "dense": dense, "text": text, "costliest": costliest}[kind]()
        loop = asyncio.get_running_loop()
        end, sent = loop.time() + seconds, 0
        while loop.time() < end:
            transport.flush()
            transport.writer.write(data)
            sent += 1
            await drained(transport)
        return sent

    async def shout(self, seconds):
        transport = connection()
        line = "y" * 16_384
        loop = asyncio.get_running_loop()
        end, printed = loop.time() + seconds, 0
        while loop.time() < end:
            for _ in range(64):
                print(line)
            printed += 64
            transport.flush()
            await drained(transport)
        return printed


class Chatty(WorkflowEntrypoint):
    async def run(self, event, step):
        line = "z" * 16_384
        for n in range(20):
            @step.do(f"talk {n}")
            async def talk():
                for _ in range(64):
                    print(line)
                return n
            await talk()
        return "talked"
'''

KINDS = ("oversized", "dense", "text", "costliest", "logs", "step_logs")
HOSTILE_KEY = "LOADER:hostile"
P99_TARGET_MS = 50.0
RSS_TARGET_MB = 100.0


def frame_costs() -> dict[str, Any]:
    """Milliseconds this process spends on one frame of each flood kind (best of 3)."""
    builders: dict[str, Any] = {}
    exec(compile(FRAME_BUILDERS, "<flood frames>", "exec"), builders)

    def build(kind: str) -> bytes:
        return builders[kind]()[4:]

    def best(action: Any) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            try:
                action()
            except Exception:
                pass
            times.append((time.perf_counter() - started) * 1000)
        return round(min(times), 2)

    out: dict[str, Any] = {}
    for kind in ("dense", "text", "costliest"):
        payload = build(kind)
        out[kind] = {"bytes": len(payload),
                     "host_decode_ms": best(lambda p=payload: frames.decode(p, frames.FROM_ISOLATE))}
    dense = build("dense")
    out["dense"]["json_loads_alone_ms"] = best(lambda: json.loads(dense))
    return out


async def _phase(path: FullPath, kind: str | None, seconds: float, seq: list[int]) -> dict[str, Any]:
    stop = asyncio.Event()
    counters = {"kills": 0, "calls": 0, "other_errors": 0, "instances": 0}
    errors: list[str] = []

    async def flood(which: str) -> None:
        while not stop.is_set():
            try:
                if which == "logs":
                    await path.call("hostile", "shout", 0.5)
                elif which == "step_logs":
                    seq[0] += 1
                    await path.run_one("hostile", f"chatty-{seq[0]}", "Chatty", timeout=60)
                    counters["instances"] += 1
                else:
                    await path.call("hostile", "flood", which, 0.5)
            except Exception as exc:  # noqa: BLE001 - a killed isolate is the point
                if getattr(exc, "code", None) == "isolate.protocol":
                    counters["kills"] += 1
                elif stop.is_set():
                    break                       # the phase's end kills the isolate
                else:
                    counters["other_errors"] += 1
                    if len(errors) < 3:
                        errors.append(f"{type(exc).__name__}: {exc}"[:200])
            counters["calls"] += 1

    rss: list[float] = []

    async def sample() -> None:
        while not stop.is_set():
            rss.append(rss_mb())
            await asyncio.sleep(0.02)

    _stop_hostile(path)             # each phase starts with a fresh hostile isolate
    before = rss_mb()
    kinds = KINDS if kind == "all" else (kind,) if kind else ()
    tasks = [asyncio.ensure_future(flood(which)) for which in kinds]
    tasks.append(asyncio.ensure_future(sample()))
    latency = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        seq[0] += 1
        latency.append(await path.run_one("t0", f"n-{seq[0]}") * 1000)
    isolate = path.host.pool.get_live(HOSTILE_KEY)
    budget = isolate.transport.budget if isolate is not None and isolate.transport else None
    stop.set()
    _stop_hostile(path)             # its calls may be held back for seconds: end them
    await asyncio.wait(tasks, timeout=60)
    figures = percentiles(latency)
    return {"flood": kind or "none", **figures, "max_ms": round(max(latency), 3),
            "host_rss_mb_before": round(before, 1), "host_rss_mb_peak": round(max(rss), 1),
            **counters, "errors": errors,
            "held_back_s": round(budget.paused_s, 2) if budget else None}


def _stop_hostile(path: FullPath) -> None:
    """Out of the pool first (no call may get it again), then killed, calls in flight or not."""
    isolate = path.host.pool.get_live(HOSTILE_KEY)
    if isolate is not None:
        path.host.pool.evict(HOSTILE_KEY)
        isolate.kill()


async def flood(quick: bool = False, log: Any = None) -> dict[str, Any]:
    seconds = 4.0 if quick else 15.0
    seq = [0]
    phases = []
    async with FullPath(tenants={"hostile": HOSTILE}) as path:
        for _ in range(30):                     # warm: both isolates, both code paths
            await path.run_one("t0", f"warm-{seq[0]}")
            seq[0] += 1
        await path.call("hostile", "shout", 0.01)
        for kind in (None, *KINDS, "all"):
            started = time.perf_counter()
            phase = await _phase(path, kind, seconds, seq)
            phase["elapsed_s"] = round(time.perf_counter() - started, 1)
            phases.append(phase)
            if log:
                log(_line(phase))
    quiet = phases[0]
    flooded = phases[1:]
    worst = max(flooded, key=lambda p: p["p99_ms"])
    return {
        "seconds_per_phase": seconds,
        "phases": phases,
        "quiet_p99_ms": quiet["p99_ms"],
        "worst_flood": worst["flood"],
        "worst_p99_ms": worst["p99_ms"],
        "median_of_flood_p99_ms": round(statistics.median(p["p99_ms"] for p in flooded), 3),
        "host_rss_mb_quiet": quiet["host_rss_mb_peak"],
        "host_rss_mb_peak": max(p["host_rss_mb_peak"] for p in phases),
        "host_rss_growth_mb": round(max(p["host_rss_mb_peak"] for p in phases)
                                    - quiet["host_rss_mb_peak"], 1),
        "frame_costs_ms": frame_costs(),
    }


def _line(phase: dict[str, Any]) -> str:
    return (f"{phase['flood']:>10}: neighbour n={phase['samples']} p50 {phase['median_ms']:6.2f} "
            f"p99 {phase['p99_ms']:6.2f} "
            f"max {phase['max_ms']:7.2f} ms; host RSS {phase['host_rss_mb_before']:.0f} -> peak "
            f"{phase['host_rss_mb_peak']:.0f} MB; kills {phase['kills']}, calls {phase['calls']}, "
            f"instances {phase['instances']}, held back {phase['held_back_s']} s"
            + (f"; errors {phase['errors']}" if phase["errors"] else ""))


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(flood(quick, log=lambda line: print(f"  {line}", file=sys.stderr, flush=True)))


def main(argv: list[str] | None = None) -> None:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flood", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 s a phase instead of 15 s")
    result = run(parser.parse_args(argv).quick)
    print(f"neighbour p99 quiet {result['quiet_p99_ms']} ms; worst under flood "
          f"{result['worst_p99_ms']} ms ({result['worst_flood']}), target <= {P99_TARGET_MS} ms")
    print(f"host RSS quiet {result['host_rss_mb_quiet']} MB, peak {result['host_rss_mb_peak']} MB "
          f"(+{result['host_rss_growth_mb']} MB), target <= +{RSS_TARGET_MB} MB")
    print("one frame, decoded by the host: " + "; ".join(
        f"{kind} {cost['bytes']:,} B in {cost['host_decode_ms']} ms" for kind, cost in
        result["frame_costs_ms"].items()) + f"; json.loads alone on the dense frame "
        f"{result['frame_costs_ms']['dense']['json_loads_alone_ms']} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

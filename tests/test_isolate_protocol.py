"""A tenant that writes its own bytes to its RPC socket: whatever it sends that our side never
sends breaks the protocol, the host kills its isolate, the calls in flight in it fail with
``isolate.protocol`` naming what was wrong, and a neighbour's call in flight answers as if
nothing happened (docs/reliability.md, "The host trusts nothing an isolate sends").

The tenant finds its connection the way hostile code would: by walking the garbage collector's
objects of its own interpreter, where the runtime's transport lives."""

import asyncio

import pytest

from benchmarks.common import rss_mb
from emulator.isolates.pool import IsolateLimits, IsolatePool
from emulator.loader import WorkerLoader
from emulator.rpc.frames import ISOLATE_FRAME_BYTES, MAX_DEPTH

RAW = '''
import asyncio
import gc
import json
import struct

from workers import WorkerEntrypoint


def connection():
    for thing in gc.get_objects():  # the live one, not one closed after the warm-up
        if type(thing).__name__ == "StreamTransport" and not thing.writer.is_closing():
            return thing
    raise RuntimeError("no RPC connection found")


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def call(method, args, ref=0, **extra):
    return frame(json.dumps({"t": "call", "id": 10_000, "ref": ref, "m": method, "a": args,
                             **extra}).encode())


ATTACKS = {
    # a length far past the limit, then a stream of bytes that never ends
    "oversized": lambda: struct.pack(">I", 63 * 1024 * 1024) + b"[" + b"{}," * (3 * 1024 * 1024),
    # as large as allowed, made of the smallest objects JSON has
    "dense": lambda: frame(b"[" + b"{}," * ((FRAME - 4) // 3 - 1) + b"{}]"),
    "not_utf8": lambda: frame(b'{"t": "send", "m": "\\xff\\xfe"}'),
    "not_json": lambda: frame(b'{"t": "send", '),
    "deep": lambda: frame(b"[" * 50_000 + b"]" * 50_000),
    "deep_legal_json": lambda: frame(b'{"t":"send","ref":0,"m":"log","a":["info",'
                                     + b"[" * (DEPTH + 1) + b"]" * (DEPTH + 1) + b"]}"),
    "nan": lambda: frame(b'{"t":"send","ref":0,"m":"log","a":["info",NaN]}'),
    "lone_surrogate": lambda: frame(b'{"t":"send","ref":0,"m":"log","a":["info","\\\\ud800"]}'),
    "huge_integer": lambda: frame(b'{"t":"send","ref":0,"m":"log","a":["info",' + b"9" * 5000
                                  + b"]}"),
    "not_an_object": lambda: frame(b"[1, 2, 3]"),
    "unknown_type": lambda: frame(b'{"t": "shout"}'),
    "call_without_id": lambda: frame(b'{"t":"call","ref":0,"m":"log","a":["info","x"]}'),
    "unknown_method": lambda: call("read_database", []),
    "private_method": lambda: call("_sink", []),
    "unknown_object": lambda: call("log", ["info", "x"], ref=4242),
    "wrong_arguments": lambda: call("log", ["info", "x", "and", "more"]),
    "malformed_tag": lambda: call("log", ["info", {"$rpc": "date"}]),
    # an error answer whose traceback the host must check before keeping it
    "err_traceback_shape": lambda: frame(json.dumps({"t": "err", "id": 1, "e": {
        "name": "E", "message": "m", "code": None, "traceback": [{"file": 7}]}}).encode()),
    "err_traceback_range": lambda: frame(json.dumps({"t": "err", "id": 1, "e": {
        "name": "E", "message": "m", "code": None, "traceback": [
            {"file": "a.py", "line": 10**12, "function": "f", "source": ""}]}}).encode()),
}


class Default(WorkerEntrypoint):
    async def attack(self, name):
        transport = connection()
        transport.flush()
        transport.writer.write(ATTACKS[name]())
        await asyncio.sleep(30)             # the host ends this call, not the isolate
        return "the host let it through"

    async def slow(self, seconds):
        await asyncio.sleep(seconds)
        return "slow done"

    async def send_huge(self):
        return "x" * (5 * 1024 * 1024)      # a result over the frame limit, by the runtime
'''


def code(tag: str):
    source = (RAW.replace("FRAME", str(ISOLATE_FRAME_BYTES)).replace("DEPTH", str(MAX_DEPTH)))
    return lambda: {"compatibility_date": "2026-04-01", "main_module": "index.py",
                    "modules": {"index.py": source}, "global_outbound": None}


async def with_pool(body):
    pool = IsolatePool(limits=IsolateLimits(memory_mb=256, cpu_ms=5000))
    await pool.start()
    try:
        return await body(pool, WorkerLoader(pool))
    finally:
        await pool.close()


@pytest.mark.parametrize("attack, fragment", [
    ("oversized", "a frame of 66,060,288 bytes is over the limit of 4,194,304 bytes for a message "
                  "from an isolate"),
    ("dense", "holds 1,398,101 lists and objects ('[' and '{'), over the limit of 65,536"),
    ("not_utf8", "a frame is not UTF-8"),
    ("not_json", "a frame is not JSON"),
    ("deep", "nests deeper than 128 levels"),
    ("deep_legal_json", "nests deeper than 128 levels"),
    ("nan", "NaN is not a JSON value"),
    ("lone_surrogate", "lone surrogate"),
    ("huge_integer", "a frame is not JSON: Exceeds the limit (4300 digits)"),
    ("not_an_object", "a message is a JSON list, not an object"),
    ("unknown_type", "a message of unknown type 'shout'"),
    ("call_without_id", "a call message needs an object id (int)"),
    ("unknown_method", "a call of HostRoot.'read_database', which is not a method"),
    ("private_method", "a call of HostRoot.'_sink', which is not a method"),
    ("unknown_object", "a reference to object 4242, which this side has not exported"),
    ("wrong_arguments", "a call of HostRoot.log with 4 arguments (it takes 2, by position)"),
    ("malformed_tag", "a tagged value in the arguments does not decode: KeyError"),
    ("err_traceback_shape", "an err message's traceback is refused: a traceback entry has the "
                            "fields ['file']"),
    ("err_traceback_range", "traceback is refused: a traceback entry's line 1000000000000 is outside "
                            "0 to 10,000,000"),
])
def test_a_frame_our_side_never_sends_kills_the_isolate_and_only_its_calls(attack, fragment):
    async def body(pool, loader):
        neighbour = loader.get("neighbour", code("n")).get_entrypoint()
        await neighbour.slow(0)
        hostile = loader.get("hostile", code("h")).get_entrypoint()
        await hostile.slow(0)
        victim_pid = pool.get_live("LOADER:hostile").pid
        rss_before = rss_mb()
        slow = asyncio.ensure_future(neighbour.slow(0.5))
        with pytest.raises(Exception) as info:
            await hostile.attack(attack)        # the tenant's method returns after 30 s
        rss_after = rss_mb()
        for retries in range(100):  # at once, as a caller retrying in a loop would
            try:
                again = await hostile.slow(0)   # a fresh isolate serves the tenant's next call
                break
            except Exception:  # noqa: BLE001 - the dead isolate handed out again
                continue
        neighbour_result = await slow
        gone = await _process_gone(victim_pid)
        return info.value, neighbour_result, gone, (retries, again), rss_after - rss_before
    error, neighbour_result, gone, again, rss_growth = asyncio.run(asyncio.wait_for(
        with_pool(body), 120))
    assert getattr(error, "code", None) == "isolate.protocol", error
    assert "the isolate of 'LOADER:hostile' broke the RPC protocol" in str(error)
    assert fragment in str(error)
    assert neighbour_result == "slow done"
    assert gone, "the isolate that broke the protocol is still running"
    assert again == (0, "slow done")
    assert rss_growth < 64, f"the host grew by {rss_growth:.0f} MiB reading one frame"


def test_an_announced_63_mib_frame_is_refused_before_it_is_buffered():
    """The isolate streams 9 MiB after a 63 MiB length; the host stops at the prefix."""
    async def body(pool, loader):
        hostile = loader.get("hostile", code("h")).get_entrypoint()
        await hostile.slow(0)
        before = rss_mb()
        with pytest.raises(Exception) as info:
            await asyncio.wait_for(hostile.attack("oversized"), 20)
        return info.value, rss_mb() - before
    error, growth = asyncio.run(asyncio.wait_for(with_pool(body), 60))
    assert getattr(error, "code", None) == "isolate.protocol"
    assert growth < 8, f"the host grew by {growth:.1f} MiB"


def test_an_honest_tenant_gets_payload_errors_on_its_own_side():
    """A result over the frame limit is refused inside the isolate, which lives on; a method
    name its stub does not offer is an AttributeError there, never a call to the host."""
    async def body(pool, loader):
        stub = loader.get("honest", code("h")).get_entrypoint()
        await stub.slow(0)
        pid = pool.get_live("LOADER:honest").pid
        with pytest.raises(Exception) as info:
            await stub.send_huge()
        after = await stub.slow(0)
        return info.value, pid, pool.get_live("LOADER:honest").pid, after
    error, pid_before, pid_after, after = asyncio.run(asyncio.wait_for(with_pool(body), 60))
    assert getattr(error, "code", None) == "payload.too_large", error
    assert "the result of invoke(): 5,242,9" in str(error)
    assert "over the limit of 4,194,304 bytes" in str(error)
    assert pid_before == pid_after and after == "slow done"


async def _process_gone(pid: int, seconds: float = 5.0) -> bool:
    """Whether ``pid`` is gone (or a zombie) within ``seconds``, polled."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except OSError:
            return True
        await asyncio.sleep(0.02)
    return False


def test_a_tenant_that_keeps_breaking_the_protocol_waits_longer_for_each_isolate():
    """Each break doubles the wait before the tenant's next isolate is loaded (0.1 s, 0.2 s,
    0.4 s...); a neighbour loaded meanwhile does not wait."""
    from emulator.isolates.pool import BROKEN_RELOAD_S

    async def body(pool, loader):
        hostile = loader.get("hostile", code("h")).get_entrypoint()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(4):
            with pytest.raises(Exception, match="broke the RPC protocol"):
                await hostile.attack("not_json")
        broken_for = loop.time() - started
        began = loop.time()
        await loader.get("neighbour", code("n")).get_entrypoint().slow(0)
        return broken_for, loop.time() - began
    broken_for, neighbour_load = asyncio.run(asyncio.wait_for(with_pool(body), 60))
    assert broken_for >= BROKEN_RELOAD_S * (1 + 2 + 4)      # three reloads after a break
    assert neighbour_load < BROKEN_RELOAD_S

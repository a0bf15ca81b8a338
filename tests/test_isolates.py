"""Isolates are real processes forked from the zygote: module sets served from memory, faults
contained to the calls in flight (docs/semantics.md §6, docs/architecture.md §7)."""

import asyncio
import time

import pytest

from emulator.isolates.pool import IsolateLimits, IsolatePool
from emulator.loader import LoaderError, WorkerLoader

TENANT = '''
import helper
from workers import WorkerEntrypoint

COUNT = 0

class Default(WorkerEntrypoint):
    async def greet(self, name):
        global COUNT
        COUNT += 1
        print("greeting", name)
        return {"text": helper.fmt(name), "count": COUNT}

    async def crash(self):
        import os
        os._exit(3)

    async def segfault(self):
        import faulthandler
        faulthandler._sigsegv()  # a real segfault in C code (ctypes is refused by the guard)

    async def spin(self):
        while True:
            pass

    async def hog(self):
        chunks = []
        while True:
            chunks.append(bytearray(16 * 1024 * 1024))

    async def connect(self):
        import socket
        socket.create_connection(("127.0.0.1", 9), timeout=1)

    async def steal(self):
        import other_tenant_module  # noqa: F401

    async def slow(self, seconds):
        import asyncio
        await asyncio.sleep(seconds)
        return "slow done"
'''


def code(tag: str, **extra):
    return lambda: {"compatibility_date": "2026-04-01", "main_module": "index.py",
                    "modules": {"index.py": TENANT, "helper.py": f"def fmt(n):\n    return '{tag} ' + n\n"},
                    "global_outbound": None, **extra}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def with_pool(body, **options):
    pool = IsolatePool(limits=IsolateLimits(memory_mb=128, cpu_ms=500), **options)
    await pool.start()
    try:
        return await body(pool, WorkerLoader(pool))
    finally:
        await pool.close()


def test_a_tenant_imports_its_own_modules_and_keeps_module_state():
    async def body(pool, loader):
        stub = loader.get("acme", code("acme")).get_entrypoint()
        first = await stub.greet("bob")
        second = await stub.greet("ann")
        return first, second, pool.live_count, pool.loads
    first, second, live, loads = run(with_pool(body))
    assert first == {"text": "acme bob", "count": 1}
    assert second == {"text": "acme ann", "count": 2}  # same isolate: module state persists
    assert (live, loads) == (1, 1)


def test_two_tenants_get_two_isolates_with_their_own_code():
    async def body(pool, loader):
        a = await loader.get("a", code("alpha")).get_entrypoint().greet("x")
        b = await loader.get("b", code("beta")).get_entrypoint().greet("x")
        isolates = {pool.get_live("LOADER:a").pid, pool.get_live("LOADER:b").pid}
        return a, b, isolates
    a, b, pids = run(with_pool(body))
    assert a["text"] == "alpha x" and b["text"] == "beta x"
    assert len(pids) == 2


@pytest.mark.parametrize("method, code_name, fragment", [
    ("crash", "isolate.crashed", "exited with status 3"),
    ("segfault", "isolate.crashed", "SIGSEGV"),
    ("spin", "isolate.cpu_limit", "held the CPU"),
    ("hog", "isolate.memory_limit", "ran out of memory"),
])
def test_a_fault_fails_only_the_calls_in_its_isolate(method, code_name, fragment):
    async def body(pool, loader):
        neighbour = loader.get("neighbour", code("n")).get_entrypoint()
        await neighbour.greet("warm")
        slow = asyncio.ensure_future(neighbour.slow(0.3))
        with pytest.raises(Exception) as info:
            await getattr(loader.get("victim", code("v")).get_entrypoint(), method)()
        neighbour_result = await slow
        again = await loader.get("victim", code("v")).get_entrypoint().greet("after")
        return info.value, neighbour_result, again
    error, neighbour_result, again = run(with_pool(body))
    assert getattr(error, "code", None) == code_name, error
    assert fragment in str(error)
    assert neighbour_result == "slow done"
    assert again["text"] == "v after" and again["count"] == 1  # a fresh isolate took over


def test_no_network_with_global_outbound_none():
    async def body(pool, loader):
        with pytest.raises(Exception) as info:
            await loader.get("t", code("t")).get_entrypoint().connect()
        return info.value
    error = run(with_pool(body))
    assert "not permitted to access the internet" in str(error)


def test_each_isolate_gets_the_guard_its_code_asks_for_whatever_the_spares_were_prepared_for():
    """Spare children install the guard ahead of need for one profile (network off by default);
    code that asks for another gets a child forked on demand, and the spares follow the profile
    asked for last. Whatever the order, no isolate opens a socket, and each says why in the words
    its code calls for: the platform's message without a global_outbound, a pointer to fetch()
    with one."""
    def open_code(tag):
        base = code(tag)
        return lambda: {k: v for k, v in base().items() if k != "global_outbound"}

    async def body(pool, loader):
        outcomes = []
        for n, kind in enumerate(["closed", "open", "closed", "open", "open", "closed", "closed"]):
            make = code if kind == "closed" else open_code
            stub = loader.get(f"{kind}-{n}", make(kind)).get_entrypoint()
            try:
                await stub.connect()
                outcomes.append((kind, "connected"))
            except Exception as exc:  # noqa: BLE001 - what the isolate answered is the point
                outcomes.append((kind, "no outbound" if "not permitted to access" in str(exc)
                                 else "use fetch" if "use fetch()" in str(exc)
                                 else type(exc).__name__))
        return outcomes
    for kind, outcome in run(with_pool(body)):
        assert outcome == ("no outbound" if kind == "closed" else "use fetch")


def test_tenant_code_cannot_import_other_modules():
    async def body(pool, loader):
        with pytest.raises(ImportError) as info:
            await loader.get("t", code("t")).get_entrypoint().steal()
        return info.value
    assert "other_tenant_module" in str(run(with_pool(body)))


def test_a_failing_code_callback_fails_each_call_with_its_error():
    def broken():
        raise RuntimeError("Code loader failed!")

    async def body(pool, loader):
        stub = loader.get("broken", broken).get_entrypoint()
        errors = []
        for _ in range(2):
            with pytest.raises(RuntimeError) as info:
                await stub.greet("x")
            errors.append(str(info.value))
        return errors
    assert run(with_pool(body)) == ["Code loader failed!"] * 2


def test_invalid_code_is_refused_naming_the_key():
    async def body(pool, loader):
        with pytest.raises(LoaderError) as info:
            await loader.get("t", lambda: {"main_module": "index.py", "modules": {"index.py": ""},
                                           "mainModul": "x"}).get_entrypoint().greet("x")
        return info.value
    assert "unknown key 'mainModul'" in str(run(with_pool(body)))


def test_the_pool_is_bounded_and_evicts_idle_isolates_first():
    async def body(pool, loader):
        for i in range(5):
            await loader.get(f"t{i}", code(f"t{i}")).get_entrypoint().greet("x")
        return pool.live_count, pool.loads
    live, loads = run(with_pool(body, max_isolates=3))
    assert (live, loads) == (3, 5)


def test_a_full_pool_of_busy_isolates_makes_new_tenants_wait_for_room():
    """Four tenants call at once into a pool of two: the last two wait until an isolate's
    call ends, and the pool never holds more than two."""
    async def body(pool, loader):
        most = 0

        async def watch():
            nonlocal most
            while True:
                most = max(most, pool.live_count + pool._starting)
                await asyncio.sleep(0.005)
        watcher = asyncio.ensure_future(watch())
        calls = [loader.get(f"t{n}", code(f"t{n}")).get_entrypoint().slow(0.3) for n in range(4)]
        results = await asyncio.gather(*calls)
        watcher.cancel()
        return results, most, pool.loads
    results, most, loads = run(with_pool(body, max_isolates=2))
    assert results == ["slow done"] * 4
    assert most == 2 and loads == 4


def test_past_the_room_wait_a_busy_pool_goes_over_its_bound_rather_than_hold_calls():
    async def body(pool, loader):
        slow = [loader.get(f"t{n}", code(f"t{n}")).get_entrypoint().slow(30) for n in range(2)]
        held = [asyncio.ensure_future(call) for call in slow]
        while sum(pool.get_live(f"LOADER:t{n}") is not None
                  and pool.get_live(f"LOADER:t{n}").in_flight for n in range(2)) < 2:
            await asyncio.sleep(0.01)         # both calls under way (run() bounds the wait)
        third = await loader.get("t2", code("t2")).get_entrypoint().greet("x")
        live = pool.live_count                 # both 30 s calls are still in flight
        for call in held:
            call.cancel()
        return third, live
    third, live = run(with_pool(body, max_isolates=2, room_wait_s=0.2))
    assert third["text"] == "t2 x" and live == 3


def test_a_stale_isolate_is_replaced_on_its_next_call():
    async def body(pool, loader):
        stub = loader.get("t", code("t")).get_entrypoint()
        await stub.greet("x")
        first = pool.get_live("LOADER:t").pid
        loader.mark_stale("t")
        result = await stub.greet("y")
        return first, pool.get_live("LOADER:t").pid, result
    first, second, result = run(with_pool(body))
    assert first != second
    assert result["count"] == 1


def test_print_outside_steps_reaches_the_host_log():
    lines = []

    async def body(pool, loader):
        await loader.get("t", code("t")).get_entrypoint().greet("bob")
        deadline = time.monotonic() + 5
        while not lines and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    run(with_pool(body, log_sink=lambda label, level, message: lines.append((label, level, message))))
    assert ("LOADER:t", "info", "greeting bob") in lines

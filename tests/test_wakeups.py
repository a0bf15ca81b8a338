"""Cross-host wake-ups on PostgreSQL (docs/reliability.md, "PostgreSQL: engines on many hosts";
docs/semantics.md §7.4): a change one engine commits is pushed to the engines of other processes
through LISTEN/NOTIFY, so they act on it at once instead of at their next poll.

Each engine here has its own store (its own connections, as another host would) and a poll
interval of a minute, so only a pushed wake-up can explain a reaction within the test's bound.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from postgres_db import require_psycopg

psycopg = require_psycopg()

from engine_harness import FnWorkflow  # noqa: E402
from emulator.engine import Engine, WorkflowDefinition  # noqa: E402
from emulator.engine.stores import open_store  # noqa: E402

#: longer than any test: an engine that reacts within REACT_S was woken, not polling
POLL_MS = 60_000
REACT_S = 2.0


async def until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def engines(url: str, fn, *names: str, poll_ms: int = POLL_MS, **kwargs) -> list[Engine]:
    return [Engine(open_store(url, application_name=f"test-{name}"),
                   [WorkflowDefinition("wf", lambda row: FnWorkflow(fn))], owner=name,
                   poll_ms=poll_ms, **kwargs) for name in names]


async def serving(*running: Engine) -> tuple[asyncio.Event, list[asyncio.Task]]:
    stop = asyncio.Event()
    tasks = [asyncio.get_running_loop().create_task(e.serve(stop)) for e in running]
    assert await until(lambda: all(e.listening for e in running)), "an engine never listened"
    return stop, tasks


async def stopped(stop: asyncio.Event, tasks: list[asyncio.Task], *closing: Engine) -> None:
    stop.set()
    await asyncio.gather(*tasks)
    for engine in closing:
        engine.close()


def test_an_event_sent_through_one_host_reaches_a_lifetime_another_host_runs(postgres_url):
    """The instance stays live on B (a step body in flight beside its event wait), so only B
    can deliver the event to the waiting step; A sends it."""
    after: dict[str, float] = {}
    release = asyncio.Event()

    async def wf(event, step):
        async def hold():
            @step.do("hold")
            async def body():
                await release.wait()
                return "held"
            return await body()

        async def then():
            got = await step.wait_for_event("go", "go", timeout="1 hour")

            @step.do("after")
            async def body():
                after[event["instanceId"]] = time.monotonic()
                return got["payload"]
            return await body()
        return await asyncio.gather(hold(), then())

    async def main():
        a, b = engines(postgres_url, wf, "a", "b")
        stop, tasks = await serving(b)
        latencies = []
        for n in range(5):
            await b.binding("wf").create({"id": f"i{n}"})
            assert await until(lambda n=n: b.store.get_step(f"i{n}", ("wait", "go", 1))
                               is not None), "the wait never started"
            sent = time.monotonic()
            a.control.send_event(f"i{n}", "go", {"n": n})
            assert await until(lambda n=n: f"i{n}" in after, REACT_S), \
                f"B did not hear the event within {REACT_S}s (its poll is {POLL_MS} ms)"
            latencies.append(after[f"i{n}"] - sent)
            assert f"i{n}" in b.live            # B ran it: the lifetime never left B
        release.set()
        assert await until(lambda: all(r.status == "complete" for r in b.store.list_instances()))
        assert b.changes_heard >= 5 and a.changes_heard == 0
        await stopped(stop, tasks, a, b)
        print(f"\nevent through A to a lifetime on B: {sorted(round(x * 1000, 1) for x in latencies)} ms")

    asyncio.run(main())


def test_pause_and_terminate_through_another_host_stop_the_lifetime_at_once(postgres_url):
    started = asyncio.Event()

    async def wf(event, step):
        for n in range(10_000):
            @step.do(f"s{n}")
            async def body():
                started.set()
                await asyncio.sleep(0.01)
                return n
            await body()

    async def main():
        a, b = engines(postgres_url, wf, "a", "b")
        stop, tasks = await serving(b)
        await b.binding("wf").create({"id": "p"})
        await b.binding("wf").create({"id": "t"})
        assert await until(lambda: "p" in b.live and "t" in b.live and started.is_set())
        a.control.pause("p")
        a.control.terminate("t")
        assert await until(lambda: "p" not in b.live and "t" not in b.live, REACT_S)
        assert await until(lambda: a.store.get_instance("p").status == "paused", REACT_S)
        assert a.store.get_instance("t").status == "terminated"
        await stopped(stop, tasks, a, b)

    asyncio.run(main())


def test_a_host_that_stops_hands_its_instances_to_another_at_once(postgres_url):
    """A's leases last a minute, B polls once a minute: B takes A's instance within the bound
    only because A's stop announced the released leases."""
    ran: list[str] = []

    async def wf(event, step):
        for n in range(3):
            @step.do(f"s{n}")
            async def body():
                ran.append(event["instanceId"])
                await asyncio.sleep(0.3)
                return n
            await body()
        return "done"

    async def main():
        a, b = engines(postgres_url, wf, "a", "b", lease_ms=60_000)
        stop_a, tasks_a = await serving(a)
        await a.binding("wf").create({"id": "x"})
        assert await until(lambda: "x" in a.live and ran)
        stop_b, tasks_b = await serving(b)        # B starts once A holds the instance
        stopping = time.monotonic()
        assert await a.drain_steps(5)             # dynwf serve's graceful stop, then the stop
        await stopped(stop_a, tasks_a, a)
        assert await until(lambda: "x" in b.live, REACT_S), "B did not take the released instance"
        taken = time.monotonic() - stopping
        assert await until(lambda: b.store.get_instance("x").status == "complete")
        await stopped(stop_b, tasks_b, b)
        print(f"\nreleased by A, claimed by B {taken * 1000:.0f} ms after A began to stop")

    asyncio.run(main())


def test_a_dropped_listen_connection_falls_back_to_polling_and_reconnects(postgres_url):
    """The listener's backend is terminated: the engine says it is no longer listening, polls
    (here every 50 ms) meanwhile, reconnects, and then hears changes pushed again."""
    waits: dict[str, float] = {}

    async def wf(event, step):
        got = await step.wait_for_event("go", "go", timeout="1 hour")
        waits[event["instanceId"]] = time.monotonic()
        return got["payload"]

    async def main():
        a, = engines(postgres_url, wf, "a")
        b, = engines(postgres_url, wf, "b", poll_ms=50)
        said: list[tuple[bool, str | None]] = []
        b.on_listen = lambda listening, reason: said.append((listening, reason))
        stop, tasks = await serving(b)
        with psycopg.connect(postgres_url.split("?")[0], autocommit=True) as admin:
            cut = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE application_name = 'test-b' AND query ILIKE 'LISTEN%%'"
                                ).fetchone()[0]
        assert cut == 1
        assert await until(lambda: said and said[-1][0] is False), said
        assert said[-1][1], "the loss carries no reason"
        # while it is not listening, B still sees work created elsewhere, by polling
        await a.binding("wf").create({"id": "during"})
        assert await until(lambda: b.store.get_instance("during").status == "waiting")
        assert await until(lambda: b.listening, 10), "the listener never reconnected"
        assert b.listen_losses == 1 and [s for s, _ in said] == [True, False, True]
        a.control.send_event("during", "go", 1)
        assert await until(lambda: b.store.get_instance("during").status == "complete")
        await stopped(stop, tasks, a, b)

    asyncio.run(main())


@pytest.mark.parametrize("schema", ["s" * 63])
def test_a_schema_whose_channel_name_would_be_too_long_gets_a_digest(postgres_database, schema):
    from emulator.engine.wakeups import MAX_CHANNEL, channel_for
    channel = channel_for(schema)
    assert len(channel) <= MAX_CHANNEL and channel != channel_for("s" * 62)
    store = open_store(postgres_database.url(schema))
    try:
        store.changed("i", "created")       # NOTIFY accepts it
    finally:
        store.close()

"""The PostgreSQL store on a real server (docs/reliability.md, "PostgreSQL: engines on many
hosts"): migrations under the advisory lock, claims that skip each other's rows, fenced writes,
leases on the database's clock, and connections killed under the engine."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from postgres_db import require_psycopg

psycopg = require_psycopg()

from engine_harness import T0, FnWorkflow  # noqa: E402
from emulator.engine import Engine, VirtualClock, WorkflowDefinition  # noqa: E402
from emulator.engine.store_postgres import PostgresStore, migrate, migration_scripts  # noqa: E402
from emulator.engine.stores import open_store  # noqa: E402
from emulator.errors import DatabaseUnavailableError, DatabaseUrlError  # noqa: E402

LEASE = 30_000
HOUR = 3_600_000


def real_now(store: PostgresStore) -> int:
    """The database's clock now, in ms (what an engine with a correct clock reads)."""
    return store.conn.execute(
        "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint").fetchone()[0]


def queue(store: PostgresStore, *ids: str) -> None:
    with store.write():
        for id in ids:
            assert store.insert_instance_txn(id, "wf", "{}", T0) == id


def test_migrations_from_many_hosts_at_once_apply_each_once(postgres_url):
    names = [name for name, _ in migration_scripts()]
    start = threading.Barrier(6)

    def host(_: int) -> list[str]:
        start.wait()
        return migrate(postgres_url)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(host, range(6)))
    assert sorted(results, key=len)[-1] == names            # one host applied them all
    assert sum(len(r) for r in results) == len(names)       # and nobody applied one twice
    store = open_store(postgres_url)
    try:
        applied = [r[0] for r in store.conn.execute("SELECT name FROM dynwf_migrations ORDER BY name")]
        assert applied == names
    finally:
        store.close()


def test_migration_numbers_match_sqlite():
    from importlib import resources
    sqlite = sorted(e.name for e in (resources.files("emulator.engine") / "migrations").iterdir()
                    if e.name.endswith(".sql"))
    assert [name for name, _ in migration_scripts()] == sqlite


def test_claims_skip_rows_another_claim_holds(postgres_url):
    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        queue(a, *(f"i{n}" for n in range(6)))
        now = real_now(a)
        with a.write():
            mine = a.claim_txn("A", T0, now, now + LEASE, 3)
            # A's transaction still holds its rows: B, in another thread, neither waits nor
            # takes them
            with ThreadPoolExecutor(1) as pool:
                def claim_b():
                    with b.write():
                        return b.claim_txn("B", T0, now, now + LEASE, 10)
                theirs = pool.submit(claim_b).result(timeout=10)
        assert {r.id for r in mine} == {"i0", "i1", "i2"}
        assert {r.id for r in theirs} == {"i3", "i4", "i5"}
    finally:
        a.close()
        b.close()


def test_two_engines_on_one_database_run_each_instance_once(postgres_url):
    runs: dict[str, int] = {}

    async def wf(event, step):
        @step.do("only")
        async def body():
            runs[event["instanceId"]] = runs.get(event["instanceId"], 0) + 1
            await asyncio.sleep(0)
            return 1
        return await body()

    clock = VirtualClock(T0, flowing=False)

    def engine(owner: str) -> Engine:
        return Engine(open_store(postgres_url),
                      [WorkflowDefinition("wf", lambda row: FnWorkflow(wf))],
                      clock=clock, owner=owner, poll_ms=10, concurrency=4)

    async def main():
        one, two = engine("one"), engine("two")
        for n in range(12):
            await one.binding("wf").create({"id": f"i{n}"})
        await asyncio.gather(one.drain(), two.drain())
        statuses = {row.id: row.status for row in one.store.list_instances()}
        one.close()
        two.close()
        return statuses

    statuses = asyncio.run(main())
    assert set(statuses.values()) == {"complete"}
    assert runs == {f"i{n}": 1 for n in range(12)}


def test_a_write_after_the_lease_was_taken_over_is_refused(postgres_url):
    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        queue(a, "i1")
        now = real_now(a)
        with a.write():
            [row] = a.claim_txn("A", T0, now, now + LEASE, 1)
        with a.write():   # A stalls past its lease (expired on the database's clock)
            a.conn.execute("UPDATE instances SET lease_expiry = 0 WHERE id = 'i1'")
        with b.write():
            assert [r.id for r in b.claim_txn("B", T0, now, now + LEASE, 1)] == ["i1"]
        with a.write():
            assert not a.owned_txn("i1", "A", row.generation)
        with b.write():
            assert b.owned_txn("i1", "B", row.generation)
    finally:
        a.close()
        b.close()


def test_a_guarded_write_holds_the_row_until_it_commits(postgres_url):
    """The fence is a row lock: a takeover waits for A's commit, then A's lease is gone."""
    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        queue(a, "i1")
        now = real_now(a)
        with a.write():
            a.claim_txn("A", T0, now, now + LEASE, 1)
        with b.write():
            b.conn.execute("UPDATE instances SET lease_expiry = 0 WHERE id = 'i1'")
        with ThreadPoolExecutor(1) as pool:
            with a.write():
                assert a.owned_txn("i1", "A", 1)
                # B's claim skips the locked row instead of taking the lease under A's write
                taken = pool.submit(lambda: _claim(b, "B", now)).result(timeout=10)
                assert taken == []
                a.put_step_txn("i1", ("do", "s", 1), "done", T0, result="1")
        assert _claim(b, "B", now) == ["i1"]
        with a.write():
            assert not a.owned_txn("i1", "A", 1)
    finally:
        a.close()
        b.close()


def _claim(store: PostgresStore, owner: str, now: int) -> list[str]:
    with store.write():
        return [r.id for r in store.claim_txn(owner, T0, now, now + LEASE, 5)]


@pytest.mark.parametrize("skew", [HOUR, -HOUR])
def test_leases_are_judged_on_the_database_clock(postgres_url, skew):
    """A host whose clock is an hour off neither steals a live lease nor loses its own."""
    right, wrong = open_store(postgres_url), open_store(postgres_url)
    try:
        queue(right, "i1", "i2")
        now = real_now(right)
        with right.write():
            assert [r.id for r in right.claim_txn("right", T0, now, now + LEASE, 1)] == ["i1"]
        off = now + skew
        with wrong.write():   # the skewed host finds i1's lease live and takes only i2
            assert [r.id for r in wrong.claim_txn("wrong", T0, off, off + LEASE, 5)] == ["i2"]
        with wrong.write():   # renewing on its skewed clock keeps its lease one lease long
            wrong.renew_leases_txn("wrong", off, off + LEASE)
        expiry = wrong.get_instance("i2").lease_expiry
        assert 0 < expiry - real_now(wrong) <= LEASE
        with right.write():   # and the right host does not see that lease as expired
            assert right.claim_txn("right", T0, real_now(right), real_now(right) + LEASE, 5) == []
        assert wrong.lease_clock_ms(off) - real_now(wrong) < 5_000
    finally:
        right.close()
        wrong.close()


def _kill_store_connections(url: str) -> int:
    from postgres_db import SERVER_URL
    database = url.split("/")[-1].split("?")[0]
    with psycopg.connect(SERVER_URL, autocommit=True) as admin:
        return len(admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = 'dynwf' AND pid <> pg_backend_pid()", (database,)).fetchall())


def test_a_connection_killed_inside_a_transaction_fails_it_cleanly(postgres_url):
    store = open_store(postgres_url)
    try:
        with pytest.raises(DatabaseUnavailableError) as caught:
            with store.write():
                store.insert_instance_txn("lost", "wf", "{}", T0)
                assert _kill_store_connections(postgres_url) >= 1
                store.insert_instance_txn("lost-2", "wf", "{}", T0)
        assert caught.value.code == "database.unavailable"
        assert "postgres" in str(caught.value)
        queue(store, "kept")   # the pool replaced the connection
        assert store.find_instance("lost") is None
        assert [r.id for r in store.list_instances()] == ["kept"]
    finally:
        store.close()


def test_the_engine_recovers_when_its_connections_are_killed(postgres_url):
    """Backends killed between steps: the engine reconnects and each step commits once."""
    bodies: dict[str, int] = {}
    killed: list[int] = []

    async def wf(event, step):
        async def body(name):
            bodies[name] = bodies.get(name, 0) + 1
            if name == "b" and bodies[name] == 1:
                killed.append(_kill_store_connections(postgres_url))
            return name
        out = []
        for name in ("a", "b", "c"):
            out.append(await step.do(name)(_bound(body, name))())
        return out

    async def main():
        engine = Engine(open_store(postgres_url),
                        [WorkflowDefinition("wf", lambda row: FnWorkflow(wf))],
                        clock=VirtualClock(T0, flowing=False), poll_ms=10)
        await engine.binding("wf").create({"id": "i1"})
        await engine.drain()
        row = engine.store.get_instance("i1")
        steps = [(s.name, s.status) for s in engine.store.list_steps("i1")]
        engine.close()
        return row, steps

    row, steps = asyncio.run(main())
    assert row.status == "complete", row
    assert steps == [("a", "done"), ("b", "done"), ("c", "done")]
    assert bodies == {"a": 1, "b": 1, "c": 1}
    assert killed and killed[0] >= 1


def _bound(fn, name):
    async def call():
        return await fn(name)
    return call


def test_bad_urls_and_unreachable_servers_are_coded_errors_without_the_password():
    with pytest.raises(DatabaseUrlError, match=r"mysql://u:\*\*\*@h/db"):
        open_store("mysql://u:hunter2@h/db")
    with pytest.raises(DatabaseUnavailableError) as caught:
        open_store("postgresql://u:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(caught.value) and "u:***@127.0.0.1:1" in str(caught.value)


@pytest.fixture(autouse=True)
def _needs_postgres(request):
    if "postgres_url" not in request.fixturenames and \
            request.node.name.startswith("test_bad_urls") is False and \
            request.node.name != "test_migration_numbers_match_sqlite":
        request.getfixturevalue("postgres_database")

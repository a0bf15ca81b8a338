"""Every status the store writes goes through a guard: a restart or a claim computed from a row
that another writer has since changed is refused, nothing half-written."""

from __future__ import annotations

import pytest

from emulator.engine.store import Store
from emulator.errors import InvalidTransitionError
from emulator.rules import states


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "state.sqlite")
    with s.write():
        s.insert_instance_txn("i-1", "wf", "{}", 1)
    yield s
    s.close()


def test_a_restart_read_from_a_stale_status_is_refused_and_changes_nothing(store):
    first = store.get_instance("i-1").generation
    with store.write():
        store.conn.execute("INSERT INTO logs (instance_id, at, level, message) "
                           "VALUES ('i-1', 1, 'info', 'kept')")
    with pytest.raises(InvalidTransitionError, match="no longer running"):
        with store.write():
            store.reset_txn("i-1", states.RUNNING, 2)      # the row still says queued
    row = store.get_instance("i-1")
    assert (row.status, row.generation) == (states.QUEUED, first)
    assert store.conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 1


def test_a_restart_from_the_status_read_runs_a_new_generation_with_an_expired_lease(store):
    """docs/semantics.md §4.6: a restarted instance reads running at once; its lease is expired,
    so the next engine claims it."""
    first = store.get_instance("i-1").generation
    with store.write():
        store.reset_txn("i-1", states.QUEUED, 2)
    row = store.get_instance("i-1")
    assert (row.status, row.generation) == (states.RUNNING, first + 1)
    assert (row.lease_owner, row.lease_expiry, row.started_at) == (None, 0, 2)
    with store.write():
        claimed = store.claim_txn("engine-a", 3, 3, 1000, 10)
    assert [(r.id, r.status, r.lease_owner) for r in claimed] == [("i-1", "running", "engine-a")]


def test_a_restart_of_a_status_this_version_does_not_know_matches_any_unknown_value(store):
    with store.write():
        store.conn.execute("UPDATE instances SET status = 'hibernating' WHERE id = 'i-1'")
    assert store.get_instance("i-1").status == states.UNKNOWN
    with store.write():
        store.reset_txn("i-1", states.UNKNOWN, 2)
    assert store.get_instance("i-1").status == states.RUNNING


def test_claiming_a_queued_instance_starts_it_and_a_second_claim_takes_nothing(store):
    with store.write():
        claimed = store.claim_txn("engine-a", now=5, real_now=5, lease_until=100, limit=10)
    assert [(r.id, r.status, r.lease_owner) for r in claimed] == [("i-1", states.RUNNING, "engine-a")]
    row = store.get_instance("i-1")
    assert (row.status, row.lease_owner, row.lease_expiry) == (states.RUNNING, "engine-a", 100)
    with store.write():
        assert store.claim_txn("engine-b", now=6, real_now=6, lease_until=100, limit=10) == []


def test_a_claim_sets_started_at_once_and_a_later_claim_keeps_it(store):
    with store.write():
        store.claim_txn("engine-a", now=5, real_now=5, lease_until=100, limit=10)
        store.set_status_txn("i-1", states.RUNNING, states.QUEUED, 7, lease_owner=None,
                             lease_expiry=None)
    with store.write():
        store.claim_txn("engine-b", now=9, real_now=9, lease_until=100, limit=10)
    row = store.get_instance("i-1")
    assert (row.status, row.started_at, row.lease_owner) == (states.RUNNING, 5, "engine-b")


def test_a_claim_of_an_expired_lease_names_the_engine_it_was_taken_from(store):
    """The lease takeover count of ``dynwf serve``'s metrics (docs/semantics.md §7.4): a claim
    of an instance whose lease expired reports the previous owner; a first claim reports none."""
    taken: list[tuple[str, str]] = []
    with store.write():
        store.claim_txn("engine-a", now=5, real_now=5, lease_until=100, limit=10, taken_over=taken)
    assert taken == []
    with store.write():
        claimed = store.claim_txn("engine-b", now=101, real_now=101, lease_until=200, limit=10,
                                  taken_over=taken)
    assert [(r.id, r.lease_owner) for r in claimed] == [("i-1", "engine-b")]
    assert taken == [("i-1", "engine-a")]

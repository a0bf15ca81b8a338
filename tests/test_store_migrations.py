"""A state file written before the tenant scope was kept beside instance ids migrates in place:
wrapped instances get their scope, the dispatcher's own stay unscoped, nothing else changes."""

from __future__ import annotations

import json
import sqlite3
from importlib import resources

from emulator.engine.store import Store
from emulator.rules.tenant_scope import ENVELOPE_KEY, scoped_instance_id, tenant_prefix


def test_an_older_state_file_gets_the_tenant_scope_of_its_wrapped_instances(tmp_path):
    path = tmp_path / "state.sqlite"
    initial = (resources.files("emulator.engine") / "migrations" / "0001_initial.sql").read_text()
    conn = sqlite3.connect(path)
    conn.executescript(initial)
    conn.execute("CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, migration_set TEXT, "
                 "name TEXT, applied_at TEXT)")
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                 "VALUES ('dynwf.engine', '0001_initial.sql', '2026-11-01')")
    metadata = {"tenantId": "acme"}
    wrapped_id = scoped_instance_id(metadata, "order-7")
    rows = [(wrapped_id, json.dumps({ENVELOPE_KEY: metadata, "params": {"n": 1}})),
            ("plain-1", json.dumps({"n": 2})),
            ("0123456789ab-lookalike", json.dumps({"n": 3}))]   # no envelope: not a tenant's
    for instance_id, params in rows:
        conn.execute("INSERT INTO instances (id, workflow, status, params, created_at, updated_at) "
                     "VALUES (?, 'wf', 'complete', ?, 1, 1)", (instance_id, params))
    conn.commit()
    conn.close()

    store = Store(path)
    try:
        scopes = dict(store.conn.execute("SELECT id, scope FROM instances").fetchall())
        statuses = {row[0]: row[1] for row in store.conn.execute("SELECT id, status FROM instances")}
    finally:
        store.close()
    assert scopes == {wrapped_id: tenant_prefix(metadata), "plain-1": None,
                      "0123456789ab-lookalike": None}
    assert set(statuses.values()) == {"complete"}

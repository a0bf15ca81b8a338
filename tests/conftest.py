"""Fixtures shared by test modules."""

import pytest


@pytest.fixture
def servers():
    from dev_harness import DevServer
    started: list[DevServer] = []
    yield started
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def postgres_database():
    """A database of this test session's own on the local PostgreSQL (tests/postgres_db.py)."""
    from postgres_db import session_database
    database = session_database()
    yield database
    database.drop()


@pytest.fixture
def postgres_url(postgres_database):
    """A URL naming a fresh schema in the session's PostgreSQL database."""
    return postgres_database.url()


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request):
    """Opens the engine's store for a harness: a SQLite file as given, or (postgres) a schema
    of its own per file name in the session's PostgreSQL database. Stores left open by a test
    are closed after it. Sets the harness's default (tests/engine_harness.py)."""
    import engine_harness
    from emulator.engine.stores import open_store
    opened = []
    schemas: dict[str, str] = {}
    if request.param == "postgres":
        database = request.getfixturevalue("postgres_database")

        def factory(path):
            url = schemas.setdefault(str(path), database.url())
            store = open_store(url)
            opened.append(store)
            return store
    else:
        def factory(path):
            return open_store(path)
    engine_harness.STORE_FACTORY = factory
    yield factory
    engine_harness.STORE_FACTORY = engine_harness.open_store
    for store in opened:
        store.close()

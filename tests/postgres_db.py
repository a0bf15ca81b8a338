"""A PostgreSQL database of the test session's own, for the store tests (docs/reliability.md,
"PostgreSQL"): ``CREATE DATABASE dynwf_test_<random>`` on the local server, dropped at the end;
each test takes a schema of its own in it.

Without a reachable server these tests skip, saying why, unless ``DYNWF_REQUIRE_POSTGRES=1`` (CI
sets it), when an unreachable server fails them."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

#: the server the tests use: the local one, trust authentication
SERVER_URL = os.environ.get("DYNWF_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_ENV = "DYNWF_REQUIRE_POSTGRES"


def _admin_connect() -> Any:
    import psycopg
    return psycopg.connect(SERVER_URL, autocommit=True, connect_timeout=3)


def unavailable_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"psycopg is not installed ({exc})"
    try:
        with _admin_connect():
            return None
    except Exception as exc:
        return f"no PostgreSQL at {SERVER_URL}: {str(exc).strip().splitlines()[0]}"


class TestDatabase:
    """The session's database; :meth:`url` gives a URL with a fresh schema."""

    def __init__(self) -> None:
        self.name = f"dynwf_test_{uuid.uuid4().hex[:10]}"
        with _admin_connect() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.base = SERVER_URL.rsplit("/", 1)[0] + "/" + self.name

    def url(self, schema: str | None = None) -> str:
        return f"{self.base}?schema={schema or 's_' + uuid.uuid4().hex[:12]}"

    def drop(self) -> None:
        with _admin_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def session_database() -> TestDatabase:
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but PostgreSQL is unavailable: {reason}")
        pytest.skip(reason)
    return TestDatabase()


def require_psycopg() -> Any:
    """psycopg, or skip the calling module (fail it under ``DYNWF_REQUIRE_POSTGRES=1``)."""
    try:
        import psycopg
    except ImportError as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            raise
        pytest.skip(f"psycopg is not installed ({exc}): pip install -e '.[postgres]'",
                    allow_module_level=True)
    return psycopg

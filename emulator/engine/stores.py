"""Which store a database URL names: ``open_store(url)``.

- ``postgresql://user@host:5432/db`` (or ``postgres://``): ``store_postgres.PostgresStore``,
  in the schema ``?schema=NAME`` names, else ``DYNWF_DATABASE_SCHEMA``, else ``dynwf``;
- ``sqlite:///path/to/file.sqlite`` or a plain path: :class:`~emulator.engine.store.Store` (SQLite),
  the default whenever no database is named.

Anything else is ``database.url_invalid``; a server that cannot be reached is
``database.unavailable``, naming the URL without its password. psycopg is imported only when a
PostgreSQL URL is opened, so SQLite users never load it.
"""

from __future__ import annotations

import os
from pathlib import Path

from emulator.engine.store import Store
from emulator.errors import DatabaseUrlError

#: the variable naming the database when ``--database`` does not (the state folder's file if neither)
DATABASE_ENV = "DYNWF_DATABASE_URL"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite://"


def is_postgres(url: str | Path) -> bool:
    return str(url).startswith(POSTGRES_SCHEMES)


def sqlite_path(url: str | Path) -> Path | None:
    """The file a SQLite URL or plain path names; None for any other scheme's URL."""
    text = str(url)
    if text.startswith(SQLITE_SCHEME):
        return Path(text[len(SQLITE_SCHEME):]) if text.startswith(SQLITE_SCHEME + "/") else None
    return None if "://" in text else Path(text)


def check_url(url: str | Path) -> None:
    """Raise ``database.url_invalid`` unless dynwf can open ``url``'s kind of database."""
    if is_postgres(url) or sqlite_path(url) is not None:
        return
    from emulator.engine.store_postgres import redact
    raise DatabaseUrlError(f"cannot open database {redact(str(url))!r}: unknown scheme",
                           hint="use postgresql://user@host/db, sqlite:///path/state.sqlite "
                                "or a file path")


def open_store(url: str | Path, *, application_name: str | None = None) -> Store:
    """The store ``url`` names (see the module's note); ``application_name`` names a
    PostgreSQL store's connections in ``pg_stat_activity`` unless the URL names them."""
    check_url(url)
    if is_postgres(url):
        from emulator.engine.store_postgres import PostgresStore
        return PostgresStore(str(url), application_name=application_name)
    path = sqlite_path(url)
    assert path is not None
    return Store(path)


def database_from_env() -> str | None:
    """``DYNWF_DATABASE_URL`` when set and not empty."""
    return os.environ.get(DATABASE_ENV) or None

"""Where a project's state lives, and opening it: ``.dynwf/`` beside the wrangler file unless
``--state-dir`` or ``DYNWF_STATE_DIR`` says otherwise (docs/architecture.md §9)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emulator.config import find_config, load_config
from emulator.config.model import ProjectConfig
from emulator.engine.stores import check_url, database_from_env

STATE_DIR_ENV = "DYNWF_STATE_DIR"
#: The state folder's name, beside the wrangler file unless moved.
STATE_DIR_NAME = ".dynwf"
DATABASE_NAME = "state.sqlite"


@dataclass(frozen=True)
class Project:
    config: ProjectConfig
    state_dir: Path
    #: the database ``--database`` / ``DYNWF_DATABASE_URL`` named; None: the state folder's file
    database_url: str | None = None

    @property
    def database(self) -> Path:
        return self.state_dir / DATABASE_NAME

    @property
    def store_url(self) -> str:
        """What ``open_store`` opens: the named database, else the state folder's SQLite file."""
        return self.database_url or str(self.database)

    @property
    def tenants_dir(self) -> Path:
        return self.config.root / "tenants"


def open_project(config: Path | None = None, state_dir: Path | None = None, *,
                 start: Path | None = None, database: str | None = None) -> Project:
    """Find and load the config (``config``, else ./wrangler.jsonc|json|toml) and its state dir;
    the database is ``database``, else ``DYNWF_DATABASE_URL``, else the state dir's file."""
    path = find_config(start=start, explicit=config)
    loaded = load_config(path)
    chosen = state_dir or (Path(os.environ[STATE_DIR_ENV]) if os.environ.get(STATE_DIR_ENV) else None)
    database = database or database_from_env()
    if database is not None:
        check_url(database)
    return Project(loaded, (chosen or loaded.root / STATE_DIR_NAME).resolve(), database)

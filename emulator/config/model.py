"""The typed form of a project's wrangler file, and the diagnostics reported about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from emulator.defaults import DEV_IP, DEV_PORT

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding of ``dynwf check`` or of config loading, located in a file."""

    code: str                 # stable rule code, e.g. "DW101"
    severity: Severity
    message: str
    file: str                 # path as shown to the user (relative to the project when possible)
    line: int = 1
    column: int = 1
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "message": self.message,
                "file": self.file, "line": self.line, "column": self.column, "hint": self.hint}


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    name: str
    binding: str
    class_name: str
    script_name: str | None = None
    step_limit: int | None = None          # limits.steps
    schedules: tuple[str, ...] = ()        # cron expressions, checked (rules/cron.py)


@dataclass(frozen=True, slots=True)
class WorkerLoaderConfig:
    binding: str


@dataclass(frozen=True, slots=True)
class DevConfig:
    ip: str = DEV_IP
    port: int = DEV_PORT


@dataclass(slots=True)
class ProjectConfig:
    """A loaded wrangler.jsonc / wrangler.json / wrangler.toml."""

    path: Path                             # the config file
    name: str
    main: str                              # the dispatcher module, relative to the config's folder
    compatibility_date: str | None = None
    compatibility_flags: list[str] = field(default_factory=list)
    workflows: list[WorkflowConfig] = field(default_factory=list)
    worker_loaders: list[WorkerLoaderConfig] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    dev: DevConfig = field(default_factory=DevConfig)
    extra: dict[str, Any] = field(default_factory=dict)       # top-level keys we do not emulate
    warnings: list[Diagnostic] = field(default_factory=list)  # found while loading

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def main_path(self) -> Path:
        return self.root / self.main

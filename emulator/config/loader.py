"""Find a project's wrangler file and load it into a validated ``ProjectConfig``.

A real wrangler file must load unchanged, so keys dynwf does not emulate (``routes``,
``kv_namespaces``, ``observability``...) are kept in ``ProjectConfig.extra`` and reported as
warnings rather than rejected: ``DW005`` for a key wrangler knows and dynwf does not emulate,
``DW001`` for a key neither knows, with the closest known key when it looks misspelt. Everything
dynwf does use is checked here, once: an error names the key path (``workflows[0].class_name is
required``), says what to write instead, and, in JSON and JSONC files, gives the line and column
of the offending value, or of the enclosing object when a key is missing. TOML positions are found
by a line scan, since ``tomllib`` returns no positions for values.
"""

from __future__ import annotations

import datetime
import difflib
import json
import re
import tomllib
from pathlib import Path
from typing import Any, NoReturn

from emulator.config.jsonc import JsonPath, line_col, locate_values, parse_jsonc
from emulator.config.model import (DevConfig, Diagnostic, ProjectConfig, WorkerLoaderConfig,
                                   WorkflowConfig)
from emulator.errors import ConfigError, ConfigNotFoundError, InvalidScheduleError
from emulator.rules.cron import MAX_SCHEDULES, CronError, parse_cron
from emulator.rules.limits import MAX_WORKFLOW_NAME_LENGTH, is_valid_workflow_name

__all__ = ["CONFIG_NAMES", "find_config", "load_config"]

#: Searched in this order; the first one present is the project's config.
CONFIG_NAMES = ("wrangler.jsonc", "wrangler.json", "wrangler.toml")
_NOT_FOUND_HINT = "run dynwf init, or pass --config FILE"
_UNKNOWN_KEY = "DW001"
_NOT_EMULATED_KEY = "DW005"
_SILENT_KEYS = frozenset({"$schema"})     # editor tooling only; warning about it would be noise
_TOP_LEVEL = frozenset({"name", "main", "compatibility_date", "compatibility_flags", "workflows",
                        "worker_loaders", "vars", "dev"})
# Keys of wrangler's configuration that dynwf reads no meaning from, by section (() is the top
# level); from wrangler's documented configuration, not exhaustive: a key missing here is called
# unknown, which is also true of dynwf.
_WRANGLER_ONLY: dict[tuple[str, ...], frozenset[str]] = {
    (): frozenset({
        "account_id", "ai", "alias", "analytics_engine_datasets", "assets", "base_dir", "browser",
        "build", "containers", "d1_databases", "data_blobs", "define", "dispatch_namespaces",
        "durable_objects", "env", "find_additional_modules", "first_party_worker", "hyperdrive",
        "images", "jsx_factory", "jsx_fragment", "keep_names", "keep_vars", "kv_namespaces",
        "legacy_env", "limits", "logpush", "migrations", "minify", "mtls_certificates",
        "no_bundle", "node_compat", "observability", "pipelines", "placement",
        "preserve_file_names", "preview_urls", "queues", "r2_buckets", "route", "routes", "rules",
        "secrets_store_secrets", "send_email", "send_metrics", "services", "site",
        "tail_consumers", "text_blobs", "triggers", "tsconfig", "unsafe", "upload_source_maps",
        "usage_model", "vectorize", "version_metadata", "wasm_modules", "workers_dev",
        "workflows_dev", "python_modules", "streaming_tail_consumers"}),
    ("dev",): frozenset({"local_protocol", "upstream_protocol", "host", "inspector_port",
                         "container_engine", "enable_containers"}),
}
# Hints for a required field that is missing, by its path without list indexes.
_REQUIRED_HINTS = {
    ("name",): 'add "name": "my-project", the worker\'s name',
    ("main",): 'add "main": "src/entry.py", the dispatcher module (Default and the workflow class)',
    ("workflows", "name"): 'add "name": "tenant-workflows", the workflow\'s name',
    ("workflows", "binding"): 'add "binding": "WORKFLOWS", the env name the dispatcher uses',
    ("workflows", "class_name"): 'add "class_name": "DynamicWorkflow", the dispatcher\'s class '
                                 'that runs the workflow',
    ("worker_loaders", "binding"): 'add "binding": "LOADER", the env name of the Worker Loader',
}
_CRON_HINT = ("5 fields in UTC: minute hour day-of-month month weekday, weekdays 1-7 from Sunday "
              'or SUN-SAT, e.g. "*/5 * * * *" or "0 9 * * MON-FRI"')
_KIND_EXAMPLES = {"string": '"text"', "integer": "8787", "list": "[...]", "object": "{...}"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_KINDS = {"string": "a string", "integer": "an integer", "list": "a list", "object": "an object"}


def find_config(start: Path | None = None, explicit: Path | None = None) -> Path:
    """The config file to use: *explicit* if given, else the first of ``CONFIG_NAMES`` in *start*
    or, as wrangler does, in the nearest folder above it that has one (so a command run from a
    project's subfolder finds the project).

    *start* defaults to the current directory. An *explicit* directory is searched alone.
    Raises ``ConfigNotFoundError`` (``config.not_found``) when there is nothing to load.
    """
    if explicit is not None:
        explicit = Path(explicit)
        if explicit.is_file():
            return explicit.resolve()
        if not explicit.is_dir():
            raise ConfigNotFoundError(f"config file {explicit} does not exist",
                                      hint="check the --config path, or run dynwf init")
        return _config_in(explicit) or _not_found(explicit, upward=False)
    folder = (Path.cwd() if start is None else Path(start)).resolve()
    for candidate_folder in (folder, *folder.parents):
        found = _config_in(candidate_folder)
        if found is not None:
            return found
    return _not_found(folder, upward=True)


def _config_in(folder: Path) -> Path | None:
    for name in CONFIG_NAMES:
        candidate = folder / name
        if candidate.is_file():
            return candidate.resolve()
    return None


def _not_found(folder: Path, *, upward: bool) -> Path:
    where = f"{folder} or any folder above it" if upward else str(folder)
    raise ConfigNotFoundError(f"no wrangler.jsonc, wrangler.json or wrangler.toml in {where}",
                              hint=_NOT_FOUND_HINT)


def load_config(path: Path) -> ProjectConfig:
    """Read and validate a wrangler file (``.toml`` as TOML, anything else as JSONC)."""
    path = Path(path).resolve()
    display = path.name
    text = _read_text(path, display)
    if path.suffix == ".toml":
        data = _parse_toml(text, display)
        locator: _JsonLocator | _TomlLocator = _TomlLocator(text)
    else:
        data = parse_jsonc(text, source=display)
        locator = _JsonLocator(text)
    return _Validator(display, locator).project(path, data)


def _read_text(path: Path, display: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigNotFoundError(f"config file {path} does not exist",
                                  hint=_NOT_FOUND_HINT) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        # Decoded by hand, not read_text(): universal newlines would rewrite a lone \r.
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[:exc.start].decode("utf-8", "replace")
        line, column = line_col(before, len(before))
        raise ConfigError("the file is not valid UTF-8", path=display, line=line,
                          column=column) from None


def _parse_toml(text: str, display: str) -> dict[str, Any]:
    text = text.removeprefix("\ufeff")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = getattr(exc, "msg", None) or str(exc)
        line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
        if line is None:
            # Python before 3.14 only puts the position in the message text.
            at = re.search(r" \(at line (\d+), column (\d+)\)$", message)
            if at:
                message, line, column = message[:at.start()], int(at[1]), int(at[2])
            elif message.endswith(" (at end of document)"):
                message = message.removesuffix(" (at end of document)")
                line, column = line_col(text, len(text))
            else:
                line, column = 1, 1
        raise ConfigError(message, path=display, line=line, column=column) from None


class _JsonLocator:
    """Exact positions in a JSON/JSONC file; a missing path falls back to its nearest ancestor."""

    def __init__(self, text: str) -> None:
        self._found = locate_values(text)

    def key(self, path: JsonPath) -> tuple[int, int]:
        found = self._found.get(path)
        return found.key if found else self.value(path)

    def value(self, path: JsonPath) -> tuple[int, int]:
        while path not in self._found and path:
            path = path[:-1]
        found = self._found.get(path)
        return found.value if found else (1, 1)


class _TomlLocator:
    """Approximate positions in a TOML file: the line that assigns a key or opens its table.

    ``[[workflows]]`` headers are counted to find ``workflows[i]``; inline tables and arrays
    resolve to the line of their top-level key. Quoted keys containing dots are not understood.
    """

    _HEADER = re.compile(r"\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
    _ASSIGN = re.compile(r"\s*([A-Za-z0-9_\-\"' .$]+?)\s*=")

    def __init__(self, text: str) -> None:
        # (line number, table path, is array-of-tables, assigned key path, column)
        self._lines: list[tuple[int, tuple[str, ...], bool, tuple[str, ...] | None, int]] = []
        table: tuple[str, ...] = ()
        is_array = False
        for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
            header = self._HEADER.match(line)
            if header:
                table, is_array = _toml_key(header[2]), header[1] == "[["
                self._lines.append((number, table, is_array, None, header.start(1) + 1))
                continue
            assign = self._ASSIGN.match(line)
            if assign:
                self._lines.append((number, table, is_array, _toml_key(assign[1]),
                                    assign.start(1) + 1))

    def key(self, path: JsonPath) -> tuple[int, int]:
        return self.value(path)

    def value(self, path: JsonPath) -> tuple[int, int]:
        if not path:
            return 1, 1
        best: tuple[int, int] | None = None
        top, rest = str(path[0]), path[1:]
        entry = -1                     # index of the current [[top]] table, when rest starts with one
        for number, table, is_array, key, column in self._lines:
            full = table + key if key else table
            if key is None and table == (top,) and is_array:
                entry += 1
            if not full or full[0] != top:
                continue
            if best is None:
                best = (number, column)    # the key's first appearance, whatever comes after
            if rest and isinstance(rest[0], int):
                if entry == rest[0] and table == (top,):
                    if key is None:
                        best = (number, column)
                    elif len(rest) > 1 and key[0] == rest[1]:
                        return number, column
            elif rest and len(full) > 1 and full[1] == rest[0]:
                return number, column
        return best or (1, 1)


def _toml_key(raw: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in raw.split("."))


class _Validator:
    """Checks the parsed document against what dynwf uses; collects warnings, raises on errors."""

    def __init__(self, display: str, locator: _JsonLocator | _TomlLocator) -> None:
        self.display = display
        self.locator = locator
        self.warnings: list[Diagnostic] = []
        self.schedule_count = 0        # across workflows: the platform's limit is per account

    def project(self, path: Path, data: Any) -> ProjectConfig:
        if not isinstance(data, dict):
            self.fail((), f"the top level must be an object, got {_describe(data)}",
                      hint='start from {"name": ..., "main": ...}; `dynwf init` writes one')
        config = ProjectConfig(
            path=path,
            name=self.field(data, ("name",), "string", required=True),
            main=self.field(data, ("main",), "string", required=True),
            compatibility_date=self.date(data, ("compatibility_date",)),
            compatibility_flags=self.strings(data, ("compatibility_flags",)),
            workflows=[self.workflow(item, ("workflows", index))
                       for index, item in enumerate(self.field(data, ("workflows",), "list") or [])],
            worker_loaders=[self.worker_loader(item, ("worker_loaders", index)) for index, item
                            in enumerate(self.field(data, ("worker_loaders",), "list") or [])],
            vars=self.field(data, ("vars",), "object") or {},
            dev=self.dev(data, ("dev",)),
        )
        for key, value in data.items():
            if key not in _TOP_LEVEL:
                config.extra[key] = value
                if key not in _SILENT_KEYS:
                    self.warn_unknown((key,), _TOP_LEVEL)
        config.warnings = sorted(self.warnings, key=lambda d: (d.line, d.column))
        return config

    def workflow(self, item: Any, path: JsonPath) -> WorkflowConfig:
        entry = self.entry(item, path, {"name", "binding", "class_name", "script_name", "limits",
                                        "schedules"})
        name = self.field(entry, (*path, "name"), "string", required=True)
        if not is_valid_workflow_name(name):
            self.fail((*path, "name"), f"{_dotted((*path, 'name'))} {name!r} is not a valid "
                      f"workflow name: 1-{MAX_WORKFLOW_NAME_LENGTH} characters matching "
                      "^[a-zA-Z0-9_][a-zA-Z0-9-_]*$",
                      hint="use letters, digits, '-' and '_', e.g. \"order-workflow\"")
        binding = self.field(entry, (*path, "binding"), "string", required=True)
        class_name = self.field(entry, (*path, "class_name"), "string", required=True)
        script_name = self.field(entry, (*path, "script_name"), "string")
        limits = self.field(entry, (*path, "limits"), "object") or {}
        self.warn_extra(limits, (*path, "limits"), {"steps"})
        return WorkflowConfig(name=name, binding=binding, class_name=class_name,
                              script_name=script_name,
                              step_limit=self.integer(limits, (*path, "limits", "steps"), 1, 25_000),
                              schedules=self.schedules(entry, (*path, "schedules")))

    def schedules(self, entry: dict[str, Any], path: JsonPath) -> tuple[str, ...]:
        """``schedules``: one cron expression or a list of them, each checked (rules/cron.py)."""
        value = entry.get("schedules")
        if value is None:
            return ()
        if isinstance(value, str):
            items, paths = [value], [path]
        elif isinstance(value, list):
            items, paths = value, [(*path, index) for index in range(len(value))]
        else:
            self.fail(path, f"{_dotted(path)} must be a cron expression or a list of them, got "
                            f"{_describe(value)}", hint='e.g. "schedules": "*/5 * * * *"')
        for item, at in zip(items, paths):
            if not isinstance(item, str):
                self.fail(at, f"{_dotted(at)} must be a string, got {_describe(item)}",
                          hint='write a cron expression, e.g. "0 9 * * MON-FRI"')
            try:
                parse_cron(item)
            except CronError as exc:
                line, column = self.locator.value(at)
                raise InvalidScheduleError(
                    f'{_dotted(at)} "{item[:60]}{"…" if len(item) > 60 else ""}" is not a '
                    f"schedule dynwf can run: {exc}", path=self.display, line=line,
                    column=column, hint=_CRON_HINT) from None
        self.schedule_count += len(items)
        if self.schedule_count > MAX_SCHEDULES:
            line, column = self.locator.value(path)
            raise InvalidScheduleError(
                f"{_dotted(path)} brings the config to {self.schedule_count} schedules; the "
                f"platform allows at most {MAX_SCHEDULES} per account",
                path=self.display, line=line, column=column,
                hint="merge expressions that fire at the same times, or drop some")
        return tuple(items)

    def worker_loader(self, item: Any, path: JsonPath) -> WorkerLoaderConfig:
        entry = self.entry(item, path, {"binding"})
        return WorkerLoaderConfig(binding=self.field(entry, (*path, "binding"), "string",
                                                     required=True))

    def dev(self, data: dict[str, Any], path: JsonPath) -> DevConfig:
        dev = self.field(data, path, "object")
        if dev is None:
            return DevConfig()
        self.warn_extra(dev, path, {"ip", "port"})
        given = {"ip": self.field(dev, (*path, "ip"), "string"),
                 "port": self.integer(dev, (*path, "port"), 1, 65_535)}
        return DevConfig(**{key: value for key, value in given.items() if value is not None})

    def entry(self, item: Any, path: JsonPath, known: set[str]) -> dict[str, Any]:
        """A list item that must be an object; keys outside *known* are warnings."""
        if not isinstance(item, dict):
            self.fail(path, f"{_dotted(path)} must be an object, got {_describe(item)}",
                      hint=f"write each entry of {_dotted(path[:-1])} as {{...}}")
        self.warn_extra(item, path, known)
        return item

    def field(self, data: dict[str, Any], path: JsonPath, kind: str, *,
              required: bool = False) -> Any:
        """The value at *path* (whose last part is a key of *data*), checked to be of *kind*."""
        if path[-1] not in data:
            if required:
                self.fail(path, f"{_dotted(path)} is required",
                          hint=_REQUIRED_HINTS.get(
                              tuple(p for p in path if not isinstance(p, int)),
                              f'add "{path[-1]}" to {_dotted(path[:-1]) or "the top level"}'))
            return None
        value = data[path[-1]]
        if not _is_kind(value, kind):
            self.fail(path, f"{_dotted(path)} must be {_KINDS[kind]}, got {_describe(value)}",
                      hint=f'write it as "{path[-1]}": {_KIND_EXAMPLES[kind]}')
        return value

    def strings(self, data: dict[str, Any], path: JsonPath) -> list[str]:
        values = self.field(data, path, "list") or []
        for index, value in enumerate(values):
            if not isinstance(value, str):
                self.fail((*path, index),
                          f"{_dotted((*path, index))} must be a string, got {_describe(value)}",
                          hint="quote it")
        return list(values)

    def integer(self, data: dict[str, Any], path: JsonPath, low: int, high: int) -> int | None:
        value = self.field(data, path, "integer")
        if value is not None and not low <= value <= high:
            self.fail(path, f"{_dotted(path)} must be between {low} and {high}, got {value}",
                      hint=f"pick a value from {low} to {high}")
        return value

    def date(self, data: dict[str, Any], path: JsonPath) -> str | None:
        value = data.get(path[-1])
        if type(value) is datetime.date:      # TOML allows the date unquoted
            return value.isoformat()
        value = self.field(data, path, "string")
        if value is None:
            return None
        try:
            valid = bool(_DATE.fullmatch(value)) and bool(datetime.date.fromisoformat(value))
        except ValueError:
            valid = False
        if not valid:
            self.fail(path, f"{_dotted(path)} must be a date written YYYY-MM-DD, got "
                            f"{_describe(value)}", hint='e.g. "compatibility_date": "2025-04-01"')
        return value

    def warn_extra(self, data: dict[str, Any], path: JsonPath, known: set[str]) -> None:
        for key in data:
            if key not in known:
                self.warn_unknown((*path, key), known)

    def warn_unknown(self, path: JsonPath, known: set[str] | frozenset[str]) -> None:
        """A key dynwf does not read: wrangler's (DW005), or nobody's (DW001, with the closest
        key dynwf knows when it looks misspelt)."""
        line, column = self.locator.key(path)
        key = str(path[-1])
        section = tuple(str(p) for p in path[:-1] if not isinstance(p, int))
        if key in _WRANGLER_ONLY.get(section, ()):
            code, hint = _NOT_EMULATED_KEY, "dynwf runs the worker without it; wrangler deploy still uses it"
            message = f"wrangler key '{_dotted(path)}' is not emulated by dynwf; ignored"
        else:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
            code = _UNKNOWN_KEY
            if close:
                message = f"unknown key '{_dotted(path)}' is ignored; did you mean '{close[0]}'?"
                hint = f"rename it to '{close[0]}'"
            else:
                message = f"unknown key '{_dotted(path)}' is not emulated by dynwf; ignored"
                hint = f"keys dynwf reads here: {', '.join(sorted(known))}"
        self.warnings.append(Diagnostic(code=code, severity="warning", file=self.display,
                                        line=line, column=column, message=message, hint=hint))

    def fail(self, path: JsonPath, message: str, *, hint: str | None = None) -> NoReturn:
        line, column = self.locator.value(path)
        raise ConfigError(message, path=self.display, line=line, column=column,
                          hint=hint or f"fix {_dotted(path) or 'the file'} in {self.display}")


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {"string": str, "list": list, "object": dict}[kind])


def _describe(value: Any) -> str:
    """What the user wrote, in JSON words: ``"8787"``, ``true``, ``a list``."""
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if len(value) <= 40 else "a long string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a TOML {type(value).__name__}"     # TOML dates and times


def _dotted(path: JsonPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text

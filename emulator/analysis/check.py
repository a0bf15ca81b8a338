"""``dynwf check``: static checks of a whole project, for CI, without running any user code.

A project is its wrangler file, the dispatcher module named by ``main``, and (optionally) a
folder of tenants, one sub-folder per tenant id holding that tenant's modules. Python files
are read with ``ast`` only: tenant code is untrusted, and a check that imported it could be
made to do anything, or fail for reasons that have nothing to do with the code. Everything the
platform would reject at deploy or run time and that can be seen in the text is reported here
with a file, line and column; step-level rules live in ``lint.py``.

Diagnostics name files relative to the project folder (the config's folder), so the same
project gives the same report wherever it is checked from.

====== ======== =============================================================================
code   severity what
====== ======== =============================================================================
DW001  warning  the wrangler file has a key nobody knows, with the closest known key when it
                looks misspelt (reported while loading)
DW002  error    the wrangler file does not parse or lacks a required field (name, main, ...)
DW003  error    the ``main`` module does not exist (with the closest .py file of the project)
DW004  error    the ``main`` module is not a Python file
DW005  warning  the wrangler file has a key of wrangler's that dynwf does not emulate
                (``routes``, ``kv_namespaces``, ``observability``...; reported while loading)
DW100  error    the dispatcher module is not valid Python
DW101  error    a ``workflows[].class_name`` is not defined or re-exported by the dispatcher
DW102  error    the dispatcher calls ``wrap_workflow_binding`` but does not export
                ``DynamicWorkflowBinding``, which the wrapped binding needs at run time
DW103  error    the dispatcher reads ``env.LOADER`` (any ``env.*LOADER*``) that no
                ``worker_loaders`` binding declares
DW104  error    a ``workflows[].schedules`` expression does not parse, never fires, is longer
                than 256 characters, or the config holds more than 100 schedules (reported
                while loading, code ``config.invalid_schedule``)
DW105  warning  a workflow with ``schedules`` runs a dynamic entrypoint
                (``create_dynamic_workflow_entrypoint``): a cron instance carries no dispatcher
                metadata, so every firing fails with ``MissingDispatcherMetadataError``
DW200  error    a tenant module is not valid Python
DW201  error    a tenant folder's name is not a valid tenant id (``^[a-zA-Z0-9_][a-zA-Z0-9-_]*$``)
DW202  error    a tenant folder has no ``index.py``
DW203  error    a tenant's ``index.py`` does not define the entrypoint class
DW204  error    the entrypoint class does not subclass ``WorkflowEntrypoint``
DW205  error    the entrypoint class has no ``run`` method
DW206  error    ``run`` cannot be called as ``run(self, event, step)``
DW207  warning  ``run`` is not ``async``, so it cannot await its steps
DW208  error    a tenant module imports what the isolate refuses: a third-party package, the
                emulator, ``ctypes`` (only the standard library, ``workers``,
                ``dynamic_workflows`` and the tenant's own modules import there)
DW3xx           step-level rules, see ``emulator.analysis.lint``
====== ======== =============================================================================

A missing config file is not a diagnostic: there is no project to report on, so the
``ConfigError`` (code ``config.not_found``) propagates and the command line prints it as one
error line. An explicit tenants folder that does not exist is a ``UsageError`` for the same reason.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
import sys
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

from emulator.config.jsonc import locate_values
from emulator.analysis.ast_tools import at, dotted_name, module_bindings, syntax_error, top_level_classes
from emulator.analysis.lint import lint_module, lint_tenant_source
from emulator.config.loader import find_config, load_config
from emulator.config.model import Diagnostic, ProjectConfig
from emulator.rules.imports import NATIVE_ACCESS_MODULES, is_platform_module, refusal_message
from emulator.rules.limits import is_valid_id
from emulator.errors import ConfigError, ConfigNotFoundError, InvalidScheduleError, UsageError

__all__ = ["DEFAULT_ENTRY_CLASS", "CheckReport", "check_entrypoint_class", "check_project", "run_check"]

DEFAULT_ENTRY_CLASS = "TenantWorkflow"
TENANT_MAIN = "index.py"
# Classes a dispatcher imports to use, never to name as a workflow's class_name.
_LIBRARY_MODULES = frozenset({"workers", "dynamic_workflows"}) | sys.stdlib_module_names


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What ``run_check`` found: diagnostics (sorted by file, line, column) and the files read."""

    root: Path                     # the project folder; every ``file`` is relative to it
    diagnostics: list[Diagnostic]
    files: list[str]

    @property
    def errors(self) -> int:
        return sum(d.severity == "error" for d in self.diagnostics)

    @property
    def warnings(self) -> int:
        return sum(d.severity == "warning" for d in self.diagnostics)


def check_project(config_path: Path | None, *, tenants_dir: Path | None = None,
                  entry_class: str = DEFAULT_ENTRY_CLASS) -> list[Diagnostic]:
    """Every finding about the project whose wrangler file is ``config_path`` (found when None)."""
    return run_check(config_path, tenants_dir=tenants_dir, entry_class=entry_class).diagnostics


def run_check(config_path: Path | None, *, tenants_dir: Path | None = None,
              entry_class: str = DEFAULT_ENTRY_CLASS, tenants: Collection[str] | None = None,
              config: ProjectConfig | None = None) -> CheckReport:
    """Like :func:`check_project`, also saying which files were read (for the summary line).

    ``tenants`` names the only tenant folders to check (None: every one), for a command that
    runs some tenants' code and refuses only their errors; ``config`` is the project's config
    already loaded from ``config_path`` (its file is then not read again).
    """
    path = config.path if config is not None else find_config(explicit=config_path)
    root = path.parent
    if tenants_dir is not None and not Path(tenants_dir).is_dir():
        raise UsageError(f"tenants folder {tenants_dir} does not exist",
                         hint="pass --tenants DIR with one sub-folder per tenant")
    project = _Project(root)
    project.files.append(project.shown(path))
    try:
        if config is None:
            config = load_config(path)
    except ConfigNotFoundError:
        raise
    except ConfigError as exc:
        project.report(_config_error(exc, project.shown(path)))
    else:
        project.report(*(replace(d, file=project.shown(root / d.file)) for d in config.warnings))
        _check_dispatcher(project, config)
    _check_tenants(project, Path(tenants_dir) if tenants_dir is not None else root / "tenants",
                   entry_class, tenants)
    found = sorted(project.diagnostics, key=lambda d: (d.file, d.line, d.column, d.code))
    return CheckReport(root, found, project.files)


class _Project:
    """The findings and files of one run, with paths shown relative to the project folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.diagnostics: list[Diagnostic] = []
        self.files: list[str] = []

    def shown(self, path: Path) -> str:
        return Path(os.path.relpath(Path(path).resolve(), self.root.resolve())).as_posix()

    def report(self, *diagnostics: Diagnostic) -> None:
        self.diagnostics.extend(diagnostics)


def _config_error(exc: ConfigError, file: str) -> Diagnostic:
    """A load failure as DW002 (DW104 for a schedule), at the position the loader found, without
    the repeated prefix."""
    message = exc.message
    if exc.path is not None:
        where = exc.path if exc.line is None else f"{exc.path}:{exc.line}:{exc.column or 1}"
        message = message.removeprefix(f"{where}: ")
    hint = exc.hint or f"fix {file} at this line; `dynwf init` writes a complete example"
    code = "DW104" if isinstance(exc, InvalidScheduleError) else "DW002"
    return Diagnostic(code, "error", message, file, exc.line or 1, exc.column or 1, hint)


# --- the dispatcher --------------------------------------------------------------------------

def _check_dispatcher(project: _Project, config: ProjectConfig) -> None:
    config_file = project.shown(config.path)
    config_text = config.path.read_text(encoding="utf-8", errors="replace")
    main_path, main = config.main_path, config.main
    if not main_path.is_file():
        close = _closest_python_file(project.root, main)
        message = f'main module "{main}" does not exist' + \
            (f'; did you mean "{close}"?' if close else "")
        hint = f'set "main": "{close}"' if close else \
            f"create {main}, or point main at the dispatcher module"
        project.report(Diagnostic("DW003", "error", message, config_file,
                                  *_config_position(config, config_text, ("main",)), hint=hint))
        return
    shown = project.shown(main_path)
    project.files.append(shown)
    if main_path.suffix != ".py":
        project.report(Diagnostic("DW004", "error",
                                  f'main module "{main}" is not a Python file; dynwf runs Python '
                                  "dispatchers", config_file,
                                  *_config_position(config, config_text, ("main",)),
                                  hint="point main at the dispatcher's .py module"))
        return
    try:
        tree = ast.parse(main_path.read_text(encoding="utf-8"), filename=shown)
    except SyntaxError as exc:
        project.report(syntax_error(exc, shown, code="DW100"))
        return
    except (OSError, UnicodeDecodeError) as exc:
        project.report(Diagnostic("DW100", "error", f"cannot read the dispatcher: {exc}", shown,
                                  hint="save the module as UTF-8 text readable by you"))
        return
    bindings, has_star_import = module_bindings(tree)
    for index, workflow in enumerate(config.workflows):
        if workflow.class_name in bindings or has_star_import:
            continue
        message = _missing_name_message(f'class_name "{workflow.class_name}"', shown, bindings,
                                        workflow.class_name)
        position = _config_position(config, config_text, ("workflows", index, "class_name"))
        project.report(Diagnostic("DW101", "error", message, config_file, *position,
                                  hint=f"define or import {workflow.class_name} at the top level "
                                       f"of {shown}, or change class_name in {config_file}"))
    project.report(*_check_scheduled_entrypoints(config, config_text, bindings, config_file))
    project.report(*_check_binding_export(tree, bindings, has_star_import, shown))
    project.report(*_check_loader_bindings(tree, config, shown, config_file))
    project.report(*lint_module(tree, shown))


def _closest_python_file(root: Path, main: str) -> str | None:
    """The project's .py file whose path is closest to ``main`` (tenants' code left out)."""
    candidates = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if relative.parts[0] in {"tenants", ".venv", "venv", "node_modules"} or \
                any(_is_ignored(part) for part in map(Path, relative.parts)):
            continue
        candidates.append(relative.as_posix())
        if len(candidates) > 2000:
            break       # a project this big is not guessed at
    close = difflib.get_close_matches(main.removeprefix("./"), candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def _check_scheduled_entrypoints(config: ProjectConfig, config_text: str,
                                 bindings: dict[str, ast.AST], config_file: str) -> list[Diagnostic]:
    found = []
    for index, workflow in enumerate(config.workflows):
        statement = bindings.get(workflow.class_name)
        value = getattr(statement, "value", None) if workflow.schedules else None
        if not (isinstance(value, ast.Call) and (dotted_name(value.func) or "").rsplit(".", 1)[-1]
                == "create_dynamic_workflow_entrypoint"):
            continue
        found.append(Diagnostic(
            "DW105", "warning",
            f'workflow "{workflow.name}" has schedules, but its class_name '
            f'"{workflow.class_name}" is a dynamic entrypoint: a cron instance carries no '
            "dispatcher metadata, so every firing fails with MissingDispatcherMetadataError",
            config_file, *_config_position(config, config_text, ("workflows", index, "schedules")),
            hint="schedule a WorkflowEntrypoint class of the dispatcher's own; it may create "
                 "tenants' instances through their wrapped bindings"))
    return found


def _check_binding_export(tree: ast.Module, bindings: dict[str, ast.AST], has_star_import: bool,
                          shown: str) -> list[Diagnostic]:
    if "DynamicWorkflowBinding" in bindings or has_star_import:
        return []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and \
                (dotted_name(node.func) or "").rsplit(".", 1)[-1] == "wrap_workflow_binding":
            return [at(node, "DW102", "error",
                       "wrap_workflow_binding() is called but `DynamicWorkflowBinding` is not "
                       f"exported by {shown}; every call through the wrapped binding then fails "
                       "at run time, as it does with the platform's library",
                       shown, hint="add `from dynamic_workflows import DynamicWorkflowBinding` "
                                   "at the top level of the dispatcher")]
    return []


def _check_loader_bindings(tree: ast.Module, config: ProjectConfig, shown: str,
                           config_file: str) -> list[Diagnostic]:
    declared = {loader.binding for loader in config.worker_loaders}
    findings: dict[str, Diagnostic] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and "LOADER" in node.attr
                and node.attr not in declared and node.attr not in findings):
            continue
        owner = dotted_name(node.value) or ""
        if owner != "env" and not owner.endswith(".env"):
            continue
        others = f" (declared: {', '.join(sorted(declared))})" if declared else ""
        findings[node.attr] = at(
            node, "DW103", "error",
            f"{owner}.{node.attr} is used but {config_file} declares no worker_loaders binding "
            f'named "{node.attr}"{others}', shown,
            hint=f'add "worker_loaders": [{{"binding": "{node.attr}"}}] to {config_file}')
    return list(findings.values())


def _config_position(config: ProjectConfig, text: str,
                     path: tuple[str | int, ...]) -> tuple[int, int]:
    """Line and column of a value in the wrangler file, best effort (1, 1 when not found)."""
    if config.path.suffix != ".toml":
        try:
            found = locate_values(text).get(path)
        except (ConfigError, ValueError, IndexError):
            found = None
        return found.value if found else (1, 1)
    key = path[-1]
    occurrence = path[1] if len(path) == 3 and isinstance(path[1], int) else 0
    matches = list(re.finditer(rf"^[ \t]*{key}[ \t]*=[ \t]*", text, re.MULTILINE))
    if len(matches) <= occurrence:
        return 1, 1
    start = matches[occurrence].end()
    line = text.count("\n", 0, start) + 1
    return line, start - (text.rfind("\n", 0, start) + 1) + 1


# --- module-level names ----------------------------------------------------------------------

def _class_like_exports(bindings: dict[str, ast.AST]) -> list[str]:
    """The bound names a user could mean as a class: classes, CapWords assignments and imports,
    leaving out library classes (``WorkerEntrypoint``, ``Path``...)."""
    names = []
    for name, node in bindings.items():
        if isinstance(node, ast.ClassDef):
            names.append(name)
        elif name[:1].isupper() and not name.isupper() and not isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module is None or module.split(".")[0] not in _LIBRARY_MODULES:
                names.append(name)
    return sorted(names)


def _missing_name_message(subject: str, shown: str, bindings: dict[str, ast.AST],
                          wanted: str) -> str:
    exports = _class_like_exports(bindings)
    message = f"{subject} is not defined or exported by {shown} " \
              f"(exports: {', '.join(exports) if exports else 'no classes'})"
    close = difflib.get_close_matches(wanted, exports, n=1, cutoff=0.6)
    return message + (f'; did you mean "{close[0]}"?' if close else "")


# --- tenants ---------------------------------------------------------------------------------

def _check_tenants(project: _Project, folder: Path, entry_class: str,
                   only: Collection[str] | None = None) -> None:
    if not folder.is_dir():
        return  # a project may load its tenants' code from elsewhere (run_check checked --tenants)
    for tenant in sorted(p for p in folder.iterdir() if p.is_dir() and not _is_ignored(p)
                         and (only is None or p.name in only)):
        shown_dir = project.shown(tenant)
        if not is_valid_id(tenant.name):
            project.report(Diagnostic(
                "DW201", "error", f'tenant folder name "{tenant.name}" is not a valid tenant id',
                shown_dir, hint="tenant ids are 1-100 characters matching ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$"))
        sources: dict[Path, str] = {}
        for module in sorted(tenant.rglob("*.py")):
            if any(_is_ignored(part) for part in module.relative_to(tenant).parents if part.name):
                continue
            shown = project.shown(module)
            project.files.append(shown)
            try:
                sources[module] = module.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                project.report(Diagnostic("DW200", "error", f"cannot read the module: {exc}", shown,
                                          hint="save the module as UTF-8 text readable by you"))
                continue
            project.report(*lint_tenant_source(sources[module], shown))
        own_names = _tenant_top_level_names(tenant)
        for module, source in sources.items():
            project.report(*_check_imports(source, project.shown(module), own_names))
        index = tenant / TENANT_MAIN
        if not index.is_file():
            project.report(Diagnostic("DW202", "error",
                                      f"tenant {tenant.name} has no {TENANT_MAIN}, its main module",
                                      shown_dir, hint=f"add {shown_dir}/{TENANT_MAIN} defining "
                                                      f"class {entry_class}(WorkflowEntrypoint)"))
        elif index in sources:
            project.report(*_check_entry_class(project, tenant, sources, entry_class))


def _tenant_top_level_names(tenant: Path) -> set[str]:
    """The names a tenant's own modules import as: its top-level modules and packages."""
    return {p.stem if p.suffix == ".py" else p.name for p in tenant.iterdir()
            if not _is_ignored(p) and (p.suffix == ".py" or p.is_dir())}


def _check_imports(source: str, shown: str, own_names: set[str]) -> list[Diagnostic]:
    tree = _parse(source)
    if tree is None:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        else:
            continue  # relative imports stay inside the tenant's folder
        for name in names:
            if name.partition(".")[0] in own_names or is_platform_module(name):
                continue
            found.append(at(node, "DW208", "error", refusal_message(name), shown,
                            hint=_import_hint(name)))
    return found


def _import_hint(name: str) -> str:
    top = name.partition(".")[0]
    if top in NATIVE_ACCESS_MODULES:
        return "no isolate offers it; do the work in pure Python, or in the dispatcher"
    if top in {"emulator", "dynwf_cli", "dynwf_pytest"}:
        return "tenant code sees the platform only through `workers` and `dynamic_workflows`"
    if top in {"requests", "httpx", "aiohttp", "urllib3"}:
        return "make HTTP calls with `from workers import fetch`, inside a step"
    return ("copy the module into the tenant's folder to import it as its own, or do this "
            "work in the dispatcher and pass the result in")


def _is_ignored(path: Path) -> bool:
    return path.name.startswith((".", "__pycache__"))


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except SyntaxError:
        return None  # already reported as DW200 by the lint


def _check_entry_class(project: _Project, tenant: Path, sources: dict[Path, str],
                       entry_class: str) -> list[Diagnostic]:
    index = tenant / TENANT_MAIN
    tree = _parse(sources[index])
    if tree is None:
        return []
    shown = project.shown(index)
    bindings, star = module_bindings(tree)
    node = bindings.get(entry_class)
    if node is None:
        if star:
            return []
        return [Diagnostic("DW203", "error",
                           _missing_name_message(f"entrypoint class {entry_class}", shown, bindings,
                                                 entry_class), shown,
                           hint=f"define class {entry_class}(WorkflowEntrypoint) with "
                                "async def run(self, event, step)")]
    if isinstance(node, ast.ImportFrom):
        # Re-exported from a module of the same tenant: follow one hop to check the class there.
        target = _tenant_module(tenant, node)
        name = next(a.name for a in node.names if (a.asname or a.name) == entry_class)
        tree = _parse(sources.get(target, "")) if target is not None else None
        if tree is None:
            return []
        shown = project.shown(target)
        node = module_bindings(tree)[0].get(name)
    if not isinstance(node, ast.ClassDef):
        return []  # bound some other way (assignment, factory): nothing certain to say
    return check_entrypoint_class(node, top_level_classes(tree), entry_class, shown)


def _tenant_module(tenant: Path, node: ast.ImportFrom) -> Path | None:
    if node.module is None or node.level > 1:
        return None
    base = tenant.joinpath(*node.module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def check_entrypoint_class(cls: ast.ClassDef, classes: dict[str, ast.ClassDef], entry_class: str,
                           shown: str) -> list[Diagnostic]:
    """DW204-DW207 for the entrypoint class ``cls``, following bases among ``classes`` (the
    module's own); the playground checks typed-in code with it too."""
    verdict = _entrypoint_verdict(cls, classes, set())
    if verdict is False:
        bases = ", ".join(ast.unparse(b) for b in cls.bases) or "no base class"
        return [at(cls, "DW204", "error",
                   f"{entry_class} does not subclass WorkflowEntrypoint (bases: {bases})", shown,
                   hint=f"class {entry_class}(WorkflowEntrypoint), with "
                        "`from workers import WorkflowEntrypoint`")]
    run = _find_run(cls, classes, set())
    if run is None:
        if verdict is None:
            return []  # run() may come from a base class defined elsewhere
        return [at(cls, "DW205", "error", f"{entry_class} has no run method", shown,
                   hint="add async def run(self, event, step)")]
    params = run.args.posonlyargs + run.args.args
    required = len(params) - len(run.args.defaults)
    if required > 3 or (len(params) < 3 and run.args.vararg is None):
        found = ", ".join(p.arg for p in params)
        return [at(run, "DW206", "error",
                   f"{entry_class}.run({found}) cannot be called as run(self, event, step)", shown,
                   hint="declare async def run(self, event, step)")]
    if isinstance(run, ast.FunctionDef):
        return [at(run, "DW207", "warning",
                   f"{entry_class}.run is not async, so it cannot await its steps", shown,
                   hint="declare async def run(self, event, step)")]
    return []


def _entrypoint_verdict(cls: ast.ClassDef, classes: dict[str, ast.ClassDef],
                        seen: set[str]) -> bool | None:
    """True when ``cls`` derives from WorkflowEntrypoint, False when it certainly does not,
    None when a base comes from elsewhere and cannot be followed."""
    seen.add(cls.name)
    verdict: bool | None = False
    for base in cls.bases:
        name = dotted_name(base)
        if name is None:
            verdict = None
        elif name.rsplit(".", 1)[-1] == "WorkflowEntrypoint":
            return True
        elif name in classes and name not in seen:
            inner = _entrypoint_verdict(classes[name], classes, seen)
            if inner:
                return True
            if inner is None:
                verdict = None
        elif name != "object" and not name.startswith("workers.") and name not in (
                "WorkerEntrypoint", "DurableObject"):
            verdict = None
    return verdict


def _find_run(cls: ast.ClassDef, classes: dict[str, ast.ClassDef],
              seen: set[str]) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    seen.add(cls.name)
    for item in cls.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == "run":
            return item
    for base in cls.bases:
        name = dotted_name(base)
        if name in classes and name not in seen:
            found = _find_run(classes[name], classes, seen)
            if found is not None:
                return found
    return None

"""Project templates: the files ``dynwf init`` writes, and writing them without losing anything.

Templates are folders under ``templates/`` at the top of the source tree; the wheel ships the
same folder as ``dynwf_cli/templates`` (``force-include`` in ``pyproject.toml``), so
:func:`templates_root` looks in the installed package first and in the source tree second.

Each template stays a project that works as it is (``dynwf check`` passes on the folder itself).
The one substitution is ``{{name}}``, the project's name, made only in files that are not Python
modules: the name belongs in the config and the docs, and tenant code may hold braces of its own.

Writing is all or nothing. Every file is first written into a staging folder on the target's
file system, then moved in with ``os.replace``; a new target folder arrives in one rename. If
anything fails on the way (a full disk, an interrupt), files already moved in are taken out again
and any file they replaced is put back, so the target is as it was before.

An existing folder is written into only when it is empty (a lone ``.git`` counts as empty, so a
fresh clone can be initialised) or when ``force`` is given; even then a file whose content already
matches the template is left alone, and every file that differs is overwritten and reported, and
kept: the replaced files are moved to ``.dynwf/backups/init-<time>/`` in the target, beside the
project's state, so an edited file is never lost to ``init --force``.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from emulator.error_codes import Code
from emulator.errors import DynwfError, UsageError

__all__ = ["DEFAULT_TEMPLATE", "PlannedFile", "list_templates", "plan_template", "project_name",
           "templates_root", "write_template"]

DEFAULT_TEMPLATE = "basic"
NAME_PLACEHOLDER = "{{name}}"
FALLBACK_NAME = "dynamic-workflows"
# A Worker's name becomes a DNS label (<name>.<subdomain>.workers.dev): at most 63 characters.
_MAX_NAME = 63
_NOT_NAME = re.compile(r"[^a-z0-9]+")
# Left in a target folder without making it "not empty": what `git init` or a clone leaves.
_IGNORED_IN_EMPTY = frozenset({".git"})
# Never copied from a template folder: caches a checked-out or installed copy may pick up.
_SKIPPED = frozenset({"__pycache__", ".DS_Store"})

FileState = Literal["new", "overwrite", "same"]


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file of a template as it would land in a target: where, what, and what is there now."""

    path: Path                # relative to the target folder
    content: bytes            # with the project name substituted
    state: FileState          # "new": absent; "overwrite": present and different; "same": identical


# ---- errors -----------------------------------------------------------------------------------

class TemplatesMissingError(DynwfError):
    """The project templates are not in this installation."""

    code = Code.INIT_TEMPLATES_MISSING

    def __init__(self) -> None:
        super().__init__("the project templates are missing from this installation of dynwf",
                         hint="reinstall dynwf")


class UnknownTemplateError(UsageError):
    """``name`` is none of the ``available`` templates."""

    code = Code.INIT_UNKNOWN_TEMPLATE

    def __init__(self, *, name: str, available: list[str]) -> None:
        self.name, self.available = name, available
        super().__init__(f"unknown template {name!r}; available: {', '.join(available)}",
                         hint=f"pass --template {available[0]}" if available else None)


class NotAFolderError(DynwfError):
    """The target exists and is not a folder."""

    code = Code.INIT_NOT_A_DIRECTORY

    def __init__(self, *, target: Path) -> None:
        self.target = target
        super().__init__(f"{target} exists and is not a folder", hint="name a new or an empty folder")


class TargetNotEmptyError(DynwfError):
    """The target folder holds ``existing`` entries (the template would overwrite
    ``conflicts``) and ``force`` was not given."""

    code = Code.INIT_NOT_EMPTY

    def __init__(self, *, target: Path, existing: list[str], conflicts: list[Path]) -> None:
        self.target, self.existing, self.conflicts = target, existing, conflicts
        shown = ", ".join(existing[:5])
        if len(existing) > 5:
            shown += f" and {len(existing) - 5} more"
        message = f"{target} is not empty (it has {shown})"
        if conflicts:
            message += "; the template would overwrite " + ", ".join(p.as_posix() for p in conflicts)
        super().__init__(message, hint="choose a new or an empty folder, or pass --force to add the "
                                       "template's files anyway; files that differ are then "
                                       "overwritten")


class TemplateConflictError(DynwfError):
    """Paths the template needs are taken by something no file write can replace (``blocked``
    says what, for each)."""

    code = Code.INIT_CONFLICT

    def __init__(self, *, target: Path, blocked: list[str]) -> None:
        self.target, self.blocked = target, blocked
        super().__init__(f"cannot write the template into {target}: " + "; ".join(blocked),
                         hint="move these out of the way, or choose another folder")


class WriteFailedError(DynwfError):
    """The operating system refused a write at ``where`` (everything was rolled back)."""

    code = Code.INIT_WRITE_FAILED

    def __init__(self, *, target: Path, where: object, reason: str) -> None:
        self.target, self.where = target, where
        super().__init__(f"could not write the project into {target}: {where}: {reason}",
                         hint="check the folder's permissions and free space; nothing was changed")


# ---- finding templates ----------------------------------------------------------------------

def templates_root() -> Path:
    """The folder holding one sub-folder per template, in an installed wheel or the source tree."""
    try:
        packaged = importlib.resources.files("dynwf_cli") / "templates"
    except ModuleNotFoundError:
        packaged = None
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    # The source tree (also an editable install): <repo>/templates beside <repo>/emulator. The
    # pyproject.toml check keeps a stray top-level "templates" in site-packages from matching.
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file() and (repo / "templates").is_dir():
        return repo / "templates"
    raise TemplatesMissingError()


def list_templates() -> list[str]:
    """The names of the available templates, sorted."""
    root = templates_root()
    return sorted(entry.name for entry in root.iterdir()
                  if entry.is_dir() and not entry.name.startswith((".", "_")))


def _template_folder(name: str) -> Path:
    available = list_templates()
    if name not in available:      # also what keeps "../x" from naming a folder elsewhere
        raise UnknownTemplateError(name=name, available=available)
    return templates_root() / name


def _template_files(folder: Path) -> list[Path]:
    """Every file of a template, relative to its folder, in a stable order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED)
        for filename in sorted(filenames):
            if filename not in _SKIPPED and not filename.endswith(".pyc"):
                found.append((Path(dirpath) / filename).relative_to(folder))
    return found


# ---- planning -------------------------------------------------------------------------------

def project_name(target: Path) -> str:
    """A Worker name from the target folder's name: lowercase letters, digits and dashes."""
    name = _NOT_NAME.sub("-", Path(os.path.abspath(target)).name.lower()).strip("-")
    return name[:_MAX_NAME].rstrip("-") or FALLBACK_NAME


def _render(relative: Path, raw: bytes, name: str) -> bytes:
    if relative.suffix == ".py":
        return raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    return text.replace(NAME_PLACEHOLDER, name).encode("utf-8")


@contextmanager
def _reported_os_errors(target: Path) -> Iterator[None]:
    """An operating-system failure as one ``init.write_failed`` line instead of a traceback."""
    try:
        yield
    except OSError as exc:
        raise WriteFailedError(target=target, where=exc.filename or target,
                               reason=str(exc.strerror or exc)) from exc


def plan_template(name: str, target: Path) -> list[PlannedFile]:
    """What writing template ``name`` into ``target`` would do to each file; changes nothing.

    Raises ``init.unknown_template`` for a template that does not exist, and ``init.conflict``
    when a path the template needs is taken by something no file write can replace (a folder
    where the template has a file, or a file where it has a folder).
    """
    with _reported_os_errors(Path(target)):
        return _plan(name, Path(target))


def _plan(name: str, target: Path) -> list[PlannedFile]:
    folder = _template_folder(name)
    if target.exists() and not target.is_dir():
        raise NotAFolderError(target=target)
    project = project_name(target)
    planned, blocked = [], []
    for relative in _template_files(folder):
        content = _render(relative, (folder / relative).read_bytes(), project)
        blocker = _blocking_path(target, relative)
        if blocker is not None:
            blocked.append(blocker)
            continue
        destination = target / relative
        if destination.is_symlink() and not destination.exists():
            state: FileState = "overwrite"          # a dangling link is replaced, and said so
        elif not destination.exists():
            state = "new"
        else:
            state = "same" if destination.read_bytes() == content else "overwrite"
        planned.append(PlannedFile(relative, content, state))
    if blocked:
        raise TemplateConflictError(target=target, blocked=blocked)
    return planned


def _blocking_path(target: Path, relative: Path) -> str | None:
    """Why ``relative`` cannot be written under ``target`` even with force, or None."""
    for depth in range(1, len(relative.parts)):
        parent = target.joinpath(*relative.parts[:depth])
        is_dangling_link = parent.is_symlink() and not parent.exists()
        if is_dangling_link or (parent.exists() and not parent.is_dir()):
            shown = Path(*relative.parts[:depth]).as_posix()
            return f"{shown} is a file where the template has a folder"
    destination = target / relative
    if destination.is_dir() and not destination.is_symlink():
        return f"{relative.as_posix()} is a folder where the template has a file"
    return None


def _existing_entries(target: Path) -> list[str]:
    if not target.is_dir():
        return []
    return sorted(entry.name for entry in target.iterdir() if entry.name not in _IGNORED_IN_EMPTY)


# ---- writing --------------------------------------------------------------------------------

def backup_folder(target: Path, now: datetime | None = None) -> Path:
    """Where ``init --force`` keeps the files it replaces in ``target``."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    return Path(target) / ".dynwf" / "backups" / f"init-{stamp}"


def write_template(name: str, target: Path, *, force: bool,
                   on_moved: Callable[[Path], None] | None = None,
                   backup_to: Path | None = None) -> list[Path]:
    """Write template ``name`` into ``target`` (created with its parents if missing).

    Returns the files written, as paths inside ``target``, in template order: new files and, with
    ``force``, files that were overwritten; files already identical to the template are not
    rewritten and not returned. A non-empty ``target`` without ``force`` is refused
    (``init.not_empty``, naming the files that would be overwritten) and nothing is written.

    ``on_moved`` is called with each destination once the file is in place; it is the fault hook
    that proves a failure part way through is rolled back (the CLI passes none). An ``OSError``
    on the way is rolled back too, then raised as ``init.write_failed``. Files replaced are kept
    beneath ``backup_to`` (default :func:`backup_folder`), once every file is in place.
    """
    target = Path(target)
    with _reported_os_errors(target):
        planned = _plan(name, target)
        existing = _existing_entries(target)
        if existing and not force:
            raise TargetNotEmptyError(target=target, existing=existing,
                                      conflicts=[p.path for p in planned if p.state == "overwrite"])
        to_write = [p for p in planned if p.state != "same"]
        if not to_write:
            return []
        if target.is_dir():
            _move_into_existing(target, to_write, on_moved,
                                backup_to if backup_to is not None else backup_folder(target))
        else:
            _create(target, to_write, on_moved)
    return [target / p.path for p in to_write]


def _stage(folder: Path, files: list[PlannedFile]) -> None:
    for planned in files:
        destination = folder / planned.path
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(planned.content)


def _create(target: Path, files: list[PlannedFile],
            on_moved: Callable[[Path], None] | None) -> None:
    """A new folder: stage beside it, then one rename, so it appears complete or not at all."""
    first_created = _first_missing_ancestor(target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.dynwf-init-", dir=target.parent))
    moved = False
    try:
        # mkdtemp's folder is private (0700); the project folder inside it gets the usual mode.
        project = staging / "project"
        project.mkdir()
        _stage(project, files)
        os.rename(project, target)
        moved = True
        if on_moved is not None:
            for planned in files:
                on_moved(target / planned.path)
    except BaseException:
        if moved:
            shutil.rmtree(target, ignore_errors=True)
        if first_created is not None:
            shutil.rmtree(first_created, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _first_missing_ancestor(folder: Path) -> Path | None:
    """The outermost folder that ``mkdir(parents=True)`` would create, so a failure can undo it."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _move_into_existing(target: Path, files: list[PlannedFile],
                        on_moved: Callable[[Path], None] | None, backup_to: Path) -> None:
    """An existing folder: stage inside it (same file system even when it is a mount point),
    then replace file by file, keeping each replaced file until the last move has succeeded."""
    staging = Path(tempfile.mkdtemp(prefix=".dynwf-init-", dir=target))
    done: list[tuple[Path, Path | None]] = []      # (destination, backup of what it replaced)
    created_dirs: list[Path] = []
    try:
        _stage(staging / "new", files)
        backups = staging / "old"
        for planned in files:
            destination = target / planned.path
            for parent in reversed(destination.relative_to(target).parents[:-1]):
                folder = target / parent
                if not folder.exists():
                    folder.mkdir()
                    created_dirs.append(folder)
            backup = None
            if destination.exists() or destination.is_symlink():
                backup = backups / planned.path
                backup.parent.mkdir(parents=True, exist_ok=True)
                os.replace(destination, backup)
            done.append((destination, backup))
            os.replace(staging / "new" / planned.path, destination)
            if on_moved is not None:
                on_moved(destination)
        if any(backup is not None for _, backup in done):
            backup_to.parent.mkdir(parents=True, exist_ok=True)
            os.replace(backups, backup_to)        # every replaced file, kept for the user
    except BaseException:
        for destination, backup in reversed(done):
            if destination.exists() or destination.is_symlink():
                destination.unlink()
            if backup is not None:
                os.replace(backup, destination)
        for folder in reversed(created_dirs):
            folder.rmdir()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)

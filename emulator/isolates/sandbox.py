"""The kernel layers of an isolate: what still holds when tenant code has undone every Python check.

Python code can reach every object of its own interpreter (frames, ``gc``, the guard's closures),
so the import policy and audit hooks of :mod:`emulator.isolates.guard` are a courtesy that gives
honest mistakes the platform's errors. The boundary is this module, applied in each isolate right
after fork, before any tenant code and before any thread other than the main one exists:

1. **Memory cgroup** (:mod:`emulator.isolates.memory_cgroup`): every page counted.
2. **No privileges**: when the host is root, the isolate takes a user and group of its own
   (``ISOLATE_ID_BASE + pid``: unique while it lives, far above real accounts and the usual
   subordinate-id ranges), with the capability bounding and ambient sets emptied first, so it can
   never gain one back.
3. **Landlock**: the file system read-only and readable only beneath the standard library (minus
   ``site-packages``, ``_ctypes`` and the C test modules), the runtime and a few devices; nothing
   executable; no TCP; signals and abstract Unix sockets scoped to the isolate.
4. **seccomp** (the filter is in ``_sandbox.c``): no sockets but connected Unix stream pairs, no
   processes, signals to itself only, none of the calls that change the machine (clock, hostname,
   reboot, modules, mounts, namespaces, BPF, perf, kernel log, keyrings, io_uring, anonymous files,
   IPC objects, terminal input, other processes' limits or scheduling, identities).
5. **Network namespace**: the zygote moves itself, and so every isolate, into an empty network
   namespace, so no loopback service of the host is reachable even by a socket made before 4.

The native calls live in the ``_sandbox`` C extension, never in ``ctypes``: a loaded ``ctypes``
would be a native-call capability one ``gc.get_objects()`` away from tenant code, and Landlock
keeps ``_ctypes`` itself unreadable.

Where a layer is not available (not Linux, an old kernel, a container, not root, no compiled
extension), :func:`missing_layers` says which and why; ``dynwf dev`` and ``dynwf run`` print it
once at start. Every layer can be switched off (:class:`Layers`), which is how the tests prove the
others hold alone.
"""

from __future__ import annotations

import os
import stat
import sys
import sysconfig
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

try:
    from emulator.isolates import _sandbox
except ImportError:  # not built (no compiler at install) or not Linux
    _sandbox = None

from emulator.isolates import memory_cgroup

ISOLATE_ID_BASE = 2_000_000_000
NOBODY = 65534
# Extension modules tenant code can never load, even with every Python check undone: native
# calls, and the interpreter's own test hooks.
_UNREADABLE_EXTENSIONS = ("_ctypes", "_test", "xxlimited", "_xxtestfuzz", "_xxsubinterpreters")
_EXCLUDED_FOLDERS = frozenset({"site-packages", "dist-packages", "lib-dynload", "__pycache__"})
_READ_FILES, _READ_DIRS = 1, 2


@dataclass(frozen=True)
class Layers:
    """Which kernel layers to put in place (each on by default; off only to test the others)."""

    landlock: bool = True
    seccomp: bool = True
    user: bool = True
    network_namespace: bool = True
    memory_cgroup: bool = True

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)

    @classmethod
    def from_environment(cls) -> "Layers":
        """All layers, less those named in ``DYNWF_WEAKEN_ISOLATION`` (comma-separated: landlock,
        seccomp, user, network_namespace, memory_cgroup), for trying what each layer adds; every
        command that starts isolates says at start what is then missing."""
        named = {part.strip() for part in os.environ.get("DYNWF_WEAKEN_ISOLATION", "").split(",")
                 if part.strip()}
        unknown = named - set(LAYER_NAMES)
        if unknown:
            raise ValueError(f"DYNWF_WEAKEN_ISOLATION names no layer {sorted(unknown)}; the "
                             f"layers are {', '.join(LAYER_NAMES)}")
        return cls(**{name: name not in named for name in LAYER_NAMES})


LAYER_NAMES = {
    "landlock": "Landlock (read-only files, no TCP, signals scoped)",
    "seccomp": "seccomp (no sockets, processes or machine-changing calls)",
    "user": "an unprivileged user per isolate",
    "network_namespace": "a private network namespace",
    "memory_cgroup": "a memory cgroup per isolate",
}


def missing_layers(layers: Layers = Layers()) -> dict[str, str]:
    """Each layer that this machine cannot put in place, with why (empty: all of them hold)."""
    missing: dict[str, str] = {}
    if _sandbox is None:
        why = ("isolates need Linux" if not sys.platform.startswith("linux")
               else "the _sandbox extension was not built (no C compiler at install?)")
        return {name: why for name in LAYER_NAMES if name != "memory_cgroup"} | \
            ({"memory_cgroup": why} if not sys.platform.startswith("linux") else {})
    if layers.landlock and _sandbox.landlock_abi() < 6:
        abi = _sandbox.landlock_abi()
        missing["landlock"] = ("the kernel has no Landlock (or it is off at boot)" if abi == 0
                               else f"the kernel's Landlock ABI is {abi}; 6 or later scopes "
                                    "signals and abstract sockets")
    if layers.seccomp and not _sandbox.seccomp_supported():
        missing["seccomp"] = "no seccomp filter for this processor architecture"
    if layers.user and os.geteuid() != 0:
        missing["user"] = ("the host is not root, so isolates run as the host's user "
                           "(without capabilities)")
    if not layers.landlock:
        missing["landlock"] = "switched off"
    if not layers.seccomp:
        missing["seccomp"] = "switched off"
    if not layers.user:
        missing["user"] = "switched off"
    if not layers.network_namespace:
        missing["network_namespace"] = "switched off"
    if not layers.memory_cgroup:
        missing["memory_cgroup"] = "switched off"
    return missing


def describe_missing(missing: dict[str, str]) -> str:
    """One line for a person: which layers are missing and what that means."""
    parts = [f"{LAYER_NAMES[name]}: {why}" for name, why in missing.items()]
    return ("isolation is weaker on this machine; missing " + "; ".join(parts)
            + " (README: 'Isolates and tenant isolation')")


# ---- once per zygote ----------------------------------------------------------------------------

@dataclass
class Prepared:
    """What the zygote sets up once for all its isolates (inherited through fork)."""

    layers: Layers
    ruleset: int | None = None
    rules_granted: int = 0
    memory: memory_cgroup.MemoryGroups | None = None
    notes: dict[str, str] = field(default_factory=dict)   # layer -> why it is not in force

    def close(self) -> None:
        if self.memory is not None:
            self.memory.close()


_prepared: Prepared | None = None


def prepare(layers: Layers, read_roots: Iterable[str], library_paths: Iterable[str]) -> Prepared:
    """Zygote-wide set-up, before any fork: the network namespace, the Landlock ruleset, the
    cgroup parent, and import paths every isolate user can reach. Idempotent per process."""
    global _prepared
    if _prepared is not None:
        return _prepared
    prepared = Prepared(layers)
    notes = prepared.notes
    if _sandbox is None:
        notes.update(missing_layers(layers))
        _prepared = prepared
        return prepared
    if layers.network_namespace:
        try:
            _sandbox.unshare_network(os.geteuid() != 0)
        except OSError as exc:
            notes["network_namespace"] = f"unshare refused: {exc.strerror}"
    else:
        notes["network_namespace"] = "switched off"
    if layers.landlock and _sandbox.landlock_abi() > 0:
        try:
            prepared.ruleset, prepared.rules_granted = _sandbox.landlock_ruleset(
                landlock_rules(read_roots, library_paths))
            os.set_inheritable(prepared.ruleset, False)
        except OSError as exc:
            notes["landlock"] = f"ruleset refused: {exc.strerror}"
        if _sandbox.landlock_abi() < 6:
            notes["landlock"] = f"ABI {_sandbox.landlock_abi()}: signals are not scoped"
    elif layers.landlock:
        notes["landlock"] = "the kernel has no Landlock"
    else:
        notes["landlock"] = "switched off"
    if layers.memory_cgroup:
        found = memory_cgroup.discover(os.getpid())
        if isinstance(found, str):
            notes["memory_cgroup"] = found
        else:
            prepared.memory = found
    else:
        notes["memory_cgroup"] = "switched off"
    if layers.user and os.geteuid() == 0:
        _reach_import_paths_through_descriptors()
    elif layers.user:
        notes["user"] = "the host is not root: isolates keep its user, without capabilities"
    else:
        notes["user"] = "switched off"
    if not layers.seccomp:
        notes["seccomp"] = "switched off"
    elif not _sandbox.seccomp_supported():
        notes["seccomp"] = "no filter for this architecture"
    _prepared = prepared
    return prepared


def landlock_rules(read_roots: Iterable[str],
                   library_paths: Iterable[str]) -> list[tuple[str, int]]:
    """What an isolate may read: the standard library's folders entry by entry (so that
    ``site-packages`` and the extensions of ``_UNREADABLE_EXTENSIONS`` stay out), the other roots
    whole, and the shared-library folders the dynamic loader needs."""
    stdlib, platstdlib = _stdlib_dirs()
    rules: list[tuple[str, int]] = []
    for root in read_roots:
        if root in (stdlib, platstdlib) and os.path.isdir(root):
            rules.append((root, _READ_DIRS))
            for entry in os.scandir(root):
                if entry.name in _EXCLUDED_FOLDERS:
                    continue
                rules.append((entry.path, _READ_FILES | _READ_DIRS))
        else:
            rules.append((root, _READ_FILES | _READ_DIRS))
    dynload = os.path.join(platstdlib, "lib-dynload")
    if os.path.isdir(dynload):
        rules.append((dynload, _READ_DIRS))
        rules += [(entry.path, _READ_FILES) for entry in os.scandir(dynload)
                  if not entry.name.startswith(_UNREADABLE_EXTENSIONS)]
    # The loader's folders. One that holds the standard library too (a Python built with a shared
    # libpython keeps it in ``<prefix>/lib``) is granted its shared libraries file by file.
    for path in library_paths:
        real = os.path.realpath(path)
        if real == dynload:
            continue
        if stdlib.startswith(real + "/") and os.path.isdir(real):
            rules += [(entry.path, _READ_FILES) for entry in os.scandir(real)
                      if entry.is_file() and ".so" in entry.name]
        else:
            rules.append((path, _READ_FILES | _READ_DIRS))
    return rules


def _stdlib_dirs() -> tuple[str, str]:
    """The interpreter's own library folders (not a virtual environment's)."""
    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
                                      "installed_base": sys.base_prefix,
                                      "installed_platbase": sys.base_exec_prefix})
    return os.path.realpath(paths["stdlib"]), os.path.realpath(paths["platstdlib"])


def _reach_import_paths_through_descriptors() -> None:
    """Let an unprivileged isolate import from folders only root can reach.

    A Python installed under ``/root`` (mode 700) is readable by root alone, so an isolate that
    switched to its own user could import nothing not yet loaded. For each import folder another
    user cannot reach, the zygote (root) opens a descriptor and names the folder
    ``/proc/self/fd/N`` in ``sys.path``, in loaded packages' ``__path__`` and in modules'
    ``__file__``: a process may follow its own descriptors whatever lies above them, and Landlock
    judges the folder itself. Tracebacks through the standard library then show those names.
    """
    mapping: dict[str, str] = {}

    def reach(path: str) -> str:
        real = os.path.realpath(path)
        if real in mapping or _reachable_by_others(real):
            return mapping.get(real, path)
        try:
            fd = os.open(real, os.O_PATH | os.O_DIRECTORY)
        except OSError:
            return path
        mapping[real] = f"/proc/self/fd/{fd}"
        return mapping[real]

    def rewrite(path: str) -> str:
        real = os.path.realpath(path)
        for folder, alias in mapping.items():
            if real == folder or real.startswith(folder + "/"):
                return alias + real[len(folder):]
        return path

    sys.path[:] = [reach(entry) if entry and os.path.isdir(entry) else entry
                   for entry in sys.path]
    if not mapping:
        return
    for module in list(sys.modules.values()):
        search = getattr(module, "__path__", None)
        if isinstance(search, list):
            search[:] = [rewrite(entry) if isinstance(entry, str) else entry for entry in search]
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str):  # so reading a module's own file (and tracebacks) works
            module.__file__ = rewrite(filename)
    sys.path_importer_cache.clear()


def _reachable_by_others(path: str) -> bool:
    """Whether a user with no special rights can list and read ``path`` (and reach it)."""
    parts = path.split("/")
    for depth in range(2, len(parts) + 1):
        folder = "/".join(parts[:depth]) or "/"
        try:
            mode = os.stat(folder).st_mode
        except OSError:
            return False
        needed = stat.S_IXOTH | (stat.S_IROTH if depth == len(parts) else 0)
        if mode & needed != needed:
            return False
    return True


# ---- once per isolate ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Applied:
    """What :func:`enter` put in place in this isolate (``missing``: layer -> why not)."""

    uid: int
    memory_group: str | None
    seccomp_rules: int
    missing: dict[str, str]


def enter(memory_mb: int | None) -> Applied:
    """Apply the kernel layers to this process. Call right after fork, with one thread running:
    Landlock restricts the calling thread and those it starts later, never one already running."""
    prepared = _prepared
    if prepared is None:
        raise RuntimeError("sandbox.prepare() must run before sandbox.enter()")
    if threading.active_count() != 1:
        raise RuntimeError("the sandbox must be entered before any other thread starts")
    missing = dict(prepared.notes)
    pid = os.getpid()
    group = None
    if prepared.memory is not None and memory_mb is not None:
        try:
            group = prepared.memory.enter(pid, memory_mb)
        except OSError as exc:
            missing["memory_cgroup"] = f"cannot join a group: {exc.strerror}"
    uid = os.geteuid()
    if _sandbox is not None:
        _sandbox.no_new_privs()
        if prepared.layers.user:
            uid = _switch_user(pid, missing)
        else:  # the host's user, as under a host that is not root: never its capabilities
            _sandbox.drop_capabilities()
            _sandbox.clear_capabilities()
        if prepared.ruleset is not None:
            _sandbox.landlock_enforce(prepared.ruleset)
            os.close(prepared.ruleset)
        rules = 0
        if prepared.layers.seccomp and _sandbox.seccomp_supported():
            rules = _sandbox.seccomp_isolate(pid)
        return Applied(uid, group, rules, missing)
    return Applied(uid, group, 0, missing)


def _switch_user(pid: int, missing: dict[str, str]) -> int:
    """Give up root for a user and group of this isolate's own, with no way back."""
    _sandbox.drop_capabilities()
    if os.geteuid() != 0:
        _sandbox.clear_capabilities()
        return os.geteuid()
    for uid in (ISOLATE_ID_BASE + pid, NOBODY):
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        except OSError as exc:
            missing["user"] = f"cannot switch to user {uid}: {exc.strerror}"
            continue
        if uid == NOBODY:
            missing["user"] = "isolates share the 'nobody' user (no id of their own is mapped)"
        else:
            missing.pop("user", None)
        _sandbox.clear_capabilities()
        return uid
    raise PermissionError("an isolate could not give up root")


def report(applied: Applied) -> dict[str, Any]:
    return {"uid": applied.uid, "memory_group": applied.memory_group,
            "seccomp_rules": applied.seccomp_rules, "missing": applied.missing}

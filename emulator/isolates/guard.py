"""The platform's restrictions as Python sees them, applied in an isolate before tenant code runs.

On Cloudflare a Dynamic Worker runs in a V8 isolate and the JavaScript engine is the sandbox.
Python in a process is no such sandbox: code can reach any object of its own interpreter by
reference (frames, ``gc``, the guard's own closures and code objects), so nothing written in
Python can stop a determined tenant from undoing a Python-level check. The boundary is the kernel
(:mod:`emulator.isolates.sandbox`: a memory cgroup, a user of the isolate's own, Landlock,
seccomp, an empty network namespace) plus the host, which checks everything an isolate sends.

What this module adds is the friendly first line, so that tenant code written for the platform
fails here the way it fails there, with the platform's messages: resource limits (address space,
open files, no core dumps), an import policy (the tenant's own modules served from memory, the
standard library, ``workers`` and ``dynamic_workflows``; never the emulator, the CLI, third-party
packages, ``ctypes`` or another tenant's names) and audit hooks (``sys.addaudithook``) refusing
sockets, file writes anywhere, file reads outside the standard library, child processes, signals
to other processes and changed resource limits. Each of these is also refused by a kernel layer;
the tests prove that with the hooks undone.
"""

from __future__ import annotations

import builtins
import errno
import functools
import importlib
import importlib.machinery
import importlib.util
import linecache
import os
import posixpath
import resource
import site
import socket
import sys
import sysconfig
from dataclasses import dataclass
from types import CodeType, ModuleType
from typing import Any, Iterable, Mapping, NoReturn, Sequence

from emulator.isolates import sandbox
from emulator.runtime import RUNTIME_PATH

#: The exact message of workerd when a Worker loaded with ``globalOutbound: null`` calls out.
NO_GLOBAL_OUTBOUND_MESSAGE = (
    "This worker is not permitted to access the internet via global functions like fetch(). "
    "It must use capabilities (such as bindings in 'env') to talk to the outside world.")

#: Top-level names of the runtime modules tenant code may import besides the standard library.
RUNTIME_MODULES = frozenset({"workers", "dynamic_workflows"})

# Imported before the policy is installed, so their own imports of the emulator resolve normally.
_RUNTIME_PRELOAD = ("workers", "workers.workflows", "dynamic_workflows")

# Standard-library modules that hand out raw memory access: with them, any check here is moot.
_NATIVE_ACCESS_MODULES = frozenset({"ctypes", "_ctypes"})

_EMULATOR_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MiB = 1024 * 1024

# Refusals are plain ``PermissionError`` and ``ModuleNotFoundError``, not subclasses: an error
# crosses RPC by its class name, and only built-in names are rebuilt as themselves by the host.


def refusal_message(name: str) -> str:
    """Why tenant code cannot import ``name``, in one sentence."""
    if name.partition(".")[0] in _NATIVE_ACCESS_MODULES:
        return (f"module {name!r} is not available to tenant code in a dynamic worker: it gives "
                "direct access to the process's memory")
    return (f"module {name!r} is not available to tenant code in a dynamic worker: only the "
            "standard library, 'workers', 'dynamic_workflows' and the tenant's own modules can "
            "be imported")


# ---- the tenant's modules, served from memory ----------------------------------------------------

@dataclass(frozen=True)
class _TenantModule:
    filename: str | None         # the synthetic path shown in tracebacks; None: a namespace package
    source: str | None
    package_path: str | None     # ``__path__[0]`` of a package


class TenantModuleFinder:
    """Serves one tenant's modules from memory, as a ``sys.meta_path`` finder and loader.

    ``modules`` is keyed by relative path: ``index.py`` is module ``index``, ``lib/util.py`` is
    ``lib.util``, ``pkg/__init__.py`` is package ``pkg``; a folder without ``__init__.py`` is a
    namespace package. As on disk, a regular package wins over a module of the same name, and a
    module over a namespace folder; a module already imported (``json``, ``workers``) wins over
    a tenant module of the same name. Files are named ``<tenant:LABEL>/lib/util.py`` so tracebacks
    point at the tenant's file and line; their source is registered with ``linecache``.
    Paths that are not ``.py`` files or not importable names are left out.
    """

    def __init__(self, modules: Mapping[str, str], tenant_label: str) -> None:
        self.label = tenant_label
        self.root = f"<tenant:{tenant_label}>"
        self._modules: dict[str, _TenantModule] = {}
        rank: dict[str, int] = {}  # 3 regular package, 2 module, 1 namespace folder
        for raw_path, source in modules.items():
            path = posixpath.normpath(str(raw_path).replace("\\", "/")).lstrip("/")
            if not path.endswith(".py") or path == ".." or path.startswith("../"):
                continue
            parts = path[:-3].split("/")
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            if not parts or not all(part.isidentifier() for part in parts):
                continue
            for depth in range(1, len(parts)):
                folder = ".".join(parts[:depth])
                if rank.get(folder, 0) < 1:
                    rank[folder] = 1
                    self._modules[folder] = _TenantModule(
                        None, None, f"{self.root}/{'/'.join(parts[:depth])}")
            name = ".".join(parts)
            level = 3 if is_package else 2
            if rank.get(name, 0) >= level:
                continue
            rank[name] = level
            package_path = f"{self.root}/{'/'.join(parts)}" if is_package else None
            self._modules[name] = _TenantModule(f"{self.root}/{path}", str(source), package_path)

    @property
    def top_level_names(self) -> frozenset[str]:
        return frozenset(name.partition(".")[0] for name in self._modules)

    # finder --------------------------------------------------------------------------------------

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        module = self._modules.get(fullname)
        if module is None:
            return None
        spec = importlib.machinery.ModuleSpec(
            fullname, self, origin=module.filename, is_package=module.package_path is not None)
        if module.filename is not None:
            spec.has_location = True
        if module.package_path is not None:
            spec.submodule_search_locations = [module.package_path]
        return spec

    def invalidate_caches(self) -> None:
        pass

    # loader --------------------------------------------------------------------------------------

    def create_module(self, spec: Any) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        code = self.get_code(module.__spec__.name)
        if code is not None:
            exec(code, module.__dict__)

    def get_code(self, fullname: str) -> CodeType | None:
        module = self._get(fullname)
        if module.source is None or module.filename is None:
            return None
        linecache.cache[module.filename] = (  # mtime None: checkcache() leaves it alone
            len(module.source), None, module.source.splitlines(True), module.filename)
        # dont_inherit: this module's own ``from __future__`` flags must not leak into tenant code
        return compile(module.source, module.filename, "exec", dont_inherit=True)

    def get_source(self, fullname: str) -> str | None:
        return self._get(fullname).source

    def is_package(self, fullname: str) -> bool:
        return self._get(fullname).package_path is not None

    def get_filename(self, fullname: str) -> str:
        filename = self._get(fullname).filename
        if filename is None:
            raise ImportError(f"{fullname!r} is a namespace package", name=fullname)
        return filename

    def _get(self, fullname: str) -> _TenantModule:
        module = self._modules.get(fullname)
        if module is None:
            raise ImportError(f"{fullname!r} is not one of the tenant's modules", name=fullname)
        return module


# ---- the import policy ---------------------------------------------------------------------------

_UTIL_FIND_SPEC_CODE = importlib.util.find_spec.__code__


class ImportPolicy:
    """The first finder on ``sys.meta_path``: decides which names tenant code may import at all.

    Installing it also takes every module tenant code may not import out of ``sys.modules`` (the
    emulator, the CLI, third-party packages), so ``import emulator`` cannot be answered from the
    cache. The emulator keeps working: its modules hold references to each other, and the few
    imports it makes lazily, inside functions, are answered from the modules taken out (see
    :meth:`builtin_import`), so nothing is loaded twice.
    """

    def __init__(self, tenant: TenantModuleFinder | None = None) -> None:
        self._tenant_names = tenant.top_level_names if tenant is not None else frozenset()
        self._search_path = list(sys.path)  # for the emulator's own late imports
        self._hidden: dict[str, ModuleType] = {}
        for name, module in list(sys.modules.items()):
            if name not in _KNOWN_STAYING and name != "__main__" and not _may_stay_loaded(name):
                del sys.modules[name]
                if isinstance(module, ModuleType):
                    self._hidden[name] = module
        self._hidden_tops = frozenset(name.partition(".")[0] for name in self._hidden)
        still_visible = {id(module) for module in sys.modules.values()}
        # Globals of hidden modules, except those also bound under a public name (``workers`` is
        # also ``emulator.runtime.workers``): tenant code can hand those to ``__import__``.
        self._trusted_globals = {id(module.__dict__) for module in self._hidden.values()
                                 if id(module) not in still_visible}
        self._original_import = builtins.__import__

    @property
    def hidden_module_count(self) -> int:
        return len(self._hidden)

    def admit(self, tenant: TenantModuleFinder) -> None:
        """Let the tenant's own modules through (a policy installed ahead of its tenant)."""
        self._tenant_names = tenant.top_level_names

    def _is_importable(self, name: str) -> bool:
        return name.partition(".")[0] in self._tenant_names or _may_stay_loaded(name)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if self._is_importable(fullname):
            return None  # the next finders decide
        if _asked_by_util_find_spec():
            return None  # ``importlib.util.find_spec(name) is None`` stays a working idiom
        # Not ``name=fullname``: the RPC layer would take ``ImportError.name`` for a class name.
        raise ModuleNotFoundError(refusal_message(fullname))

    def invalidate_caches(self) -> None:
        pass

    def builtin_import(self, name: str, globals: Mapping[str, Any] | None = None,
                       locals: Any = None, fromlist: Sequence[str] | None = (),
                       level: int = 0) -> ModuleType:
        """``builtins.__import__`` while the policy is installed.

        An ``import`` statement in one of the emulator's hidden modules (identified by its globals
        dict, not by anything a module can claim about itself) gets the hidden module; every other
        import goes through the normal machinery and so through :meth:`find_spec`.
        """
        if globals is not None and id(globals) in self._trusted_globals:
            absolute = _absolute_name(name, globals, level)
            if absolute.partition(".")[0] in self._hidden_tops:
                return self._import_hidden(absolute, name, fromlist, level)
        return self._original_import(name, globals, locals, fromlist, level)

    def _import_hidden(self, absolute: str, name: str, fromlist: Sequence[str] | None,
                       level: int) -> ModuleType:
        module = self._load_hidden(absolute)
        if fromlist:
            if hasattr(module, "__path__"):
                for item in fromlist:
                    if item != "*" and not hasattr(module, item):
                        try:
                            self._load_hidden(f"{absolute}.{item}")
                        except ModuleNotFoundError:
                            pass  # the ``from`` clause reports the missing name
            return module
        if level == 0:
            return self._load_hidden(absolute.partition(".")[0])
        cut = len(name) - len(name.partition(".")[0])
        return self._load_hidden(absolute[:len(absolute) - cut])

    def _load_hidden(self, name: str) -> ModuleType:
        module = self._hidden.get(name)
        if module is not None:
            return module
        parent_name, _, leaf = name.rpartition(".")
        search: Sequence[str] = self._search_path
        if parent_name:
            search = getattr(self._load_hidden(parent_name), "__path__", None) or ()
        spec = importlib.machinery.PathFinder.find_spec(name, list(search))
        if spec is None or spec.loader is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        module = importlib.util.module_from_spec(spec)
        self._hidden[name] = module
        self._trusted_globals.add(id(module.__dict__))
        sys.modules[name] = module  # only while it runs: module code may look itself up there
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del self._hidden[name]
            raise
        finally:
            sys.modules.pop(name, None)
        if parent_name:
            setattr(self._hidden[parent_name], leaf, module)
        return module


#: Names already known to be allowed (filled by :func:`prepare` in the zygote), so an isolate
#: classifies only the modules loaded since.
_KNOWN_STAYING: frozenset[str] = frozenset()


def _may_stay_loaded(name: str) -> bool:
    """Whether ``name`` is the standard library's or the runtime's (and so not the tenant's)."""
    top = name.partition(".")[0]
    if top in _NATIVE_ACCESS_MODULES:
        return False
    return top in RUNTIME_MODULES or top in sys.stdlib_module_names or \
        top in sys.builtin_module_names


def _asked_by_util_find_spec() -> bool:
    try:
        frame = sys._getframe(2)
    except ValueError:
        return False
    for _ in range(6):
        if frame is None:
            return False
        if frame.f_code is _UTIL_FIND_SPEC_CODE:
            return True
        frame = frame.f_back
    return False


def _absolute_name(name: str, globals: Mapping[str, Any], level: int) -> str:
    if level == 0:
        return name
    package = globals.get("__package__")
    if package is None:
        spec = globals.get("__spec__")
        package = spec.parent if spec is not None else globals.get("__name__", "")
    base = str(package).rsplit(".", level - 1)[0] if level > 1 else str(package)
    return f"{base}.{name}" if name else base


def apply_import_policy(modules: Mapping[str, str], tenant_label: str) -> ImportPolicy:
    """Serve the tenant's modules from memory and allow only them, the stdlib and the runtime.

    Also narrows ``sys.path`` to the standard library and the runtime folder, so a name is
    never looked up in the working directory or in site-packages.
    """
    policy = apply_base_import_policy()
    admit_tenant_modules(policy, modules, tenant_label)
    return policy


def apply_base_import_policy() -> ImportPolicy:
    """The tenant-independent part of :func:`apply_import_policy`, which is most of its cost
    (taking ~1,500 modules out of ``sys.modules``): only the standard library and the runtime
    can be imported until :func:`admit_tenant_modules`."""
    for name in _RUNTIME_PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # the runtime folder is not on sys.path: tenant code cannot import it either
    policy = ImportPolicy()
    sys.path[:] = _narrowed_path(tuple(sys.path))
    sys.meta_path.insert(0, policy)
    builtins.__import__ = policy.builtin_import
    importlib.invalidate_caches()
    return policy


def admit_tenant_modules(policy: ImportPolicy, modules: Mapping[str, str],
                         tenant_label: str) -> TenantModuleFinder:
    """Serve ``modules`` from memory, right after ``policy`` on ``sys.meta_path``."""
    finder = TenantModuleFinder(modules, tenant_label)
    policy.admit(finder)
    sys.meta_path.insert(sys.meta_path.index(policy) + 1, finder)
    return finder


@functools.lru_cache(maxsize=8)
def _narrowed_path(entries: tuple[str, ...]) -> list[str]:
    """``sys.path`` cut down to the standard library and the runtime folder. Cached: the zygote
    computes it once before forking (resolving links costs ~2 ms per isolate otherwise)."""
    roots, excluded = _stdlib_roots(), _site_package_dirs()
    zip_name = f"python{sys.version_info[0]}{sys.version_info[1]}.zip"
    runtime = os.path.realpath(RUNTIME_PATH)
    return [entry for entry in entries if entry and (
        os.path.realpath(entry) == runtime
        or os.path.basename(entry) == zip_name
        or _is_under(os.path.realpath(entry), roots, excluded))]


# ---- files ---------------------------------------------------------------------------------------
# Paths are computed once per process and cached; importing this module (the zygote preloads it)
# computes them before any fork, so isolates do not pay for it.

@functools.cache
def _stdlib_roots() -> tuple[str, ...]:
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
            "installed_base": sys.base_prefix, "installed_platbase": sys.base_exec_prefix}
    paths = sysconfig.get_paths(vars=base)
    return _existing(paths["stdlib"], paths["platstdlib"])


@functools.cache
def _site_package_dirs() -> tuple[str, ...]:
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    found = [*site.getsitepackages(), site.getusersitepackages()]
    for variables in (None, base):
        paths = sysconfig.get_paths(vars=variables)
        found += [paths["purelib"], paths["platlib"]]
    return tuple(dict.fromkeys(os.path.realpath(path) for path in found))


def _existing(*paths: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(os.path.realpath(p) for p in paths if p and os.path.exists(p)))


def _is_under(path: str, roots: Iterable[str], excluded: Iterable[str] = ()) -> bool:
    def under(root: str) -> bool:
        return path == root or path.startswith(root.rstrip("/") + "/")
    return not any(under(root) for root in excluded) and any(under(root) for root in roots)


def default_read_roots() -> list[str]:
    """What tenant code may read: the standard library, the runtime, time zones, two devices.

    The emulator package's folder (which holds the runtime) is included so the emulator can load
    its own modules late and tracebacks can show its lines; its source is not a secret.
    """
    return list(_default_read_roots())


@functools.cache
def _default_read_roots() -> tuple[str, ...]:
    tz = (sysconfig.get_config_var("TZPATH") or "").split(os.pathsep)
    return _existing(*_stdlib_roots(), RUNTIME_PATH, _EMULATOR_DIR, *tz,
                     "/dev/null", "/dev/urandom")


_FILE_READ_EVENTS = frozenset({"os.listdir", "os.scandir", "os.listxattr", "os.getxattr"})
_FILE_CHANGE_EVENTS = frozenset({
    "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.mkfifo", "os.mknod", "os.link",
    "os.symlink", "os.truncate", "os.chmod", "os.chown", "os.chflags", "os.utime",
    "os.setxattr", "os.removexattr", "shutil.copyfile", "shutil.copymode", "shutil.copystat",
    "shutil.copytree", "shutil.rmtree", "shutil.move", "shutil.chown", "shutil.make_archive",
    "shutil.unpack_archive", "tempfile.mkstemp", "tempfile.mkdtemp"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _file_hook(roots: tuple[str, ...], excluded: tuple[str, ...]) -> Any:
    def refuse(what: str, path: Any) -> NoReturn:
        shown = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
        raise PermissionError(errno.EACCES, f"{what} is not permitted in a dynamic worker", shown)

    def check_read(path: Any) -> None:
        if isinstance(path, int):
            return  # an open descriptor: nothing new is reached
        target = os.path.realpath(os.fsdecode(path if path is not None else "."))
        if not _is_under(target, roots, excluded):
            refuse("Reading files outside the standard library", path)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = (*args, None, None)[:3]
            writes = (isinstance(flags, int) and flags & _WRITE_FLAGS) or \
                (isinstance(mode, str) and any(c in mode for c in "wax+"))
            if writes and not isinstance(path, int):
                refuse("Writing files", path)
            check_read(path)
        elif event in _FILE_READ_EVENTS:
            check_read(args[0] if args else None)
        elif event in _FILE_CHANGE_EVENTS:
            refuse(f"Changing files ({event})", args[0] if args else "")

    return hook


def restrict_files(allowed_read_roots: Iterable[str] | None = None) -> None:
    """Refuse writes everywhere and reads outside ``allowed_read_roots`` (default: stdlib, runtime),
    with clear errors: an audit hook on ``open`` (which ``io``, ``os.open`` and the import system
    all raise), directory listings and the ``os``/``shutil`` calls that change files;
    site-packages folders inside the standard library's folder stay unreadable. Landlock
    (:mod:`emulator.isolates.sandbox`) enforces the same in the kernel."""
    # as given: an isolate that gave up root may no longer be able to look above these folders
    roots = tuple(allowed_read_roots if allowed_read_roots is not None else default_read_roots())
    excluded = tuple(folder for folder in _site_package_dirs() if folder not in roots)
    sys.addaudithook(_file_hook(roots, excluded))


# ---- network -------------------------------------------------------------------------------------

#: What a socket attempt says when the Worker has a network capability (``global_outbound``
#: omitted or a stub): sockets are never available in an isolate, ``fetch`` is.
SOCKETS_REFUSED_MESSAGE = (
    "Sockets are not available to tenant code in a dynamic worker: use fetch() from 'workers', "
    "which goes through the host and its global_outbound")

_NETWORK_EVENTS = frozenset({
    "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"})
_LOCAL_SOCKET_FAMILIES = frozenset({socket.AF_UNIX, -1})  # -1: wrapping an existing descriptor


def _network_hook(message: str) -> Any:
    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in _NETWORK_EVENTS \
                or (event == "socket.__new__" and args[1] not in _LOCAL_SOCKET_FAMILIES) \
                or (event == "socket.sendmsg" and args[1] is not None):
            raise PermissionError(message)
    return hook


def block_network(allow_network: bool = False) -> None:
    """No connection, name lookup or datagram out, with the platform's message when the Worker has
    no ``global_outbound`` and a pointer to ``fetch`` otherwise. Sockets already connected (the
    RPC socket, an event loop's self-pipe) keep working. The seccomp filter refuses the same
    (and every socket but a connected Unix pair) in the kernel."""
    sys.addaudithook(_network_hook(SOCKETS_REFUSED_MESSAGE if allow_network
                                   else NO_GLOBAL_OUTBOUND_MESSAGE))


# ---- processes -----------------------------------------------------------------------------------

_PROCESS_EVENTS = frozenset({
    "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system",
    "subprocess.Popen"})


def _process_hook(event: str, args: tuple[Any, ...]) -> None:
    if event in _PROCESS_EVENTS:
        raise PermissionError(
            f"Starting processes is not permitted in a dynamic worker ({event})")
    if (event == "os.kill" and args[0] != os.getpid()) or event == "os.killpg":
        raise PermissionError(
            f"Sending signals to other processes is not permitted in a dynamic worker ({event})")
    if event == "resource.setrlimit" or (event == "resource.prlimit" and args[2] is not None):
        raise PermissionError(
            "Changing resource limits is not permitted in a dynamic worker")
    if event.startswith("ctypes."):
        raise PermissionError(f"Native code is not permitted in a dynamic worker ({event})")
    if event in ("syslog.openlog", "syslog.syslog", "socket.sethostname"):
        raise PermissionError(f"{event} is not permitted in a dynamic worker")


def restrict_processes() -> None:
    """Refuse child processes, signals to other processes, changed limits and ``ctypes``, with
    clear errors; the seccomp filter refuses them in the kernel."""
    sys.addaudithook(_process_hook)


# ---- resource limits -----------------------------------------------------------------------------

def _virtual_size() -> int:
    try:  # bytes, not text: a text open looks up a codec, which costs more than the read
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _lower(limit: int, value: int) -> int:
    _soft, hard = resource.getrlimit(limit)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(limit, (value, value))
    return value


def apply_limits(memory_mb: int | None, max_open_files: int | None = 256) -> dict[str, int | None]:
    """Resource limits of the isolate; returns the values set, in bytes and descriptors.

    Memory is ``RLIMIT_AS`` set to the current virtual size plus ``memory_mb`` MiB, so an isolate
    forked from a large zygote still gets ``memory_mb`` of headroom; past it, allocations raise
    ``MemoryError``. It counts address space, not resident memory: every thread reserves its stack
    (8 MiB) and glibc may reserve a 64 MiB malloc arena per thread from the same budget.
    ``RLIMIT_CORE`` is 0. ``RLIMIT_NPROC`` is not set: the kernel does not enforce it for root,
    and for other users it counts every process of the user, other isolates included.
    """
    applied: dict[str, int | None] = {"address_space": None, "open_files": None}
    _lower(resource.RLIMIT_CORE, 0)
    if memory_mb is not None:
        if memory_mb <= 0:
            raise ValueError(f"memory_mb must be positive, got {memory_mb}")
        applied["address_space"] = _lower(resource.RLIMIT_AS, _virtual_size() + memory_mb * _MiB)
    if max_open_files is not None:
        applied["open_files"] = _lower(resource.RLIMIT_NOFILE, max_open_files)
    return applied



# ---- everything, in order ------------------------------------------------------------------------

@functools.cache
def _shared_library_paths() -> tuple[str, ...]:
    """Folders of the shared libraries mapped now, where later ``dlopen`` calls look too."""
    folders: set[str] = set()
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").partition("/")[2]
                if ".so" in os.path.basename(path) and not path.startswith(_EMULATOR_DIR[1:]):
                    folders.add(os.path.dirname("/" + path))
    except OSError:
        pass
    return (*sorted(folders), "/etc/ld.so.cache")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or the extension is missing)."""
    return sandbox._sandbox.landlock_abi() if sandbox._sandbox is not None else 0


@dataclass(frozen=True)
class GuardReport:
    """What :func:`install_guard` put in place, for logs and diagnostics."""

    address_space_limit: int | None
    open_files_limit: int | None
    network_allowed: bool
    hidden_modules: int
    kernel: sandbox.Applied


@dataclass(frozen=True)
class GuardProfile:
    """The settings of the tenant-independent part of the guard. The zygote's spare children
    install that part ahead of need for one profile (:func:`install_base_guard`), so a load
    whose code asks for the same profile only admits the tenant's modules. The kernel layers'
    switches are the zygote's: it prepares them once, for every isolate it forks."""

    memory_mb: int | None
    allow_network: bool
    landlock: bool = True
    seccomp: bool = True
    user: bool = True
    network_namespace: bool = True
    memory_cgroup: bool = True
    max_open_files: int | None = 256

    @property
    def layers(self) -> sandbox.Layers:
        return sandbox.Layers(self.landlock, self.seccomp, self.user, self.network_namespace,
                              self.memory_cgroup)


@dataclass(frozen=True)
class BaseGuard:
    """What :func:`install_base_guard` put in place, waiting for its tenant."""

    profile: GuardProfile
    policy: ImportPolicy
    limits: dict[str, int | None]
    kernel: sandbox.Applied


_installed = False


def install_guard(*, modules: Mapping[str, str], tenant_label: str, allow_network: bool,
                  memory_mb: int | None, max_open_files: int | None = 256,
                  **layers: bool) -> GuardReport:
    """Apply every restriction, once per isolate, before the tenant's main module is imported."""
    base = install_base_guard(GuardProfile(memory_mb, allow_network, **layers,
                                           max_open_files=max_open_files))
    return admit_tenant(base, modules, tenant_label)


def install_base_guard(profile: GuardProfile) -> BaseGuard:
    """Every restriction that does not depend on the tenant's modules, once per process.

    Order matters: the kernel layers are prepared first (in the zygote already, for every isolate
    it forks: import paths an unprivileged user can reach, the Landlock ruleset); then the limits,
    so the guard's own work runs under them; then the import policy (which still imports the
    runtime); then the kernel layers are entered (cgroup and user switch need root, which they
    give up); the audit hooks come last.
    """
    global _installed
    if _installed:
        raise RuntimeError("the isolate guard is already installed in this process")
    _installed = True
    roots = default_read_roots()
    sandbox.prepare(profile.layers, roots, _shared_library_paths())
    limits = apply_limits(profile.memory_mb, profile.max_open_files)
    policy = apply_base_import_policy()
    kernel = sandbox.enter(profile.memory_mb)
    sys.dont_write_bytecode = True
    restrict_files(roots)
    block_network(profile.allow_network)
    restrict_processes()
    return BaseGuard(profile, policy, limits, kernel)


def admit_tenant(base: BaseGuard, modules: Mapping[str, str], tenant_label: str) -> GuardReport:
    """The tenant-dependent rest of the guard: its modules, served from memory."""
    admit_tenant_modules(base.policy, modules, tenant_label)
    return GuardReport(base.limits["address_space"], base.limits["open_files"],
                       base.profile.allow_network, base.policy.hidden_module_count, base.kernel)


# Filled now, not in each isolate: the zygote imports this module before it forks.
_stdlib_roots(), _site_package_dirs(), _default_read_roots(), _shared_library_paths()


def prepare(profile: GuardProfile | None = None) -> None:
    """Work the zygote does once, before forking, so each isolate does not."""
    global _KNOWN_STAYING
    layers = profile.layers if profile is not None else sandbox.Layers()
    sandbox.prepare(layers, default_read_roots(), _shared_library_paths())
    _narrowed_path(tuple(sys.path))
    _KNOWN_STAYING = frozenset(name for name in sys.modules if _may_stay_loaded(name))

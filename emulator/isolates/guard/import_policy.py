"""The import policy: which names tenant code may import at all (its own modules, the standard
library, ``workers`` and ``dynamic_workflows``; never the emulator, the CLI, third-party packages,
``ctypes`` or another tenant's names), and the narrowed ``sys.path`` that goes with it.

Refusals are plain ``ModuleNotFoundError``, not a subclass: an error crosses RPC by its class
name, and only built-in names are rebuilt as themselves by the host.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any, Mapping, Sequence

from emulator.isolates.guard.folders import is_under, site_package_dirs, stdlib_roots
from emulator.isolates.guard.tenant_modules import TenantModuleFinder
from emulator.rules.imports import is_platform_module, refusal_message
from emulator.runtime import RUNTIME_PATH

# Imported before the policy is installed, so their own imports of the emulator resolve normally.
_RUNTIME_PRELOAD = ("workers", "workers.workflows", "dynamic_workflows")


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
    return is_platform_module(name)


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
    roots, excluded = stdlib_roots(), site_package_dirs()
    zip_name = f"python{sys.version_info[0]}{sys.version_info[1]}.zip"
    runtime = os.path.realpath(RUNTIME_PATH)
    return [entry for entry in entries if entry and (
        os.path.realpath(entry) == runtime
        or os.path.basename(entry) == zip_name
        or is_under(os.path.realpath(entry), roots, excluded))]


def prepare() -> None:
    """Work the zygote does once, before forking: the narrowed ``sys.path``, and the modules
    loaded so far that may stay, so that an isolate classifies only the modules loaded since."""
    global _KNOWN_STAYING
    _narrowed_path(tuple(sys.path))
    _KNOWN_STAYING = frozenset(name for name in sys.modules if _may_stay_loaded(name))

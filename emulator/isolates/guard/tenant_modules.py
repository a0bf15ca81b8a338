"""The tenant's modules, served from memory: a ``sys.meta_path`` finder and loader over the code
dict a load names, so tenant code is never written to disk and its tracebacks name its own files.
"""

from __future__ import annotations

import importlib.machinery
import linecache
import posixpath
from dataclasses import dataclass
from types import CodeType, ModuleType
from typing import Any, Mapping

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

"""``--isolation inline``: a tenant's module set loaded into the host process, for pdb.

Same RPC, same values copied across (an in-memory transport carries the same frames), same step
semantics; what is lost is the boundary: no guard, no resource limits, no crash containment.
Each module set lives under a private package name (``_dynwf_inline_<n>``) so two tenants' ``index``
modules never meet in ``sys.modules``; tenant code still writes ``import helper``, which each of its
modules resolves through its own ``__import__``.
"""

from __future__ import annotations

import builtins
import importlib
import itertools
import sys
from types import ModuleType
from typing import Any, Mapping

from emulator.isolates.guard.tenant_modules import TenantModuleFinder

_numbers = itertools.count(1)


class _PrefixedFinder(TenantModuleFinder):
    def __init__(self, modules: Mapping[str, str], label: str, module_builtins: dict[str, Any]):
        super().__init__(modules, label)
        self._builtins = module_builtins

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__["__builtins__"] = self._builtins
        super().exec_module(module)


class InlineModules:
    def __init__(self, modules: Mapping[str, str], label: str) -> None:
        self.prefix = f"_dynwf_inline_{next(_numbers)}"
        self.tenant_names = TenantModuleFinder(modules, label).top_level_names
        own_builtins = dict(vars(builtins))
        own_builtins["__import__"] = self._import
        self.finder = _PrefixedFinder({f"{self.prefix}/{path}": source
                                       for path, source in modules.items()}, label, own_builtins)
        sys.meta_path.append(self.finder)  # appended: the standard library wins, as in an isolate

    def _import(self, name: str, globals: Any = None, locals: Any = None, fromlist: Any = (),
                level: int = 0) -> ModuleType:
        top = name.partition(".")[0]
        if level == 0 and top in self.tenant_names:
            module = importlib.import_module(f"{self.prefix}.{name}")
            return module if fromlist else sys.modules[f"{self.prefix}.{top}"]
        return builtins.__import__(name, globals, locals, fromlist, level)

    def import_main(self, main_module: str) -> ModuleType:
        return importlib.import_module(f"{self.prefix}.{main_module[:-3].replace('/', '.')}")

    def unload(self) -> None:
        if self.finder in sys.meta_path:
            sys.meta_path.remove(self.finder)
        for name in [n for n in sys.modules if n == self.prefix or n.startswith(self.prefix + ".")]:
            del sys.modules[name]

"""A package's names loaded on first use (a module ``__getattr__``, PEP 562), written once for
the packages that need it: ``emulator`` and ``emulator.engine`` (an isolate's zygote imports
them and must not load the store, whose SQLite tooling brings ``ctypes``) and ``dynwf_pytest``
(pytest loads the plugin in every run, most of which never ask for an emulator)."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_names(package: str, namespace: dict[str, Any], homes: dict[str, str],
               modules: dict[str, str] | None = None) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``package``: a name of ``homes`` from its module, a name of
    ``modules`` as the module itself; kept in ``namespace`` (the package's globals) once
    loaded, so each is looked up once."""
    def __getattr__(name: str) -> Any:
        if modules is not None and name in modules:
            value = importlib.import_module(modules[name])
        elif name in homes:
            value = getattr(importlib.import_module(homes[name]), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value
    return __getattr__


__all__ = ["lazy_names"]

"""Which modules tenant code may import: the rule the isolate's import policy enforces at run
time and ``dynwf check`` applies to the source beforehand, written once so the two agree."""

from __future__ import annotations

import sys

__all__ = ["NATIVE_ACCESS_MODULES", "RUNTIME_MODULES", "is_platform_module", "refusal_message"]

#: Top-level names of the runtime modules tenant code may import besides the standard library.
RUNTIME_MODULES = frozenset({"workers", "dynamic_workflows"})

#: Standard-library modules that hand out raw memory access: with them, any check is moot.
NATIVE_ACCESS_MODULES = frozenset({"ctypes", "_ctypes"})


def is_platform_module(name: str) -> bool:
    """Whether ``name`` is the standard library's or the runtime's, and importable by a tenant
    (a tenant's own modules are the other importable names)."""
    top = name.partition(".")[0]
    if top in NATIVE_ACCESS_MODULES:
        return False
    return top in RUNTIME_MODULES or top in sys.stdlib_module_names or \
        top in sys.builtin_module_names


def refusal_message(name: str) -> str:
    """Why tenant code cannot import ``name``, in one sentence."""
    if name.partition(".")[0] in NATIVE_ACCESS_MODULES:
        return (f"module {name!r} is not available to tenant code in a dynamic worker: it gives "
                "direct access to the process's memory")
    return (f"module {name!r} is not available to tenant code in a dynamic worker: only the "
            "standard library, 'workers', 'dynamic_workflows' and the tenant's own modules can "
            "be imported")

"""The durable engine: instances, steps, sleeps, events, retries, leases and a virtual clock.

Names load on first use: the isolates' zygote imports ``emulator.engine.client`` (the step
handle tenant code runs against) and must not load the store, whose SQLite tooling brings
``ctypes`` with it (a native-call capability no isolate may hold).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "WorkflowBinding": "binding", "WorkflowInstance": "binding",
    "Clock": "clock", "SystemClock": "clock", "VirtualClock": "clock",
    "Control": "control", "Engine": "engine", "WorkflowDefinition": "engine",
    "StepError": "failures", "WorkflowFatalError": "failures", "WorkflowTimeoutError": "failures",
    "Progress": "progress", "Store": "store",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'emulator.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"emulator.engine.{home}"), name)
    globals()[name] = value
    return value

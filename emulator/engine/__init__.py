"""The durable engine: instances, steps, sleeps, events, retries, leases and a virtual clock.

Names load on first use, so that importing one module of the package never loads the store,
whose SQLite tooling brings ``ctypes`` with it (a native-call capability no isolate may hold).
The clock, the rules and the step SDK live outside the engine; their names are offered here too
for callers that think of them as the engine's.
"""

from __future__ import annotations

from emulator.lazy import lazy_names

_HOMES = {
    "WorkflowBinding": "emulator.engine.binding", "WorkflowInstance": "emulator.engine.binding",
    "Clock": "emulator.clock", "SystemClock": "emulator.clock", "VirtualClock": "emulator.clock",
    "Control": "emulator.engine.control", "Engine": "emulator.engine.engine",
    "WorkflowDefinition": "emulator.engine.engine",
    "StepError": "emulator.sdk.failures", "WorkflowFatalError": "emulator.sdk.failures",
    "WorkflowTimeoutError": "emulator.sdk.failures",
    "Progress": "emulator.engine.progress", "Store": "emulator.engine.store",
}

__all__ = sorted(_HOMES)


__getattr__ = lazy_names("emulator.engine", globals(), _HOMES)

"""The durable engine: instances, steps, sleeps, events, retries, leases and a virtual clock."""

from emulator.engine.binding import WorkflowBinding, WorkflowInstance
from emulator.engine.clock import Clock, SystemClock, VirtualClock
from emulator.engine.control import Control
from emulator.engine.engine import Engine, WorkflowDefinition
from emulator.engine.failures import StepError, WorkflowFatalError, WorkflowTimeoutError
from emulator.engine.progress import Progress
from emulator.engine.store import Store

__all__ = [
    "Clock", "Control", "Engine", "Progress", "StepError", "Store", "SystemClock", "VirtualClock",
    "WorkflowBinding", "WorkflowDefinition", "WorkflowFatalError", "WorkflowInstance",
    "WorkflowTimeoutError",
]

"""The isolates' zygote started ahead of its pool, by a command about to start a host.

``dynwf run``, ``dev`` and ``replay`` spend their first ~0.1-0.2 s importing and parsing, and the
zygote takes about as long to boot (an interpreter, the runtime's preload, the guard's
preparation). Started first, it boots on the other core meanwhile: the pool's :class:`Zygote`
adopts it (``zygote.start_early``) instead of starting one then. This module imports only what
the profile needs, so the zygote starts before the host's own modules load.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from emulator.defaults import ISOLATE_MEMORY_MB
from emulator.isolates.guard import GuardProfile
from emulator.isolates.sandbox import Layers
from emulator.isolates.zygote import start_early, stop_unadopted


def spare_profile(memory_mb: int, layers: Layers) -> dict[str, Any]:
    """The guard profile the zygote's spares are prepared for: the usual case, the pool's
    memory limit and no network."""
    return asdict(GuardProfile(memory_mb=memory_mb, allow_network=False, **layers.to_dict()))


def start_isolates_early(memory_mb: int = ISOLATE_MEMORY_MB) -> None:
    """Start the zygote the next pool of this process (with that memory limit and the layers of
    ``DYNWF_WEAKEN_ISOLATION``) will use. What its isolates get is the same either way."""
    start_early(spare_profile(memory_mb, Layers.from_environment()))


__all__ = ["spare_profile", "start_isolates_early", "stop_unadopted"]

"""``workers.workflows``: errors a workflow raises on purpose.

Bound under both ``workers.workflows`` and ``emulator.runtime.workers.workflows`` (see
``workers``), so the engine and tenant code share one ``NonRetryableError`` class.
"""

import sys

from emulator.runtime.workers import _alias_module

_alias_module(sys.modules[__name__], "workers.workflows", "emulator.runtime.workers.workflows")


class NonRetryableError(Exception):
    """Raised inside a step: stop retrying it and raise into ``run()`` at once."""


__all__ = ["NonRetryableError"]

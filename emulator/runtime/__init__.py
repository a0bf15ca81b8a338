"""Modules that user code imports inside the emulator (``workers``, ``dynamic_workflows``).

They are importable as top-level names only inside the emulator (this folder is put on the
import path of the host and of isolates), never installed as top-level packages.
"""

import sys
from pathlib import Path

RUNTIME_PATH = str(Path(__file__).parent)


def make_importable() -> None:
    """Put the runtime folder on this process's import path (the host, inline isolates)."""
    if RUNTIME_PATH not in sys.path:
        sys.path.insert(0, RUNTIME_PATH)

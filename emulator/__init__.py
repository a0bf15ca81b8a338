"""dynwf's emulator: config loading, the durable engine, isolates and the dev server.

This package never imports typer or rich; the command line (``dynwf_cli``) renders what it returns.
"""

from emulator.errors import DynwfError

__version__ = "0.1.0"

__all__ = ["DynwfError", "__version__"]

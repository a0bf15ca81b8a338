"""The dev server (``dynwf dev``): the dispatcher behind HTTP, the engine running beside it,
and hot reload of tenant and dispatcher code."""

from emulator.server.app import (ADMIN_PREFIX, TENANT_HEADER, DevServer, RequestRecord,
                                 create_app, error_body, fast_forward_idle, listen, server_config)
from emulator.server.reload import ReloadEvent, Reloader, compile_errors, load_error_line

__all__ = [
    "ADMIN_PREFIX", "DevServer", "ReloadEvent", "Reloader", "RequestRecord", "TENANT_HEADER",
    "compile_errors", "create_app", "error_body", "fast_forward_idle", "listen",
    "load_error_line", "server_config",
]

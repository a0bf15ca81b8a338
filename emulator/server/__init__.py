"""The dev server (``dynwf dev``): the dispatcher behind HTTP, the engine running beside it,
and hot reload of tenant and dispatcher code; and the production server (``dynwf serve``).
``private_listener`` keeps tenant code's outbound requests off the server's own address."""

from emulator.isolates.outbound import private_listener
from emulator.server.app import (ADMIN_PREFIX, MAX_INFLIGHT, MAX_QUEUED, TENANT_HEADER, Admission,
                                 DevServer, DispatcherLoadError, RequestRecord, create_app,
                                 error_body, fast_forward_idle, listen, server_config)
from emulator.server.exposure import is_loopback_ip
from emulator.server.jsonlog import JsonLog
from emulator.server.production import (ADMIN_TOKEN_ENV, DRAIN_TIMEOUT_S, ProductionServer,
                                        admin_token, check_isolation, require_admin_token)
from emulator.server.reload import ReloadEvent, Reloader, compile_errors, load_error_line

__all__ = [
    "ADMIN_PREFIX", "Admission", "DRAIN_TIMEOUT_S", "DevServer", "DispatcherLoadError",
    "ADMIN_TOKEN_ENV", "JsonLog", "ProductionServer", "admin_token", "check_isolation",
    "is_loopback_ip", "require_admin_token",
    "MAX_INFLIGHT", "MAX_QUEUED", "ReloadEvent",
    "Reloader", "RequestRecord", "TENANT_HEADER", "compile_errors", "create_app", "error_body",
    "fast_forward_idle", "listen", "load_error_line", "private_listener", "server_config",
]

"""The dev server (``dynwf dev``): the dispatcher behind HTTP, the engine running beside it,
and hot reload of tenant and dispatcher code; and the production server (``dynwf serve``).
``private_listener`` keeps tenant code's outbound requests off the server's own address.

Names load on first use (``emulator.lazy``): ``dynwf dev`` does not load the production server's
metrics and logs, nor ``dynwf serve`` the reloader.
"""

from emulator.lazy import lazy_names

#: Where each name lives.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "emulator.isolates.outbound": ("private_listener",),
    "emulator.server.app": ("ADMIN_PREFIX", "MAX_INFLIGHT", "MAX_QUEUED", "TENANT_HEADER",
                            "Admission", "DevServer", "DispatcherLoadError", "RequestRecord",
                            "create_app", "error_body", "fast_forward_idle", "listen",
                            "server_config"),
    "emulator.server.exposure": ("is_loopback_ip",),
    "emulator.server.jsonlog": ("JsonLog",),
    "emulator.server.production": ("ADMIN_TOKEN_ENV", "DRAIN_TIMEOUT_S", "ProductionServer",
                                   "admin_token", "check_isolation", "require_admin_token"),
    "emulator.server.reload": ("ReloadEvent", "Reloader", "compile_errors", "load_error_line"),
}
_HOMES = {name: home for home, names in _EXPORTS.items() for name in names}

__all__ = sorted(_HOMES)

__getattr__ = lazy_names("emulator.server", globals(), _HOMES)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

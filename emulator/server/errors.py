"""The admin API's error, and the one table from an error's code to the HTTP status it is
answered with: every refusal of the admin API and of the dashboard is
``{"error": {"code", "message", "hint"}}``."""

from __future__ import annotations

from starlette.responses import JSONResponse

from emulator.errors import DynwfError, ValidationError

#: error code (or its last part) -> HTTP status; anything else from user input is 400
STATUS_OF = {
    "instance.not_found": 404, "state.not_found": 404, "tenant.not_found": 404,
    "instance.already_exists": 409, "instance.ambiguous": 409, "instance.cannot_terminate": 409,
    "instance.not_running": 409, "instance.finished": 409, "instance.invalid_transition": 409,
    "admin.forbidden": 403, "admin.token": 401, "admin.too_large": 413,
}


class AdminError(DynwfError):
    """A request the admin API or the dashboard refuses: not addressed to this machine, without
    the token, or with input that is not what the route takes."""

    code = "admin.invalid"


def _status_for(exc: DynwfError) -> int:
    if exc.code in STATUS_OF:
        return STATUS_OF[exc.code]
    return 400 if isinstance(exc, ValidationError) or exc.code.endswith(("invalid", "invalid_id",
                                                                        "invalid_type")) else 500


def error_response(exc: DynwfError, status: int | None = None) -> JSONResponse:
    return JSONResponse({"error": exc.to_dict()}, status_code=status or _status_for(exc))

"""The admin API's errors: every refusal of the admin API and of the dashboard is
``{"error": {"code", "message", "hint"}}``, answered with the HTTP status its code's entry in
the catalogue (``emulator/error_codes.py``) gives."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from emulator.error_codes import Code, http_status
from emulator.errors import DynwfError
from emulator.rules.limits import MAX_ID_LENGTH


class AdminError(DynwfError):
    """A request the admin API refuses: a field, a value, a body."""

    code = Code.ADMIN_INVALID


class ForbiddenError(AdminError):
    """A request to ``what`` (the admin API, the dashboard) not addressed to this machine."""

    code = Code.ADMIN_FORBIDDEN

    def __init__(self, *, what: str) -> None:
        super().__init__(f"{what} answers only requests addressed to this machine's loopback")


class TokenError(AdminError):
    """A state-changing request without the session's token."""

    code = Code.ADMIN_TOKEN

    def __init__(self, header: str) -> None:
        super().__init__(f"missing or wrong {header} header",
                         hint="read it from the state directory's admin-token file")


class BearerTokenError(TokenError):
    """A request to ``dynwf serve``'s admin API or dashboard without its admin token."""

    #: browsers prompt for Basic credentials (the token as the password); scripts send Bearer
    headers = {"www-authenticate": 'Bearer realm="dynwf", Basic realm="dynwf"'}

    def __init__(self) -> None:
        AdminError.__init__(self, "missing or wrong admin token",
                            hint="send 'Authorization: Bearer <token>', the token dynwf serve "
                                 "was given by DYNWF_ADMIN_TOKEN or --admin-token-file")


class TooLargeError(AdminError):
    """``what`` is over its limit of ``limit`` bytes."""

    code = Code.ADMIN_TOO_LARGE

    def __init__(self, *, what: str, limit: int) -> None:
        super().__init__(f"{what} is over the {limit:,} byte limit")


class InvalidTenantError(AdminError):
    """A ``tenant`` that is not an id (so never a path)."""

    code = Code.TENANT_INVALID

    def __init__(self, *, shown: str) -> None:
        super().__init__(f"'tenant' must be a tenant id: 1-{MAX_ID_LENGTH} characters matching "
                         f"^[a-zA-Z0-9_][a-zA-Z0-9-_]*$, not {shown}")


class UnknownTenantError(AdminError):
    """A tenant with no folder in ``tenants/``; the hint names the ``known`` ones."""

    code = Code.TENANT_NOT_FOUND

    def __init__(self, *, tenant: str, known: list[str]) -> None:
        self.tenant = tenant
        super().__init__(f"no tenant '{tenant}': tenants/{tenant}/ does not exist",
                         hint="the tenants are " + ", ".join(known) if known
                         else "add the tenant's folder to tenants/")


class PlaygroundCodeMissingError(DynwfError):
    """A playground instance of ``tenant`` whose scratch code is gone from the state directory."""

    code = Code.PLAYGROUND_CODE_MISSING

    def __init__(self, *, tenant: Any) -> None:
        super().__init__(f"the playground code of '{tenant}' is gone from the state directory",
                         hint="run it again from the dashboard's playground")


def error_response(exc: DynwfError, status: int | None = None) -> JSONResponse:
    """The answer for ``exc``: its code, message and hint, with its code's status."""
    return JSONResponse({"error": exc.to_dict()}, status_code=status or http_status(exc.code),
                        headers=getattr(exc, "headers", None))

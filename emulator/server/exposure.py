"""Who may talk to the admin API and the dashboard.

``dynwf dev``: requests whose ``Host`` (or ``Origin``, when sent) is not a loopback name are
refused (403), so a web page elsewhere cannot drive a local server even through DNS rebinding;
every state-changing request also needs the ``x-dynwf-token`` header holding the per-session
token the server writes to ``<state dir>/admin-token`` (mode 0600) when it starts. The
dashboard's page carries the token, and is served only to loopback requests, so no other site can read it.

``dynwf serve`` (:func:`serve_check`): every request, reads too, needs the admin token the
operator gave (``DYNWF_ADMIN_TOKEN`` or ``--admin-token-file``), as ``Authorization: Bearer
<token>``, or as the password of ``Authorization: Basic`` (what a browser sends after its prompt,
so the dashboard works too); the Host is not checked, since a production host is reached by
names and addresses of its own. Without a token the admin API and the dashboard are not mounted.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request

from emulator.server.errors import BearerTokenError, ForbiddenError, TokenError

TOKEN_FILE = "admin-token"
TOKEN_HEADER = "x-dynwf-token"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def ensure_token(state_dir: Path) -> str:
    """A new token for this server session, readable only by this user."""
    state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(24)
    path = state_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token)
    os.chmod(path, 0o600)
    return token


def read_token(state_dir: Path) -> str | None:
    try:
        return (state_dir / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def is_local(value: str | None) -> bool:
    """Whether a Host header or an Origin URL names this machine's loopback."""
    if not value:
        return False
    try:
        host = urlsplit(value if "//" in value else "//" + value).hostname
    except ValueError:          # "[::1", "http://[x]": not a host at all
        return False
    return host is not None and (host in LOCAL_HOSTS or host.startswith("127."))


def has_token(request: Request, token: str) -> bool:
    """Whether the request carries ``token`` (compared as bytes: a header may hold any byte,
    and ``compare_digest`` refuses non-ASCII text)."""
    given = request.headers.get(TOKEN_HEADER, "")
    return secrets.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def check_loopback(request: Request, who: str) -> None:
    """Refuse (``admin.forbidden``) a request not addressed to this machine's loopback; ``who``
    names what answers, for the message."""
    if not is_local(request.headers.get("host")) or (
            "origin" in request.headers and not is_local(request.headers["origin"])):
        raise ForbiddenError(what=who)


def check_token(request: Request, token: str) -> None:
    """Refuse (``admin.token``) a state-changing request without the session's token."""
    if not has_token(request, token):
        raise TokenError(TOKEN_HEADER)


def is_loopback_ip(ip: str) -> bool:
    """Whether listening on ``ip`` reaches this machine only (``127.0.0.0/8``, ``::1``,
    ``localhost``); ``0.0.0.0`` and ``::`` listen on every interface, so they are not."""
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip.strip("[]")).is_loopback
    except ValueError:
        return False


def presented_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or the password of a
    ``Basic`` one; None without either."""
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def serve_check(token: str):
    """The guard of ``dynwf serve``'s admin API and dashboard: the admin token on every request
    (``changes`` does not matter: instances, their params and logs are tenants' data)."""
    expected = token.encode("utf-8")

    def check(request: Request, who: str, changes: bool) -> None:
        given = presented_token(request)
        if given is None or not secrets.compare_digest(given.encode("utf-8"), expected):
            raise BearerTokenError()
    return check


def dev_check(token: str):
    """The guard of ``dynwf dev``'s admin API: loopback only; the session token for changes."""
    def check(request: Request, who: str, changes: bool) -> None:
        check_loopback(request, who)
        if changes:
            check_token(request, token)
    return check

"""The dashboard of ``dynwf dev`` at ``/__dynwf/``: the page and its modules.

The page is a single-page app in plain JavaScript modules shipped in ``emulator/server/static/``
(no build step, nothing fetched from elsewhere). ``GET /__dynwf/`` serves ``index.html`` with
the session's admin token in a ``<meta name="dynwf-token">`` tag; the page sends it as the
``x-dynwf-token`` header on every state-changing call of the admin API, exactly as scripts do.
Like the API, the page is served only to requests addressed to a loopback name
(:mod:`emulator.server.exposure`: a rebound DNS name gets a 403, so no other site can read the
token), and a strict Content-Security-Policy keeps the page from talking to anything but this
server. Everything the page shows and does goes through the admin API
(:mod:`emulator.server.admin`); its playground runs code as a scratch tenant
(:mod:`emulator.server.playground`).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from emulator.host import ProjectHost
from emulator.error_codes import Code
from emulator.server.errors import AdminError, error_response
from emulator.server.exposure import check_loopback

__all__ = ["SECURITY_HEADERS", "STATIC_DIR", "dashboard_routes"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
_CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                  ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml",
                  ".py": "text/plain; charset=utf-8"}
#: The page may load and call only this server: no CDN, no beacon, no framing by other sites.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


#: The navigation link to the playground, on pages of a server that mounts it.
_PLAYGROUND_LINK = '<a href="#/playground" data-nav="playground">Playground</a>'


def dashboard_routes(host: ProjectHost, token: str, prefix: str = "/__dynwf", *,
                     check: Callable[[Request, str, bool], None] | None = None,
                     with_playground: bool = True) -> list[Route]:
    """``GET {prefix}/`` (the page) and ``GET {prefix}/static/{file}`` (its modules);
    ``check`` guards them (default: loopback only). Without ``with_playground`` (``dynwf
    serve``, which mounts no playground) the page offers no Playground tab."""

    def refused(request: Request) -> Response | None:
        try:
            if check is None:
                check_loopback(request, "the dashboard")
            else:
                check(request, "the dashboard", False)
        except AdminError as exc:
            return error_response(exc)
        return None

    async def index(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        page = page.replace("{{TOKEN}}", html.escape(token, quote=True)).replace(
            "{{PROJECT}}", html.escape(host.config.name or "dynwf", quote=True)).replace(
            "{{PLAYGROUND}}", "on" if with_playground else "off").replace(
            "{{PLAYGROUND_LINK}}", _PLAYGROUND_LINK if with_playground else "")
        return HTMLResponse(page, headers=SECURITY_HEADERS)

    async def static(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        name = request.path_params["file"]
        path = (STATIC_DIR / name).resolve()
        if path.parent != STATIC_DIR or not path.is_file() or path.name == "index.html":
            return JSONResponse({"error": {"code": str(Code.DEV_NOT_FOUND),
                                           "message": f"no dashboard file {name}"}},
                                status_code=Code.DEV_NOT_FOUND.http_status)
        return FileResponse(path, media_type=_CONTENT_TYPES.get(path.suffix, "text/plain"),
                            headers=SECURITY_HEADERS)

    return [
        Route(f"{prefix}/", index, methods=["GET"]),
        Route(f"{prefix}", index, methods=["GET"]),
        Route(prefix + "/static/{file}", static, methods=["GET"]),
    ]

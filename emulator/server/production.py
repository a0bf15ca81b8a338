"""``dynwf serve``: a project's production host. The dispatcher over HTTP, the engine and the
isolate pool, as ``dynwf dev`` runs them, without what only a developer wants: no hot reload, no
fast-forward, no playground, the real clock only.

What it adds is what an operator needs to run several of them on one database:

- ``GET /healthz`` (the process answers), ``GET /readyz`` (the database answers a probe query and
  the server is not stopping; 503 with the reason otherwise) and ``GET /metrics``
  (:mod:`emulator.server.metrics`). They take these three paths (GET only) from the dispatcher.
- Every line it writes is JSON (:mod:`emulator.server.jsonlog`).
- The admin API and the dashboard only with an admin token, on every request
  (:func:`emulator.server.exposure.serve_check`); without one they are not mounted. The command
  refuses to listen beyond loopback without one.
- A graceful stop in three phases, so another host takes the instances over at once rather than
  when their leases expire: (1) drain: ``/readyz`` turns 503, the engine claims nothing more and
  starts no new step, and the step attempts in flight get up to ``drain_timeout_s`` to commit,
  while HTTP is still served (a load balancer sees the 503 and moves traffic away); (2) HTTP stops
  accepting connections and the requests in flight finish; (3) the engine stops its lifetimes
  and hands every lease back (``Engine.shutdown``), and the isolates are stopped.

Tried first: reusing ``dynwf dev``'s app and lifespan as they are. Its lifespan stops the engine
only after uvicorn has closed its listener, so ``/readyz`` could never say "draining", and its
engine stop cancels steps in flight at once, so each of them ran again on the next host.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
import uvicorn

from emulator.engine import progress
from emulator.error_codes import Code
from emulator.errors import DynwfError, UsageError
from emulator.host import ProjectHost
from emulator.isolates.sandbox import Layers, describe_missing, missing_layers
from emulator.server.admin import admin_routes
from emulator.server.app import ADMIN_PREFIX, Admission, DevServer, Dispatch, RequestRecord
from emulator.server.dashboard import dashboard_routes
from emulator.server.errors import error_response
from emulator.server.exposure import is_loopback_ip, serve_check
from emulator.server.jsonlog import JsonLog, capture_logging
from emulator.server.metrics import CONTENT_TYPE, ServeMetrics

__all__ = ["ADMIN_TOKEN_ENV", "DRAIN_TIMEOUT_S", "AdminOffError", "ProductionServer",
           "ServeState", "TokenFileError", "TokenRequiredError", "WeakIsolationError",
           "admin_token", "check_isolation", "require_admin_token"]

#: Where ``dynwf serve`` reads the admin token from when ``--admin-token-file`` is not given.
ADMIN_TOKEN_ENV = "DYNWF_ADMIN_TOKEN"

#: Default of ``--drain-timeout``: most steps are calls of a second or two; ten seconds lets
#: them commit and stays well inside a container platform's usual 30 s grace period.
DRAIN_TIMEOUT_S = 10.0
#: How long HTTP requests in flight get once the listener is closed.
HTTP_GRACE_S = 5


class AdminOffError(DynwfError):
    """A request to the admin API or the dashboard of a server started without an admin token."""

    code = Code.SERVE_ADMIN_OFF

    def __init__(self) -> None:
        super().__init__("the admin API and the dashboard are not served: dynwf serve was started "
                         "without an admin token",
                         hint="start it with DYNWF_ADMIN_TOKEN set or with --admin-token-file")


class TokenRequiredError(UsageError):
    """``dynwf serve`` asked to listen on ``ip``, beyond loopback, without an admin token."""

    code = Code.SERVE_TOKEN_REQUIRED

    def __init__(self, *, ip: str) -> None:
        super().__init__(f"dynwf serve listens on {ip}, beyond this machine's loopback, and was "
                         "given no admin token to guard the admin API and the dashboard",
                         hint=f"set {ADMIN_TOKEN_ENV}=<token> or pass --admin-token-file FILE "
                              "(e.g. a mounted secret); or listen on 127.0.0.1")


class TokenFileError(UsageError):
    """``--admin-token-file`` at ``path`` cannot be read (``reason``) or holds no token."""

    code = Code.SERVE_TOKEN_FILE

    def __init__(self, *, path: Path, reason: str) -> None:
        super().__init__(f"--admin-token-file {path}: {reason}",
                         hint="write the token (one line, e.g. from 'openssl rand -hex 24') in "
                              f"that file, or set {ADMIN_TOKEN_ENV} instead")


class WeakIsolationError(DynwfError):
    """Kernel layers of tenant isolation that this machine cannot put in place: ``missing``."""

    code = Code.SERVE_WEAK_ISOLATION

    def __init__(self, *, missing: dict[str, str]) -> None:
        self.missing = dict(missing)
        super().__init__("dynwf serve will not run tenant code with weaker isolation: "
                         + describe_missing(missing),
                         hint="run it on a Linux kernel with those layers (as root for the user "
                              "layer), or accept the risk with --allow-weak-isolation")


def admin_token(*, file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The admin token: the contents of ``file`` (stripped) when given, else ``DYNWF_ADMIN_TOKEN``
    (stripped); None when neither gives one. An unreadable or empty file is an error, never a
    silent fallback to no token."""
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenFileError(path=file, reason=getattr(exc, "strerror", None) or str(exc)) \
                from None
        if not text:
            raise TokenFileError(path=file, reason="the file is empty")
        return text
    return environ.get(ADMIN_TOKEN_ENV, "").strip() or None


def require_admin_token(ip: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without an admin token (``serve.token_required``)."""
    if token is None and not is_loopback_ip(ip):
        raise TokenRequiredError(ip=ip)


def check_isolation(*, allow_weak: bool) -> dict[str, str]:
    """The kernel layers of isolation missing here (``DYNWF_WEAKEN_ISOLATION`` switches some off
    on purpose); ``serve.weak_isolation`` when one is and ``allow_weak`` is not given."""
    try:
        layers = Layers.from_environment()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    missing = missing_layers(layers)
    if missing and not allow_weak:
        raise WeakIsolationError(missing=missing)
    return missing


@dataclass
class ServeState:
    """What ``/readyz`` and the metrics say about the server itself."""

    missing_layers: dict[str, str] = field(default_factory=dict)
    serving: bool = False
    draining: bool = False


class ProductionServer:
    """The server around a started ``host``, on an already listening ``sock``."""

    def __init__(self, host: ProjectHost, sock: Any, *, log: JsonLog, token: str | None,
                 missing_layers: dict[str, str], drain_timeout_s: float = DRAIN_TIMEOUT_S,
                 admission: Admission | None = None) -> None:
        self.host = host
        self.sock = sock
        self.log = log
        self.token = token
        self.drain_timeout_s = drain_timeout_s
        self.state = ServeState(missing_layers=dict(missing_layers))
        self.metrics = ServeMetrics(host, missing_layers=missing_layers,
                                    is_draining=lambda: self.state.draining)
        self.admission = admission or Admission()
        self.app = self._create_app()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._uvicorn: DevServer | None = None

    # ---- the app -------------------------------------------------------------------------

    def _create_app(self) -> ASGIApp:
        host = self.host

        async def healthz(request: HttpRequest) -> JSONResponse:
            return JSONResponse({"status": "ok"})

        async def readyz(request: HttpRequest) -> JSONResponse:
            reasons = []
            database: dict[str, Any] = {"ok": True}
            try:
                database["ms"] = round(self.metrics.probe() * 1000, 3)
            except Exception as exc:  # noqa: BLE001 - any failure of the probe means not ready
                database = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                reasons.append(f"the database does not answer: {database['error']}")
            if self.state.draining:
                reasons.append("draining: the server is stopping")
            elif not self.state.serving:
                reasons.append("starting")
            body = {"status": "not ready" if reasons else "ready", "database": database,
                    "draining": self.state.draining,
                    "isolation": {"weakened": bool(self.state.missing_layers),
                                  "missing": self.state.missing_layers}}
            if reasons:
                body["reasons"] = reasons
            return JSONResponse(body, status_code=503 if reasons else 200)

        async def metrics(request: HttpRequest) -> Response:
            return Response(self.metrics.render(), media_type=CONTENT_TYPE)

        async def admin_off(request: HttpRequest) -> Response:
            return error_response(AdminOffError())

        async def unknown(request: HttpRequest) -> JSONResponse:
            return JSONResponse({"error": {"code": str(Code.DEV_NOT_FOUND),
                                           "message": f"no route {request.url.path}"}},
                                status_code=Code.DEV_NOT_FOUND.http_status)

        dispatch = Dispatch(host, self._dispatch_error, self.admission)
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
        routes = [Route("/healthz", healthz, methods=["GET"]),
                  Route("/readyz", readyz, methods=["GET"]),
                  Route("/metrics", metrics, methods=["GET"])]
        if self.token is not None:
            check = serve_check(self.token)
            routes += [*admin_routes(host, self.token, check=check, with_playground=False),
                       *dashboard_routes(host, self.token, ADMIN_PREFIX, check=check,
                                        with_playground=False),
                       Route(ADMIN_PREFIX + "/{rest:path}", unknown, methods=methods)]
        else:
            routes += [Route(ADMIN_PREFIX, admin_off, methods=methods),
                       Route(ADMIN_PREFIX + "/{rest:path}", admin_off, methods=methods)]
        routes.append(Route("/{path:path}", dispatch))
        return _RequestLog(Starlette(routes=routes), self.log)

    def _dispatch_error(self, record: RequestRecord) -> None:
        """A dispatcher request that failed or was refused: what went wrong (the request line
        itself is logged for every request by :class:`_RequestLog`)."""
        if record.error is not None:
            self.log.error("dispatch.error", method=record.method, path=record.path,
                           tenant=record.tenant, status=record.status,
                           code=record.error.get("code"), message=record.error.get("message"))

    # ---- running -------------------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Begin the graceful stop (from a signal handler); ``force`` (a second signal) stops
        waiting for the steps in flight, which are then cut off and retried elsewhere."""
        self._stop.set()
        if force:
            self._force.set()

    async def run(self) -> dict[str, Any]:
        """Serve until :meth:`stop`, then stop gracefully; returns what the stop did."""
        host, loop = self.host, asyncio.get_running_loop()
        capture_logging(self.log)
        self.metrics.attach()
        unsubscribe = host.engine.progress.subscribe(self._instance_status)
        host.engine.on_takeover = self._takeover
        host.engine.on_listen = self._listen
        host.engine.on_tick_failure = self._tick_failed
        host.tenant_log_listeners.append(self._tenant_log)
        engine_stop = asyncio.Event()
        engine_task = loop.create_task(host.engine.serve(engine_stop))
        scheduler_task = loop.create_task(host.scheduler.run(engine_stop))
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=HTTP_GRACE_S)
        self._uvicorn = DevServer(config)
        http_task = loop.create_task(self._uvicorn.serve(sockets=[self.sock]))
        self.state.serving = True
        try:
            stopped = loop.create_task(self._stop.wait())
            await asyncio.wait({stopped, http_task}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            started = time.perf_counter()
            self.state.draining = True
            in_flight = sum(lt.in_flight for lt in host.engine.live.values())
            self.log.info("shutdown.draining", running=len(host.engine.live),
                          steps_in_flight=in_flight, timeout_s=self.drain_timeout_s)
            drained = await self._drain()
            left = sum(lt.in_flight for lt in host.engine.live.values())
            self.log.info("shutdown.drained", complete=drained, steps_cut_off=left,
                          ms=round((time.perf_counter() - started) * 1000, 1))
            self._uvicorn.stop()
            with contextlib.suppress(Exception):
                await http_task
            self.state.serving = False
            handed_back = len(host.engine.live)
            engine_stop.set()
            await engine_task              # Engine.serve hands every lease back as it returns
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(scheduler_task, 5)
            return {"drained": drained, "steps_cut_off": left, "handed_back": handed_back,
                    "ms": round((time.perf_counter() - started) * 1000, 1)}
        finally:
            engine_stop.set()
            if not http_task.done():
                self._uvicorn.stop(force=True)
                with contextlib.suppress(Exception):
                    await http_task
            unsubscribe()
            self.metrics.detach()
            host.engine.on_takeover = None
            host.engine.on_listen = None
            host.engine.on_tick_failure = None
            await host.close()

    async def _drain(self) -> bool:
        """``Engine.drain_steps``, unless a forced stop comes first (then False)."""
        loop = asyncio.get_running_loop()
        draining = loop.create_task(self.host.engine.drain_steps(self.drain_timeout_s))
        forced = loop.create_task(self._force.wait())
        await asyncio.wait({draining, forced}, return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if draining.done():
            return draining.result()
        draining.cancel()
        self.log.warning("shutdown.forced", message="a second signal: steps in flight are cut "
                                                    "off and retried by the next host")
        return False

    # ---- what is logged ------------------------------------------------------------------

    def _instance_status(self, event: progress.Progress) -> None:
        if event.kind != progress.INSTANCE_STATUS:
            return
        fields: dict[str, Any] = {"instance": event.instance_id, "status": event.data.get("status")}
        error = event.data.get("error")
        if isinstance(error, dict):
            fields["error"] = {"name": error.get("name"), "message": error.get("message")}
        self.log.info("instance.status", **fields)

    def _takeover(self, instance_id: str, previous_owner: str) -> None:
        self.log.warning("lease.takeover", instance=instance_id, previous_owner=previous_owner)

    def _listen(self, listening: bool, reason: str | None) -> None:
        if listening:
            self.log.info("wakeups.listening", message="other hosts' changes are pushed here")
        else:
            self.log.warning("wakeups.lost", reason=reason,
                             message=f"not hearing other hosts' changes: polling every "
                                     f"{self.host.engine.poll_ms} ms until reconnected")

    def _tick_failed(self, exc: BaseException) -> None:
        self.log.error("engine.round_failed", error=f"{type(exc).__name__}: {exc}",
                       message=f"the scheduler tries again in {self.host.engine.poll_ms} ms")

    def _tenant_log(self, label: str, level: str, message: str) -> None:
        self.log.info("tenant.log", tenant=label.split(":", 1)[-1], tenant_level=level,
                      message=message)


class _RequestLog:
    """Logs every request (method, path, status, duration) as one JSON line when answered."""

    def __init__(self, app: ASGIApp, log: JsonLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = []

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            self.log.info("http.request", method=scope.get("method"), path=scope.get("path"),
                          status=status[0] if status else 500,
                          duration_ms=round((time.perf_counter() - started) * 1000, 2))

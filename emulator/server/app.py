"""The dev server's Starlette app: every request goes to the dispatcher's ``Default.fetch``.

``/__dynwf/*`` is the emulator's own namespace (health now; the admin API and dashboard live
there too), so it never reaches user code. Anything else becomes a runtime ``Request`` handed to
:meth:`ProjectHost.fetch`, and the ``Response`` it returns becomes the HTTP response. An error
raised by the dispatcher or a tenant is answered with a 500 and a JSON body
``{"error": {"code", "message"}}``, never a traceback page, and reported once through
``on_request``. Dispatcher requests are admitted under a bound (:class:`Admission`): beyond it a
request is refused at once with 503 ``dev.overloaded`` and ``Retry-After``, before any user code
runs.

The app's lifespan owns the running parts: it starts the host if the caller has not, then runs
the engine's scheduler (and any background tasks, such as the reloader) until shutdown, when the
engine hands its leases back (so the next session claims those instances at once) and the host
closes. Instances an earlier session left queued, running or sleeping resume because this
engine claims them.

:func:`listen` binds the socket before anything starts, so a port in use is one clear error
rather than a half-started host; :class:`DevServer` is uvicorn's server with its signal handling
left to the caller, which decides what SIGINT and SIGTERM mean (exit 130 and 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response as HttpResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
import uvicorn

from emulator.engine import Engine
from emulator.error_codes import Code
from emulator.error_wire import to_wire
from emulator.errors import DynwfError
from emulator.rules import states
from emulator.host import ProjectHost
from emulator.server.admin import admin_routes
from emulator.server.dashboard import dashboard_routes
from emulator.server.exposure import ensure_token
from emulator.server.playground import install_playground
from emulator.tracebacks import traceback_of

__all__ = ["ADMIN_PREFIX", "MAX_INFLIGHT", "MAX_QUEUED", "RETRY_AFTER_S", "TENANT_HEADER",
           "Admission", "AdmissionLimitError", "BackgroundTask", "BadResponseError",
           "CannotListenError", "DevServer", "Dispatch", "DispatcherLoadError", "PortInUseError",
           "RequestRecord", "create_app", "error_body", "fast_forward_idle", "listen",
           "server_config"]

ADMIN_PREFIX = "/__dynwf"
#: The header naming a request's tenant, by the convention of the examples and templates;
#: only shown in request logs (routing is the dispatcher's business).
TENANT_HEADER = "x-tenant-id"
#: A task run for the app's lifetime; it must return soon after ``stop`` is set.
BackgroundTask = Callable[[asyncio.Event], Awaitable[None]]
_NO_BODY_METHODS = frozenset({"GET", "HEAD"})
#: Defaults of ``dynwf dev --max-inflight`` and ``--max-queued``: far above what a person or a
#: test suite sends at once, low enough that a runaway client meets a refusal, not a server
#: whose memory and latency grow with every connection it opens.
MAX_INFLIGHT = 256
MAX_QUEUED = 256
#: The ``Retry-After`` of a refusal, in whole seconds (the only form HTTP allows besides a date).
RETRY_AFTER_S = 1


# ---- errors -----------------------------------------------------------------------------------

class AdmissionLimitError(DynwfError):
    """Bounds :class:`Admission` cannot keep: at most ``limit`` running (1 or more) with
    ``queue`` waiting (0 or more)."""

    code = Code.DEV_INVALID_LIMIT

    def __init__(self, *, limit: int, queue: int) -> None:
        super().__init__(f"cannot admit at most {limit} requests with {queue} waiting",
                         hint="--max-inflight must be 1 or more, --max-queued 0 or more")


class BadResponseError(DynwfError):
    """``Default.fetch`` returned a ``returned``, not a ``Response``."""

    code = Code.WORKER_BAD_RESPONSE

    def __init__(self, *, returned: str) -> None:
        super().__init__(f"Default.fetch returned {returned}, not a Response",
                         hint="return workers.Response(...) or Response.json(...)")


class PortInUseError(DynwfError):
    """Another process listens on ``ip:port``; ``free`` is a port near it that is not taken."""

    code = Code.DEV_PORT_IN_USE

    def __init__(self, *, ip: str, port: int, free: int | None) -> None:
        super().__init__(f"port {port} on {ip} is already in use",
                         hint=f"stop the other server, or pass --port {free}" if free
                         else "stop the other server, or pass another --port")


class CannotListenError(DynwfError):
    """``ip:port`` cannot be listened on, for ``reason``."""

    code = Code.DEV_CANNOT_LISTEN

    def __init__(self, *, ip: str, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on {ip}:{port}: {reason}",
                         hint="pass an address of this machine with --ip, e.g. 127.0.0.1")


class DispatcherLoadError(DynwfError):
    """The dispatcher's module raised while it was imported; ``problem`` is where and what."""

    code = Code.DEV_DISPATCHER_FAILED

    def __init__(self, *, problem: str) -> None:
        super().__init__(f"the dispatcher failed to load: {problem}",
                         hint="fix it and run dynwf dev again; dynwf check finds most problems")


# ---- requests ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request to the dispatcher (answered or refused), as the request log shows it."""

    method: str
    path: str
    tenant: str | None
    status: int
    seconds: float
    error: dict[str, Any] | None = None      # {"code", "message", "traceback"?} when it failed

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "path": self.path, "tenant": self.tenant,
                               "status": self.status, "ms": round(self.seconds * 1000, 2)}
        if self.error is not None:
            out["error"] = self.error
        return out


def error_body(exc: BaseException) -> dict[str, Any]:
    """``{"code", "message"}`` of an error raised while answering a request, with
    ``"traceback"``: the user's frames (the dispatcher's, and a tenant's carried from its isolate;
    :mod:`emulator.tracebacks`) when it was raised in user code."""
    if isinstance(exc, DynwfError):
        body: dict[str, Any] = {"code": str(exc.code), "message": exc.message}
    else:
        code = getattr(exc, "code", None)
        # a tenant's error comes back from its isolate rebuilt: named as the tenant raised it
        # (JSONDecodeError), not as the class that carries it (RemoteError)
        name = to_wire(exc)["name"] or type(exc).__name__
        message = str(exc) or name
        if not message.startswith(name):
            message = f"{name}: {message}"
        body = {"code": str(code) if isinstance(code, str) else str(Code.WORKER_EXCEPTION),
                "message": message}
    frames = traceback_of(exc)
    if frames:
        body["traceback"] = frames
    return body


class Admission:
    """The bound on dispatcher requests held at once: at most ``limit`` run in the dispatcher,
    at most ``queue`` more wait (first come, first served) for one of them to finish, and any
    request beyond both is refused at once.

    Why a bound: each request in flight holds a task, its body and a call into a tenant's
    isolate, so without one a flood of clients grows the server's memory and every request's
    latency with no limit, and the clients learn nothing they could act on. A refusal costs
    almost nothing, comes before the body is read or any user code runs (so it created nothing
    and the same request may be sent again), and says when to come back. The queue absorbs a
    short burst above ``limit`` without refusing it, while only ``limit`` requests at a time
    hold isolate calls and engine work.
    """

    def __init__(self, limit: int = MAX_INFLIGHT, queue: int = MAX_QUEUED) -> None:
        if limit < 1 or queue < 0:
            raise AdmissionLimitError(limit=limit, queue=queue)
        self.limit = limit
        self.queue = queue
        self.running = 0
        self.waiting = 0
        self.refused = 0
        self._slots = asyncio.Semaphore(limit)

    async def enter(self) -> bool:
        """Take a slot, waiting in the queue when it has room; False when refused."""
        if self.running + self.waiting >= self.limit + self.queue:
            self.refused += 1
            return False
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        return True

    def leave(self) -> None:
        self.running -= 1
        self._slots.release()

    def refusal(self) -> tuple[dict[str, str], JSONResponse]:
        """The 503 for a refused request, and its ``{"code", "message"}`` for the request log."""
        error = {"code": str(Code.DEV_OVERLOADED),
                 "message": f"the dev server is at its limit ({self.running} requests running, "
                            f"{self.waiting} waiting); this one was not started"}
        hint = (f"retry after {RETRY_AFTER_S} s (the Retry-After header), send fewer requests "
                "at once, or start dynwf dev with a higher --max-inflight or --max-queued")
        return error, JSONResponse({"error": {**error, "hint": hint}},
                                   status_code=Code.DEV_OVERLOADED.http_status,
                                   headers={"retry-after": str(RETRY_AFTER_S)})

    def to_dict(self) -> dict[str, int]:
        return {"running": self.running, "waiting": self.waiting, "refused": self.refused,
                "max_inflight": self.limit, "max_queued": self.queue}


class Dispatch:
    """The catch-all route (an ASGI app, so Starlette lets every method through): admits the
    request (:class:`Admission`), hands it to the dispatcher and reports it to ``on_request``."""

    def __init__(self, host: ProjectHost, on_request: Callable[[RequestRecord], None] | None,
                 admission: Admission | None = None):
        self.host = host
        self.on_request = on_request
        self.admission = admission or Admission()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        incoming = HttpRequest(scope, receive)
        if await self.admission.enter():
            try:
                error, response = await self._answer(incoming)
            finally:
                self.admission.leave()
        else:
            error, response = self.admission.refusal()
        if self.on_request is not None:
            self.on_request(RequestRecord(incoming.method, incoming.url.path,
                                          incoming.headers.get(TENANT_HEADER),
                                          response.status_code, time.perf_counter() - started,
                                          error))
        await response(scope, receive, send)

    async def _answer(self, incoming: HttpRequest) -> tuple[dict[str, str] | None, HttpResponse]:
        try:
            return None, await self._fetch(incoming)
        except Exception as exc:  # noqa: BLE001 - user code may raise anything; answer with JSON
            error = error_body(exc)
            return error, JSONResponse({"error": error}, status_code=500)

    async def _fetch(self, incoming: HttpRequest) -> HttpResponse:
        from emulator.runtime.workers import Request, Response
        body = await incoming.body()
        request = Request(str(incoming.url), method=incoming.method,
                          headers=list(incoming.headers.items()),
                          body=None if incoming.method in _NO_BODY_METHODS or not body else body)
        result = await self.host.fetch(request)
        if not isinstance(result, Response):
            raise BadResponseError(returned=type(result).__name__)
        return HttpResponse(result.body, status_code=result.status,
                            headers=dict(result.headers.items()))


def create_app(host: ProjectHost, *, on_request: Callable[[RequestRecord], None] | None = None,
               background: Sequence[BackgroundTask] = (), token: str | None = None,
               admission: Admission | None = None) -> Starlette:
    """The dev server app around ``host``. ``on_request`` hears of every dispatched request
    (refused ones too); ``background`` tasks run beside the engine for the app's lifetime;
    ``admission`` bounds the dispatcher requests held at once (default: :class:`Admission`)."""
    dispatch = Dispatch(host, on_request, admission)

    async def health(request: HttpRequest) -> JSONResponse:
        store = host.engine.store
        return JSONResponse({
            "ok": host.started, "pid": os.getpid(), "project": host.config.name,
            "instances": store.count_by_status(), "running": len(host.engine.live),
            "isolates": host.pool.live_count, "isolate_loads": host.pool.loads,
            "requests": dispatch.admission.to_dict(),
        })

    async def unknown(request: HttpRequest) -> JSONResponse:
        return JSONResponse({"error": {"code": str(Code.DEV_NOT_FOUND),
                                       "message": f"no emulator route {request.url.path}"}},
                            status_code=Code.DEV_NOT_FOUND.http_status)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not host.started:
            await host.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # the engine starts only now, after the host: its runners need the dispatcher
        engine_task = loop.create_task(host.engine.serve(stop))
        # the config's cron schedules fire beside the engine, on its clock (engine/scheduler.py)
        tasks = [loop.create_task(task(stop)) for task in (host.scheduler.run, *background)]
        try:
            yield
        finally:
            stop.set()
            _, pending = await asyncio.wait(tasks, timeout=5)   # never empty: the scheduler
            for task in pending:
                task.cancel()
            await engine_task       # serve() hands every lease back before it returns
            await host.close()

    token = token or ensure_token(host.state_dir)
    install_playground(host)
    routes = [
        Route(f"{ADMIN_PREFIX}/health", health),
        *admin_routes(host, token),
        *dashboard_routes(host, token, ADMIN_PREFIX),
        Route(ADMIN_PREFIX + "/{rest:path}", unknown,
              methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        Route("/{path:path}", dispatch),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def fast_forward_idle(engine: Engine, stop: asyncio.Event, *, every_s: float = 0.05) -> None:
    """``--fast-forward`` under a server: whenever nothing is running or waiting to run, end the
    sleep or retry back-off that is due first, now (``Engine.skip_ahead``: that instance's own
    timer, no clock moves). Event waits and their timeouts are left alone: an event comes from
    outside, and another instance's sleep never times one out.

    ``Engine.serve`` never skips (it serves real requests); ``Engine.drain`` does, but returns
    when idle, so the server runs this beside ``serve``.
    """
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if engine.has_busy_lifetimes():
            continue
        counts = engine.store.count_by_status()
        # an instance holding a retry back-off in its invocation is running, and waits for a
        # timer like a sleeping one (docs/semantics.md §4.9)
        counts[states.RUNNING] = counts.get(states.RUNNING, 0) - engine.holding()
        if any(counts.get(status) for status in (states.QUEUED, states.RUNNING, states.WAITING_FOR_PAUSE)):
            continue
        engine.skip_ahead()


# ---- serving ----------------------------------------------------------------------------------

def listen(ip: str, port: int) -> socket.socket:
    """A listening TCP socket on ``ip:port`` (port 0: any free port), or ``dev.port_in_use``."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # as uvicorn does: a restarted server may bind while old connections sit in TIME_WAIT
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((ip, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            free = _free_port_near(ip, port, family)
            raise PortInUseError(ip=ip, port=port, free=free) from None
        raise CannotListenError(ip=ip, port=port, reason=str(exc.strerror or exc)) from None
    return sock


def _free_port_near(ip: str, port: int, family: int) -> int | None:
    for candidate in range(port + 1, min(port + 20, 65_536)):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((ip, candidate))
            except OSError:
                continue
            return candidate
    return None


class DevServer(uvicorn.Server):
    """uvicorn's server, minus its signal handling: uvicorn re-raises a caught SIGTERM after
    shutting down, which would end the process by the signal instead of with status 0.
    The caller installs its own handlers and calls :meth:`stop`."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield

    def install_signal_handlers(self) -> None:  # uvicorn before 0.29 calls this instead
        pass

    def stop(self, *, force: bool = False) -> None:
        """Shut down gracefully (let requests finish); ``force`` does not wait for them."""
        self.should_exit = True
        if force:
            self.force_exit = True


def server_config(app: Starlette, *, ip: str, port: int) -> uvicorn.Config:
    """uvicorn's settings for the dev server: quiet (the command prints its own request log)."""
    return uvicorn.Config(app, host=ip, port=port, log_level="warning", access_log=False,
                          lifespan="on", timeout_graceful_shutdown=5)

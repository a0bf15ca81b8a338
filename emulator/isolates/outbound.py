"""Outbound HTTP from tenant code: ``fetch`` as a capability the host holds for each isolate.

An isolate holds no network socket of its own. Tenant code calls ``workers.fetch``; the request
crosses the RPC boundary by value, and the host sends it as the isolate's *outbound policy* says.
The policy comes from the dispatcher's code dict (``global_outbound``), is kept on the host's side
of the isolate's connection (:class:`Outbound`, held by its ``HostRoot``) and is never taken from
anything the isolate sends:

- ``global_outbound`` omitted: the host makes the request itself (the platform's "inherits the
  parent's network");
- ``None``: ``PermissionError`` with the platform's message, whatever the request;
- a stub (an ``RpcTarget`` or a loader entrypoint, anything with a ``fetch(request)``): it gets
  every request and its ``Response`` goes back to the tenant (egress control).

The isolate is hostile: it can call the host's ``fetch`` methods directly with any arguments, so
every request is checked here (method, URL, headers, body, against the limits below) before any
policy applies. Each attempt is logged with its method, URL, status or error and duration: under
the instance and step when made inside a step body (through that instance's step handle), as a
tenant log line otherwise.

The host's own requests use the standard library's ``urllib.request`` in a daemon thread per
request, at most 32 at a time. Measured against a server on loopback in another process (2 cores,
otherwise idle): urllib alone 0.42 ms a request; from the event loop through a thread 0.69 ms;
from a process isolate, RPC included, 1.16 ms; 1,000 requests at once from an isolate, ~1,500 a
second (with other work on the same cores: 1.1-2.1 ms, 350-700 a second).
An async HTTP client could save at most the thread's ~0.3 ms, next to a network's tens of
milliseconds, and would be a new dependency; it was not tried. Daemon threads rather than an
executor, so that a request still waiting on a slow server never holds up the process's exit.
"""

from __future__ import annotations

import asyncio
import http.client
import inspect
import ipaddress
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable, Iterator

from emulator.isolates.guard.audit_hooks import NO_GLOBAL_OUTBOUND_MESSAGE
from emulator.runtime.workers import (Headers, Request, Response, outbound_route,
                                      serve_host_requests)
from emulator.sdk.remote import serve_outbound

#: The log level of outbound request lines: ``fetch: GET https://... → 200 in 12 ms``.
LOG_LEVEL = "fetch"

MAX_URL_CHARS = 16 * 1024               # the platform's URL limit
MAX_METHOD_CHARS = 32
MAX_HEADERS = 128
MAX_HEADER_NAME_BYTES = 256
MAX_HEADER_VALUE_BYTES = 16 * 1024
MAX_HEADER_BYTES = 64 * 1024            # all names and values together
# A request body crosses from the isolate base64-encoded, in a frame of at most 4 MiB
# (rpc/frames.py): 2 MiB is about 2.7 MiB there.
MAX_REQUEST_BODY_BYTES = 2 * 1024 * 1024
# A response travels to the isolate, where frames may reach 64 MiB: 16 MiB is about 21 MiB.
MAX_RESPONSE_BODY_BYTES = 16 * 1024 * 1024
#: Whole request, redirects and body included (Cloudflare's proxy waits 100 s for an origin too).
TIMEOUT_S = 100.0
#: Requests the host has in flight at once; more wait their turn.
MAX_CONCURRENT = 32
MAX_SHOWN_URL = 2048                    # in log lines; the request itself keeps the whole URL

_SCHEMES = frozenset({"http", "https"})
_FORBIDDEN_METHODS = frozenset({"CONNECT", "TRACE", "TRACK"})  # fetch refuses them too
# Headers of the connection itself: the host's HTTP client sets them; a tenant may not.
_CONNECTION_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "te",
                                 "trailer", "transfer-encoding", "upgrade"})
_READ_CHUNK = 64 * 1024


class OutboundMode(StrEnum):
    NETWORK = "network"     # global_outbound omitted
    NONE = "none"           # global_outbound None
    STUB = "stub"           # global_outbound a stub with fetch(request)


@dataclass(frozen=True)
class OutboundPolicy:
    """What ``fetch`` does for one loaded isolate, decided from the dispatcher's code dict."""

    mode: OutboundMode
    stub: Any = None

    @classmethod
    def from_code(cls, code: dict[str, Any], worker_id: str) -> "OutboundPolicy":
        """The policy of a code dict (Python spellings); ``ValueError`` for a value that is none
        of the three."""
        if "global_outbound" not in code:
            return cls(OutboundMode.NETWORK)
        value = code["global_outbound"]
        if value is None:
            return cls(OutboundMode.NONE)
        if callable(getattr(value, "fetch", None)):
            return cls(OutboundMode.STUB, value)
        raise ValueError(f"global_outbound of '{worker_id}' must be None (no network), left out "
                         "(the host's network) or a stub with a fetch(request) method, not "
                         f"{type(value).__name__}")


NO_OUTBOUND = OutboundPolicy(OutboundMode.NONE)

LogLine = Callable[[str, str], None]    # (level, message)
MAX_LOG_CHARS = 16_384                  # as for the lines tenant code prints


class Outbound:
    """One isolate's way out, on the host's side of its connection."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    async def fetch(self, request: Any, log: LogLine | None) -> Response:
        """Check ``request``, send it as the policy says and log the outcome through ``log``."""
        # A tenant's context may have crossed over with the call (inline isolation delivers
        # frames in the caller's context): what runs from here on is host code, whose own
        # ``fetch`` (a stub forwarding the request, say) goes out from the host.
        outbound_route.set(None)
        started = time.monotonic()
        method, url = _shown(request)
        via = ""
        try:
            checked = check_request(request)
            if self.policy.mode is OutboundMode.NONE:
                raise PermissionError(NO_GLOBAL_OUTBOUND_MESSAGE)
            if self.policy.mode is OutboundMode.STUB:
                via = " via global_outbound"
                response = await _through_stub(self.policy.stub, checked)
            else:
                response = await send_from_host(checked)
        except asyncio.CancelledError:
            _log(log, f"{method} {url} cancelled after {_ms(started)} ms{via}")
            raise
        except Exception as exc:
            _log(log, f"{method} {url} failed in {_ms(started)} ms{via}: "
                      f"{type(exc).__name__}: {exc}")
            raise
        _log(log, f"{method} {url} → {response.status} in {_ms(started)} ms{via}")
        return response


def outbound_of_caller() -> Outbound:
    """The outbound of the isolate whose RPC call is running: a host object shared with an
    isolate (its step handle) sends that isolate's requests under that isolate's policy."""
    from emulator.rpc.peer import calling_peer
    peer = calling_peer.get()
    outbound = getattr(peer.root, "outbound", None) if peer is not None else None
    if not isinstance(outbound, Outbound):
        raise PermissionError("fetch through a step handle is only for the isolate it was sent to")
    return outbound


# ---- checking a request ---------------------------------------------------------------------

def check_request(request: Any) -> Request:
    """``request`` if it is a ``Request`` within every limit; ``TypeError``/``ValueError``
    naming what is wrong otherwise. Returns a copy whose URL is ready to send (IRI characters
    percent-encoded, host name in IDNA)."""
    if not isinstance(request, Request):
        raise TypeError(f"fetch needs a Request, not {type(request).__name__}")
    method = request.method
    if not isinstance(method, str) or not 0 < len(method) <= MAX_METHOD_CHARS:
        raise TypeError(f"fetch: invalid method {str(method)[:MAX_METHOD_CHARS]!r}")
    if method.upper() in _FORBIDDEN_METHODS:
        raise TypeError(f"fetch: the {method.upper()} method is not allowed")
    url = _check_url(request.url)
    _check_headers(request.headers)
    body = request.body or None
    if body is not None and len(body) > MAX_REQUEST_BODY_BYTES:
        raise ValueError(f"fetch: the request body is {len(body):,} bytes, over the "
                         f"{MAX_REQUEST_BODY_BYTES // (1024 * 1024)} MiB limit")
    declared = request.headers.get("content-length")
    if declared is not None and declared != str(len(body or b"")):
        raise ValueError(f"fetch: content-length {declared[:20]!r} does not match the body's "
                         f"{len(body or b'')} bytes (leave it out: the body's length is sent)")
    return Request(url, method=method, headers=request.headers, body=body)


def _check_url(url: Any) -> str:
    if not isinstance(url, str):
        raise TypeError(f"fetch: the URL must be a str, not {type(url).__name__}")
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"fetch: the URL is {len(url):,} characters long, over the limit of "
                         f"{MAX_URL_CHARS:,}")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise TypeError(f"fetch: invalid URL {_cut(url)!r}: it contains spaces or control "
                        "characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise TypeError(f"fetch: invalid URL {_cut(url)!r}: {exc}") from None
    if parts.scheme.lower() not in _SCHEMES:
        raise TypeError(f"fetch: only http and https URLs can be fetched, not {_cut(url)!r}")
    if not host:
        raise TypeError(f"fetch: invalid URL {_cut(url)!r}: it names no host")
    if parts.username is not None or parts.password is not None:
        raise TypeError("fetch: a URL that includes credentials cannot be fetched (send them in "
                        "an authorization header)")
    try:
        ascii_host = host if host.isascii() else host.encode("idna").decode("ascii")
    except UnicodeError:
        raise TypeError(f"fetch: invalid host name {host!r}") from None
    netloc = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    if port is not None:
        netloc += f":{port}"
    safe = "/?#[]@!$&'()*+,;=:%~"   # reserved characters keep their meaning; others are encoded
    return urllib.parse.urlunsplit((parts.scheme.lower(), netloc,
                                    urllib.parse.quote(parts.path, safe=safe),
                                    urllib.parse.quote(parts.query, safe=safe), ""))


def _check_headers(headers: Headers) -> None:
    items = headers.items()
    if len(items) > MAX_HEADERS:
        raise ValueError(f"fetch: {len(items)} headers, over the limit of {MAX_HEADERS}")
    total = 0
    for name, value in items:
        name_bytes, value_bytes = len(name.encode()), len(value.encode())
        if name_bytes > MAX_HEADER_NAME_BYTES:
            raise ValueError(f"fetch: header name {name[:40]!r}… is over {MAX_HEADER_NAME_BYTES} "
                             "bytes")
        if value_bytes > MAX_HEADER_VALUE_BYTES:
            raise ValueError(f"fetch: the value of header {name!r} is {value_bytes:,} bytes, over "
                             f"the limit of {MAX_HEADER_VALUE_BYTES:,}")
        if not value.isascii():
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                raise TypeError(f"fetch: the value of header {name!r} has a character above "
                                "U+00FF; header values are bytes (encode it first)") from None
        if name in _CONNECTION_HEADERS:
            raise TypeError(f"fetch: header {name!r} belongs to the connection, which the host "
                            "manages; leave it out")
        total += name_bytes + value_bytes
    if total > MAX_HEADER_BYTES:
        raise ValueError(f"fetch: the headers are {total:,} bytes together, over the limit of "
                         f"{MAX_HEADER_BYTES:,}")


# ---- sending ----------------------------------------------------------------------------------

async def _through_stub(stub: Any, request: Request) -> Response:
    result = stub.fetch(request)
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, Response):
        raise TypeError(f"the dispatcher's global_outbound answered with "
                        f"{type(result).__name__}, not a Response")
    if result.body_used:
        raise TypeError("the dispatcher's global_outbound answered with a Response whose body "
                        "was already read (clone() it before reading)")
    return result


async def send_from_host(request: Request) -> Response:
    """Make ``request`` (already checked) from this process, off the event loop."""
    loop = asyncio.get_running_loop()
    slots = _SLOTS.get(loop)
    if slots is None:
        slots = _SLOTS[loop] = asyncio.Semaphore(MAX_CONCURRENT)
    async with slots:
        done: asyncio.Future[tuple[int, str, list[tuple[str, str]], bytes]] = loop.create_future()
        stop = threading.Event()

        def run() -> None:
            try:
                outcome: Any = _urlopen(request, time.monotonic() + TIMEOUT_S, stop)
                failure: BaseException | None = None
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                outcome, failure = None, exc
            try:
                loop.call_soon_threadsafe(_settle, done, outcome, failure)
            except RuntimeError:
                pass  # the loop closed while the request was out: nobody is waiting

        threading.Thread(target=run, name="dynwf-fetch", daemon=True).start()
        try:
            status, reason, header_items, body = await done
        except asyncio.CancelledError:
            stop.set()  # the thread gives up at its next read
            raise
    return _response(status, reason, header_items, body)


_SLOTS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = \
    weakref.WeakKeyDictionary()


def _settle(done: asyncio.Future[Any], outcome: Any, failure: BaseException | None) -> None:
    if done.done():
        return
    if failure is not None:
        done.set_exception(failure)
    else:
        done.set_result(outcome)


def _response(status: int, reason: str, header_items: list[tuple[str, str]],
              body: bytes) -> Response:
    if not 200 <= status <= 599:
        raise ConnectionError(f"the server answered with status {status}, which fetch cannot "
                              "return")
    headers = Headers()
    for name, value in header_items:
        try:
            headers.append(name, " ".join(str(value).splitlines()))
        except TypeError:
            continue  # a name that is no HTTP token: dropped, as a browser's fetch would
    return Response(body or None, status, reason or "", headers)


def _urlopen(request: Request, deadline: float, stop: threading.Event,
             ) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """The blocking part, in its own thread. Network failures come back as ``ConnectionError``
    (never ``TimeoutError``: inside a step that would read as the step's own timeout)."""
    target = urllib.parse.urlsplit(request.url).netloc
    outgoing = urllib.request.Request(request.url, data=request.body or None,
                                      headers=dict(request.headers.items()),
                                      method=str(request.method))
    try:
        try:
            response = _OPENER.open(outgoing, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as exc:  # a redirect not followed: answered as it is
            response = exc
        with response:
            read = getattr(response, "read1", response.read)
            chunks, size = [], 0
            while True:
                if stop.is_set():
                    raise ConnectionError("the request was cancelled")
                if time.monotonic() > deadline:
                    raise ConnectionError(f"{target} did not finish answering within "
                                          f"{TIMEOUT_S:g} s")
                chunk = read(_READ_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_RESPONSE_BODY_BYTES:
                    raise ConnectionError(f"the response body is over the "
                                          f"{MAX_RESPONSE_BODY_BYTES // (1024 * 1024)} MiB limit")
                chunks.append(chunk)
            return response.status, response.reason, list(response.headers.items()), b"".join(chunks)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if type(reason) is ConnectionError:  # one of ours (a private listener), already worded
            raise reason from None
        if isinstance(reason, TimeoutError):
            raise ConnectionError(f"{target} did not answer within {TIMEOUT_S:g} s") from None
        raise ConnectionError(f"could not reach {target}: {reason}") from None
    except TimeoutError:
        raise ConnectionError(f"{target} did not answer within {TIMEOUT_S:g} s") from None
    except ConnectionError as exc:
        if type(exc) is ConnectionError:  # one of ours, already worded
            raise
        raise ConnectionError(f"the connection to {target} failed: {exc}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise ConnectionError(f"the request to {target} failed: {exc or type(exc).__name__}") \
            from None


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects (as fetch does by default) to http and https URLs only; a redirect
    elsewhere is a network error, as it is for fetch."""

    def http_error_302(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                       headers: Any) -> Any:
        location = headers.get("location") or headers.get("uri")
        if location:
            target = urllib.parse.urljoin(req.full_url, location)
            if urllib.parse.urlsplit(target).scheme.lower() not in _SCHEMES:
                raise ConnectionError(f"the server redirected to {_cut(target)!r}, which is not "
                                      "an http or https URL")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _AnswerEveryStatus(urllib.request.BaseHandler):
    """A 404 or a 500 is a response for fetch, not an error."""

    def http_error_default(self, req: Any, fp: Any, code: int, msg: str, hdrs: Any) -> Any:
        return fp


class _NoDefaultContentType(urllib.request.BaseHandler):
    """urllib labels every body ``application/x-www-form-urlencoded``; fetch sends a bytes body
    without a content type unless one is given."""

    handler_order = 600  # after the HTTP handlers have added their defaults

    def http_request(self, request: urllib.request.Request) -> urllib.request.Request:
        if not request.has_header("Content-type") or "Content-type" in request.headers:
            return request
        request.unredirected_hdrs.pop("Content-type", None)
        return request

    https_request = http_request


# ---- the host's own listeners --------------------------------------------------------------

# Addresses (ip, port) of sockets this process listens on that the host's requests never reach.
_PRIVATE_LISTENERS: set[tuple[str, int]] = set()
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


@contextmanager
def private_listener(ip: str, port: int) -> Iterator[None]:
    """While the block runs, no request sent by the host connects to ``ip:port``.

    For ``dynwf dev``'s own server: a tenant whose code may use the host's network would
    otherwise read the admin token from the dashboard page and act on every tenant's instances.
    Checked on the connected socket, so a host name, another spelling of the address or a
    redirect reaches it no more than the address itself."""
    entry = (ip, port)
    _PRIVATE_LISTENERS.add(entry)
    try:
        yield
    finally:
        _PRIVATE_LISTENERS.discard(entry)


def _check_destination(sock: socket.socket) -> None:
    listeners = tuple(_PRIVATE_LISTENERS)  # a snapshot: the event loop's thread may change it
    if not listeners:
        return
    peer_ip, peer_port = sock.getpeername()[:2]
    own_ip = sock.getsockname()[0]
    for ip, port in listeners:
        if port != peer_port:
            continue
        # a server on every address is reached through loopback or through this machine's own
        # address, and only then is the connection's local address the peer's
        if peer_ip == ip or (ip in _WILDCARDS and (peer_ip == own_ip or _is_loopback(peer_ip))):
            sock.close()
            raise ConnectionError(f"{peer_ip}:{peer_port} is the dev server itself, which "
                                  "requests from the host may not reach")


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return False


class _CheckedHTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _check_destination(self.sock)


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()   # TCP, then the TLS handshake: no byte of the request is sent yet
        _check_destination(self.sock)


_CHECKED = {http.client.HTTPConnection: _CheckedHTTPConnection,
            http.client.HTTPSConnection: _CheckedHTTPSConnection}


class _HTTPHandler(urllib.request.HTTPHandler):
    def do_open(self, http_class: Any, req: Any, **options: Any) -> Any:
        return super().do_open(_CHECKED.get(http_class, http_class), req, **options)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def do_open(self, http_class: Any, req: Any, **options: Any) -> Any:
        return super().do_open(_CHECKED.get(http_class, http_class), req, **options)


def _opener() -> urllib.request.OpenerDirector:
    """http and https only (no file:, ftp: or data: handlers); proxies from the environment, as
    any client of the host's network would use them."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), _HTTPHandler(), _HTTPSHandler(),
                    urllib.request.HTTPErrorProcessor(),
                    _RedirectHandler(), _AnswerEveryStatus(), _NoDefaultContentType()):
        opener.add_handler(handler)
    return opener


_OPENER = _opener()


# ---- showing a request ------------------------------------------------------------------------

def _shown(request: Any) -> tuple[str, str]:
    """Method and URL for a log line, whatever the isolate sent."""
    if not isinstance(request, Request):
        return "?", f"({type(request).__name__}, not a Request)"
    url = request.url if isinstance(request.url, str) else repr(request.url)
    return str(request.method)[:MAX_METHOD_CHARS], _cut(url)


def _log(log: LogLine | None, message: str) -> None:
    if log is not None:
        log(LOG_LEVEL, _cut(message, MAX_LOG_CHARS))


def _cut(text: str, limit: int = MAX_SHOWN_URL) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


# the layers below reach the host's outbound code through these hooks, never by importing it
serve_host_requests(lambda request: send_from_host(check_request(request)))
serve_outbound(outbound_of_caller)

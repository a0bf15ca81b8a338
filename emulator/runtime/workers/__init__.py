"""The ``workers`` module as Python Workers code sees it, inside the emulator.

Entrypoint base classes (``WorkflowEntrypoint``, ``WorkerEntrypoint``), ``RpcTarget``, and the
``Request``/``Response``/``Headers`` trio of the Python SDK (docs/semantics.md §3.7), shaped like
the platform's:
header names are case-insensitive, ``Response.json(...)`` is a constructor on the class and a body
reader on an instance, and a body can be read once (``clone()`` first to read it twice), as with
``fetch`` in workerd, so code that works here does not fail in production on a used body.

``Request`` and ``Response`` cross the isolate boundary by value (bodies as bytes), which is how
``fetch`` works in an isolate: it holds no network socket, so the request goes to the host, which
sends it as the dispatcher's ``global_outbound`` says (see ``emulator/isolates/outbound.py``).

This module is imported both as ``workers`` (by user code; the runtime folder is on the import
path) and as ``emulator.runtime.workers`` (by the emulator). Both names are bound to one module
object, so there is one ``WorkflowEntrypoint`` class and one registration of each RPC value type.
"""

from __future__ import annotations

import http
import importlib
import json as _json
import re
import sys
from contextvars import ContextVar
from types import ModuleType
from typing import Any, Awaitable, Callable, Iterator, Mapping

from emulator.rpc.target import RpcTarget, value_type

_PUBLIC_NAME = "workers"
_INTERNAL_NAME = "emulator.runtime.workers"


def _alias_module(module: ModuleType, public: str, internal: str) -> None:
    """Bind ``module`` under its public and internal names, whichever it was imported as.

    Two names would otherwise mean two copies: two ``WorkflowEntrypoint`` classes, two
    ``DynamicWorkflowBinding`` classes, a context variable set in one copy and read in the other.
    """
    for name in (public, internal):
        sys.modules.setdefault(name, module)
    # ``import a.b.c`` finds an alias in sys.modules without binding it on its package, so bind it
    # here, or ``emulator.runtime.workers`` would be an AttributeError after ``import workers``.
    for name in (public, internal):
        parent_name, _, leaf = name.rpartition(".")
        if not parent_name:
            continue
        parent = sys.modules.get(parent_name) or importlib.import_module(parent_name)
        if not hasattr(parent, leaf):
            setattr(parent, leaf, sys.modules[name])


_alias_module(sys.modules[__name__], _PUBLIC_NAME, _INTERNAL_NAME)


# ---- entrypoints ------------------------------------------------------------------------------

class WorkflowEntrypoint:
    """Base class of a workflow: subclass it and define ``async def run(self, event, step)``."""

    def __init__(self, ctx: Any = None, env: Any = None) -> None:
        self.ctx = ctx
        self.env = env

    async def run(self, event: dict[str, Any], step: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define async def run(self, event, step)")


class WorkerEntrypoint(RpcTarget):
    """Base class of a Worker's entrypoint (``Default`` handles ``fetch``).

    Its public methods are what callers reach over RPC. It is an ``RpcTarget`` so an entrypoint
    instance (a ``DynamicWorkflowBinding``, say) can be handed to another isolate by reference.
    """

    def __init__(self, ctx: Any = None, env: Any = None) -> None:
        self.ctx = ctx
        self.env = env


# ---- headers ----------------------------------------------------------------------------------

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token: header names, methods

class Headers:
    """HTTP headers with case-insensitive names, as ``fetch`` has them.

    Names are stored lower-cased (what ``fetch`` reports when iterating); a name given twice
    with ``append`` is joined with ``", "``.
    """

    def __init__(self, init: Any = None) -> None:
        self._values: dict[str, str] = {}
        if init is None:
            return
        pairs = init.items() if isinstance(init, (Headers, Mapping)) else init
        for pair in pairs:
            try:
                name, value = pair
            except (TypeError, ValueError):
                raise TypeError("headers must be a mapping or an iterable of (name, value) pairs, "
                                f"got an item {pair!r}") from None
            self.append(name, value)

    @staticmethod
    def _name(name: Any) -> str:
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise TypeError(f"Invalid header name {name!r}")
        return name.lower()

    @staticmethod
    def _value(value: Any) -> str:
        if not isinstance(value, str):
            value = str(value)
        if "\r" in value or "\n" in value or "\0" in value:
            raise TypeError(f"Invalid header value {value!r}")
        return value.strip(" \t")

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name.lower(), default) if isinstance(name, str) else default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        del self._values[self._name(name)]

    def set(self, name: str, value: Any) -> None:
        self._values[self._name(name)] = self._value(value)

    def append(self, name: str, value: Any) -> None:
        key, text = self._name(name), self._value(value)
        self._values[key] = f"{self._values[key]}, {text}" if key in self._values else text

    def delete(self, name: str) -> None:
        self._values.pop(self._name(name), None)

    def setdefault(self, name: str, value: Any) -> str:
        key = self._name(name)
        if key not in self._values:
            self._values[key] = self._value(value)
        return self._values[key]

    def has(self, name: str) -> bool:
        return name in self

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._values))

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return sorted(self._values)

    def values(self) -> list[str]:
        return [self._values[k] for k in sorted(self._values)]

    def items(self) -> list[tuple[str, str]]:
        return [(k, self._values[k]) for k in sorted(self._values)]

    def copy(self) -> "Headers":
        return Headers(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._values == other._values
        if isinstance(other, Mapping):
            try:
                return self._values == Headers(other)._values
            except TypeError:
                return False
        return NotImplemented

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


# ---- bodies -----------------------------------------------------------------------------------

_BODY_USED = ("Body has already been used. It can only be used once. "
              "Use tee() first if you need to read it twice.")


def _body_bytes(body: Any, what: str) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"{what} body must be str, bytes or None, not {type(body).__name__}"
                    + (f"; use {what}.json(...) for JSON" if what == "Response" else ""))


class _Body:
    """What ``Request`` and ``Response`` share: one body, readable once."""

    _content: bytes | None
    _used: bool

    @property
    def body(self) -> bytes:
        """The raw body (empty when there is none). Reading it does not use the body up."""
        return self._content or b""

    @property
    def body_used(self) -> bool:
        return self._used

    def _consume(self) -> bytes:
        if self._used:
            raise TypeError(_BODY_USED)
        self._used = True
        return self._content or b""

    async def bytes(self) -> bytes:
        return self._consume()

    async def text(self) -> str:
        return self._consume().decode("utf-8", errors="replace")

    async def _read_json(self) -> Any:
        return _json.loads(self._consume().decode("utf-8"))


class _ClassOrInstance:
    """``Response.json(data)`` builds a response; ``await response.json()`` reads one.

    The Python SDK uses one name for both, so the attribute dispatches on how it is reached.
    """

    def __init__(self, on_class: Any, on_instance: Any) -> None:
        self._on_class, self._on_instance = on_class, on_instance
        self.__doc__ = on_instance.__doc__

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self._on_class.__get__(objtype, objtype)
        return self._on_instance.__get__(obj, objtype)


def _method(value: Any) -> "http.HTTPMethod | str":
    if isinstance(value, http.HTTPMethod):
        return value
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise TypeError(f"Invalid HTTP method {value!r}")
    try:
        return http.HTTPMethod(value.upper())
    except ValueError:
        return value  # an extension method: fetch keeps its case


# ---- request ----------------------------------------------------------------------------------

@value_type("request")
class Request(_Body):
    """An incoming HTTP request: ``url``, ``method`` (``http.HTTPMethod``), ``headers``, a body."""

    def __init__(self, url: str, *, method: Any = "GET", headers: Any = None,
                 body: Any = None) -> None:
        if not isinstance(url, str):
            raise TypeError(f"Request url must be a str, not {type(url).__name__}")
        self.url = url
        self.method = _method(method)
        self.headers = headers.copy() if isinstance(headers, Headers) else Headers(headers)
        self._content = _body_bytes(body, "Request")
        if self._content is not None and self.method in ("GET", "HEAD"):
            raise TypeError("Request with GET/HEAD method cannot have body.")
        self._used = False

    async def json(self) -> Any:
        """The body parsed as JSON."""
        return await self._read_json()

    def clone(self) -> "Request":
        """A copy whose body can be read independently of this one's."""
        if self._used:
            raise TypeError(_BODY_USED)
        return Request(self.url, method=self.method, headers=self.headers, body=self._content)

    def to_rpc(self) -> dict[str, Any]:
        if self._used:
            raise TypeError(_BODY_USED)
        return {"url": self.url, "method": str(self.method), "headers": self.headers.items(),
                "body": self._content}

    @classmethod
    def from_rpc(cls, data: dict[str, Any]) -> "Request":
        return cls(data["url"], method=data["method"], headers=data["headers"], body=data["body"])

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


# ---- response ---------------------------------------------------------------------------------

_NULL_BODY_STATUSES = frozenset({101, 204, 205, 304})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@value_type("response")
class Response(_Body):
    """An HTTP response. ``Response.json(data)`` and ``Response.redirect(url)`` build common ones."""

    def __init__(self, body: Any = None, status: int | None = 200, status_text: str = "",
                 headers: Any = None) -> None:
        status = 200 if status is None else status
        if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
            raise ValueError(f"Response status must be an int in the range 200 to 599, got {status!r}")
        self.status = status
        self.status_text = status_text
        self.headers = headers.copy() if isinstance(headers, Headers) else Headers(headers)
        self._content = _body_bytes(body, "Response")
        if self._content is not None and status in _NULL_BODY_STATUSES:
            raise TypeError("Response with null body status cannot have body")
        if isinstance(body, str):
            self.headers.setdefault("content-type", "text/plain;charset=UTF-8")
        self._used = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status <= 299

    @classmethod
    def from_json(cls, data: Any, status: int = 200, status_text: str = "",
                  headers: Any = None) -> "Response":
        """A response whose body is ``data`` as JSON, with ``content-type: application/json``."""
        body = _json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        response = cls(body, status, status_text, headers)
        response.headers.setdefault("content-type", "application/json")
        return response

    async def _parse_json(self) -> Any:
        """The body parsed as JSON."""
        return await self._read_json()

    json = _ClassOrInstance(from_json, _parse_json)

    @classmethod
    def redirect(cls, url: str, status: int = 302) -> "Response":
        """An empty response redirecting to ``url``."""
        if status not in _REDIRECT_STATUSES:
            raise ValueError(f"Response.redirect status must be one of 301, 302, 303, 307, 308, "
                             f"got {status!r}")
        return cls(None, status, headers={"location": url})

    def clone(self) -> "Response":
        """A copy whose body can be read independently of this one's."""
        if self._used:
            raise TypeError(_BODY_USED)
        return Response(self._content, self.status, self.status_text, self.headers)

    def to_rpc(self) -> dict[str, Any]:
        if self._used:
            raise TypeError(_BODY_USED)
        return {"status": self.status, "statusText": self.status_text,
                "headers": self.headers.items(), "body": self._content}

    @classmethod
    def from_rpc(cls, data: dict[str, Any]) -> "Response":
        return cls(data["body"], data["status"], data["statusText"], data["headers"])

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


# ---- fetch ------------------------------------------------------------------------------------

#: Where ``fetch`` sends a request from the code running in this context: set by an isolate while
#: tenant code runs (to the host, over RPC); unset in the host, which sends requests itself.
outbound_route: ContextVar[Callable[[Request], Awaitable[Response]] | None] = \
    ContextVar("workers_outbound_route", default=None)
#: How the host sends a request of its own code (the dispatcher's): installed by the host's
#: outbound module (``isolates/outbound.py``), which this module, below it, does not import.
_host_route: Callable[[Request], Awaitable[Response]] | None = None


def serve_host_requests(route: Callable[[Request], Awaitable[Response]]) -> None:
    """Install the host's own way out, for ``fetch`` called outside any isolate."""
    global _host_route
    _host_route = route

_FETCH_OPTIONS = ("method", "headers", "body")


async def fetch(resource: Any, **options: Any) -> Response:
    """An HTTP request, as the Python Workers SDK's ``fetch``: ``resource`` is a URL or a
    ``Request``; ``method``, ``headers`` and ``body`` override the request's. Returns the
    ``Response`` (a 404 or a 500 is a response, not an error).

    In a tenant's isolate it succeeds only as far as the dispatcher allows: ``global_outbound``
    left out, the host sends it; ``None``, ``PermissionError`` with the platform's message; a
    stub, the stub answers."""
    unknown = sorted(set(options) - set(_FETCH_OPTIONS))
    if unknown:
        raise TypeError(f"fetch() got unsupported option(s) {', '.join(unknown)} "
                        f"(supported: {', '.join(_FETCH_OPTIONS)})")
    if isinstance(resource, Request):
        if resource.body_used:
            raise TypeError(_BODY_USED)
        base = {"method": resource.method, "headers": resource.headers, "body": resource._content}
        url = resource.url
    elif isinstance(resource, str):
        base, url = {"method": "GET", "headers": None, "body": None}, resource
    else:
        raise TypeError(f"fetch() needs a URL (str) or a Request, not {type(resource).__name__}")
    init = {**base, **options}
    headers = init["headers"]
    headers = headers.copy() if isinstance(headers, Headers) else Headers(headers)
    if isinstance(init["body"], str):
        headers.setdefault("content-type", "text/plain;charset=UTF-8")
    request = Request(url, method=init["method"], headers=headers, body=init["body"])
    route = outbound_route.get() or _host_route
    if route is None:
        raise RuntimeError("fetch() has no way out here: it runs in a dynwf host or isolate")
    return await route(request)


__all__ = ["Headers", "Request", "Response", "RpcTarget", "WorkerEntrypoint", "WorkflowEntrypoint",
           "fetch"]

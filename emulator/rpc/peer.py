"""One side of an RPC connection: exported objects, stubs of the other side's, calls in flight.

Messages (JSON objects, one per frame):

- ``{"t": "call", "id", "ref", "m", "a", "k"}``: call method ``m`` of exported object ``ref``;
  answered by ``{"t": "ok", "id", "v"}`` or ``{"t": "err", "id", "e": {"name", "message", "code"}}``;
- ``{"t": "send", "ref", "m", "a", "k"}``: the same, one-way (no answer, errors dropped);
- ``{"t": "cancel", "id"}``: the caller gave up on call ``id`` (its task is cancelled here);
- ``{"t": "drop", "id", "n"}``: the other side let go of ``n`` copies of stub ``id``.

Calls are multiplexed: a call to a coroutine method runs in its own task, a synchronous method
runs as its frame is read; answers go out as they finish.
Object 0 is each side's *root*, the object the connection was made for. While an incoming call
runs, :data:`calling_peer` names the connection it came from, so an object shared with several
isolates can tell which one is calling.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import inspect
import json
import weakref
from typing import Any, Callable

from emulator.rpc import codec
from emulator.rpc.target import RpcTarget

ErrorFactory = Callable[[str, "str | None"], BaseException]
_ERROR_FACTORIES: dict[str, ErrorFactory] = {}
#: NaN and infinities are refused (ValueError), as JSON has no spelling for them.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


#: The connection whose incoming call is running in this context (None outside any such call).
calling_peer: contextvars.ContextVar["Peer | None"] = \
    contextvars.ContextVar("dynwf_calling_peer", default=None)


def register_error(name: str, factory: ErrorFactory) -> None:
    """Rebuild remote errors named ``name`` with ``factory(message, code)``."""
    _ERROR_FACTORIES[name] = factory


class RemoteError(Exception):
    """An error raised on the other side whose class cannot be rebuilt here."""

    carries_name = True  # report the remote class name, not "RemoteError"

    def __init__(self, message: str, name: str = "Error", code: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        if code:
            self.code = code


class ConnectionLost(Exception):
    """The other side is gone; carries the reason (an isolate fault) when it is known."""

    def __init__(self, message: str, code: str = "isolate.crashed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    # ``name`` is a class name only on errors that carry one (ImportError.name is a module name)
    name = getattr(exc, "name", None) if getattr(type(exc), "carries_name", False) else None
    if not isinstance(name, str):
        name = type(exc).__name__
    if any(c.__name__ == "NonRetryableError" for c in type(exc).__mro__):
        name = "NonRetryableError"
    message = getattr(exc, "message", None)
    if not isinstance(message, str):
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    code = getattr(exc, "code", None)
    return {"name": name, "message": message, "code": code if isinstance(code, str) else None}


def error_from_wire(error: dict[str, Any]) -> BaseException:
    name, message, code = error.get("name", "Error"), error.get("message", ""), error.get("code")
    factory = _ERROR_FACTORIES.get(name)
    if factory is not None:
        return factory(message, code)
    if code:
        from emulator import errors
        for cls in vars(errors).values():
            if isinstance(cls, type) and issubclass(cls, errors.DynwfError) and cls.code == code:
                try:
                    return cls(message)
                except TypeError:
                    break
        return RemoteError(message, name, code)
    candidate = getattr(builtins, name, None)
    if isinstance(candidate, type) and issubclass(candidate, Exception):
        try:
            return candidate(message)
        except Exception:
            pass
    return RemoteError(message, name)


class Stub:
    """A reference to an object on the other side; attribute access gives callable methods."""

    __slots__ = ("_peer", "_ref", "_props", "__weakref__")

    def __init__(self, peer: "Peer", ref: int, props: dict[str, Any] | None = None) -> None:
        self._peer = peer
        self._ref = ref
        self._props = props or {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._props:
            return self._props[name]
        return _Method(self._peer, self._ref, name)

    def __repr__(self) -> str:
        return f"<stub {self._ref} of {self._peer.name}>"


class _Method:
    __slots__ = ("_peer", "_ref", "_name")

    def __init__(self, peer: "Peer", ref: int, name: str) -> None:
        self._peer, self._ref, self._name = peer, ref, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._peer.call(self._ref, self._name, args, kwargs)

    def send(self, *args: Any, **kwargs: Any) -> None:
        """Call without waiting for (or getting) an answer."""
        self._peer.notify(self._ref, self._name, args, kwargs)

    def send_now(self, *args: Any, **kwargs: Any) -> None:
        """Like :meth:`send`, and hand it to the operating system before returning: for a
        notice that must arrive even if this process dies right after."""
        self._peer.notify(self._ref, self._name, args, kwargs)
        self._peer.flush()


class Peer:
    def __init__(self, write: Callable[[bytes], None], root: Any = None, *, name: str = "peer",
                 proxies: dict[str, Callable[[Stub, Any], Any]] | None = None,
                 flush: Callable[[], None] | None = None) -> None:
        self._write = write
        self._flush = flush
        self.name = name
        self._exports: dict[int, list[Any]] = {0: [root, 1]}
        self._export_ids: dict[int, int] = {}
        self._next_export = 1
        self._next_call = 1
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._handling: dict[int, asyncio.Task[Any]] = {}
        self._queued: asyncio.Task[None] | None = None  # the newest handler task, until it starts
        self._stubs: dict[int, tuple[weakref.ref[Stub], list[int]]] = {}
        self.proxies = proxies or {}
        self.closed: BaseException | None = None
        self.remote = Stub(self, 0)

    @property
    def root(self) -> Any:
        """This side's object 0, which the other side reaches as ``remote``."""
        return self._exports[0][0]

    # ---- references ------------------------------------------------------------------------

    def export(self, obj: RpcTarget, path: str) -> dict[str, Any]:
        ref = self._export_ids.get(id(obj))
        if ref is None or self._exports.get(ref, [None])[0] is not obj:
            ref = self._next_export
            self._next_export += 1
            self._exports[ref] = [obj, 0]
            self._export_ids[id(obj)] = ref
        self._exports[ref][1] += 1
        data: dict[str, Any] = {codec.TAG: "ref", "id": ref}
        props = {name: codec.encode(getattr(obj, name), self, f"{path}.{name}")
                 for name in type(obj).__rpc_props__}
        if props:
            data["props"] = props
        describe = getattr(obj, "__rpc_describe__", None)
        if describe is not None:
            kind, init = describe()
            data["kind"] = kind
            data["init"] = codec.encode(init, self, f"{path}.init")
        return data

    def import_ref(self, data: dict[str, Any]) -> Any:
        ref = data["id"]
        entry = self._stubs.get(ref)
        stub = entry[0]() if entry else None
        if stub is None:
            props = {k: codec.decode(v, self) for k, v in data.get("props", {}).items()}
            stub = Stub(self, ref, props)
            counter = [0]
            self._stubs[ref] = (weakref.ref(stub), counter)
            weakref.finalize(stub, self._release, ref, counter)
        self._stubs[ref][1][0] += 1
        kind = data.get("kind")
        if kind is not None and kind in self.proxies:
            return self.proxies[kind](stub, codec.decode(data.get("init"), self))
        return stub

    def _release(self, ref: int, counter: list[int]) -> None:
        entry = self._stubs.get(ref)
        if entry is not None and entry[1] is counter:
            del self._stubs[ref]
        if self.closed is None and counter[0]:
            try:
                self._send({"t": "drop", "id": ref, "n": counter[0]})
            except Exception:
                pass

    def local(self, ref: int) -> Any:
        try:
            return self._exports[ref][0]
        except KeyError:
            raise codec.RpcTypeError(f"stale RPC reference {ref}") from None

    @property
    def export_count(self) -> int:
        return len(self._exports)

    # ---- outgoing --------------------------------------------------------------------------

    def flush(self) -> None:
        """Write out what is queued now instead of at the end of this loop iteration."""
        if self._flush is not None and self.closed is None:
            self._flush()

    def _send(self, message: dict[str, Any]) -> None:
        self._write(_JSON.encode(message).encode())

    async def call(self, ref: int, method: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        """Call ``method`` on the other side's object ``ref``; cancelling the caller cancels the
        call over there too."""
        if self.closed is not None:
            raise self.closed
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        call_id = self._next_call
        self._next_call += 1
        message = {"t": "call", "id": call_id, "ref": ref, "m": method,
                   "a": codec.encode(list(args), self, f"{method}() arguments")}
        if kwargs:
            message["k"] = codec.encode(kwargs, self, f"{method}() keyword arguments")
        self._pending[call_id] = future
        self._send(message)
        try:
            return await future
        except asyncio.CancelledError:
            self._cancel(call_id)
            raise

    def notify(self, ref: int, method: str, args: tuple, kwargs: dict[str, Any]) -> None:
        if self.closed is not None:
            return
        message = {"t": "send", "ref": ref, "m": method,
                   "a": codec.encode(list(args), self, f"{method}() arguments")}
        if kwargs:
            message["k"] = codec.encode(kwargs, self, f"{method}() keyword arguments")
        self._send(message)

    def _cancel(self, call_id: int) -> None:
        if self._pending.pop(call_id, None) is not None and self.closed is None:
            try:
                self._send({"t": "cancel", "id": call_id})
            except Exception:
                pass

    # ---- incoming --------------------------------------------------------------------------

    def receive(self, frame: bytes | bytearray) -> None:
        text = frame.decode()
        message = json.loads(text)
        plain = codec.is_plain_text(text)  # then the parsed values are the values sent
        kind = message["t"]
        if kind in ("call", "send"):
            self._dispatch(message, plain)
        elif kind == "ok":
            future = self._pending.pop(message["id"], None)
            if future is not None and not future.done():
                try:
                    future.set_result(message["v"] if plain else codec.decode(message["v"], self))
                except Exception as exc:
                    future.set_exception(exc)
        elif kind == "err":
            future = self._pending.pop(message["id"], None)
            if future is not None and not future.done():
                future.set_exception(error_from_wire(message["e"]))
        elif kind == "cancel":
            task = self._handling.pop(message["id"], None)
            if task is not None:
                task.cancel()
        elif kind == "drop":
            entry = self._exports.get(message["id"])
            if entry is not None and message["id"] != 0:
                entry[1] -= message["n"]
                if entry[1] <= 0:
                    del self._exports[message["id"]]
                    self._export_ids.pop(id(entry[0]), None)

    def _dispatch(self, message: dict[str, Any], plain: bool) -> None:
        """Run a synchronous method right here, a task only for a coroutine method: most frames
        (notices, engine bookkeeping) then cost no task and no extra loop iteration. A synchronous
        call waits behind handler tasks not yet started, so calls still start in arrival order."""
        queued = self._queued
        if queued is not None and queued.done():
            queued = self._queued = None
        method = getattr(type(self._exports.get(message["ref"], (None,))[0]), message["m"], None)
        if queued is not None or inspect.iscoroutinefunction(method):
            self._queued = self._handle_later(message, plain)
            return
        awaitable = contextvars.copy_context().run(self._run, message, plain)
        if awaitable is not None:  # a plain method that returned an awaitable: await it in a task
            self._handle_later(message, plain, awaitable)

    def _handle_later(self, message: dict[str, Any], plain: bool,
                      awaitable: Any = None) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._handle(message, plain, awaitable))
        if message["t"] == "call":
            self._handling[message["id"]] = task
        return task

    def _run(self, message: dict[str, Any], plain: bool) -> Any:
        """Call the method; answer unless its result is an awaitable, which is returned."""
        calling_peer.set(self)  # in a context of its own: see _dispatch
        call_id = message.get("id")
        try:
            result = self._invoke(message, plain)
            if inspect.isawaitable(result):
                return result
            if call_id is not None:
                self._send({"t": "ok", "id": call_id, "v": codec.encode(result, self, "result")})
        except BaseException as exc:  # everything the callee raised goes back to the caller
            self._answer_error(call_id, exc)
        return None

    def _invoke(self, message: dict[str, Any], plain: bool) -> Any:
        target = self.local(message["ref"])
        method = message["m"]
        if method.startswith("_") or not callable(getattr(type(target), method, None)):
            raise AttributeError(f"{type(target).__name__} has no method {method!r} that can be "
                                 "called over RPC")
        args, kwargs = message["a"], message.get("k") or {}
        if not plain:
            args, kwargs = codec.decode(args, self), codec.decode(kwargs, self)
        return getattr(target, method)(*args, **kwargs)

    async def _handle(self, message: dict[str, Any], plain: bool, awaitable: Any = None) -> None:
        calling_peer.set(self)  # the task's own context
        call_id = message.get("id")
        if self._queued is asyncio.current_task():
            self._queued = None  # tasks start in creation order: every handler task has started
        try:
            result = self._invoke(message, plain) if awaitable is None else awaitable
            if inspect.isawaitable(result):
                result = await result
            if call_id is not None:
                self._send({"t": "ok", "id": call_id, "v": codec.encode(result, self, "result")})
        except asyncio.CancelledError:
            if call_id is not None and self.closed is None and call_id in self._handling:
                self._send({"t": "err", "id": call_id,
                            "e": {"name": "CancelledError", "message": "call cancelled", "code": None}})
            raise
        except BaseException as exc:  # everything the callee raised goes back to the caller
            self._answer_error(call_id, exc)
        finally:
            if call_id is not None:
                self._handling.pop(call_id, None)

    def _answer_error(self, call_id: int | None, exc: BaseException) -> None:
        if call_id is not None and self.closed is None:
            try:
                self._send({"t": "err", "id": call_id, "e": error_to_wire(exc)})
            except Exception:
                pass
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc

    # ---- end -------------------------------------------------------------------------------

    def close(self, reason: BaseException) -> None:
        """The connection is gone: every call in flight fails with ``reason``."""
        if self.closed is not None:
            return
        self.closed = reason
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(reason)
        for task in list(self._handling.values()):
            task.cancel()
        self._handling.clear()

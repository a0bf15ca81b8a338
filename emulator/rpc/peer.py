"""One side of an RPC connection: exported objects, stubs of the other side's, calls in flight.

Messages (JSON objects, one per frame):

- ``{"t": "call", "id", "ref", "m", "a", "k"}``: call method ``m`` of exported object ``ref``;
  answered by ``{"t": "ok", "id", "v"}`` or ``{"t": "err", "id", "e": {"name", "message", "code"}}``
  (``e`` may add ``"traceback"``: the user's frames, :mod:`emulator.tracebacks`);
- ``{"t": "send", "ref", "m", "a", "k"}``: the same, one-way (no answer, errors dropped);
- ``{"t": "cancel", "id"}``: the caller gave up on call ``id`` (its task is cancelled here);
- ``{"t": "drop", "id", "n"}``: the other side let go of ``n`` copies of stub ``id``.

Calls are multiplexed: a call to a coroutine method runs in its own task, a synchronous method
runs as its frame is read; answers go out as they finish.
Object 0 is each side's *root*, the object the connection was made for. While an incoming call
runs, :data:`calling_peer` names the connection it came from, so an object shared with several
isolates can tell which one is calling. An exported object's
reference carries the names of the methods it offers (``"m"``), so a stub refuses any other name
on its own side: a call naming a method the object does not offer can then only come from a sender
that bypassed its stubs.

What is received is trusted no further than ``frames.py`` and :meth:`Peer.receive` check it: a
frame, message or tagged value that our side never sends is a protocol violation, and the peer
ends the connection with a :class:`~emulator.rpc.errors.ProtocolError` (see ``errors.py`` for
which bad calls end a connection and which only raise).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import weakref
from typing import Any, Callable

from emulator.error_wire import from_wire, to_wire
from emulator.tracebacks import carry, traceback_fault, traceback_of
from emulator.rules.limits import MAX_ERROR_MESSAGE_CHARS, MAX_ERROR_NAME_CHARS
from emulator.rules.limits import cut_text as cut
from emulator.rpc import codec, frames
from emulator.rpc.errors import ProtocolError, ProtocolViolation
from emulator.rpc.frames import FROM_HOST, FrameRules
from emulator.rpc.target import RpcTarget

#: NaN and infinities are refused (ValueError), as JSON has no spelling for them.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
#: Built-in errors never rebuilt from the wire: they mean something to the code awaiting them.
_NOT_REBUILT = frozenset({"StopIteration", "StopAsyncIteration", "MemoryError", "RecursionError",
                          "SystemError"})
#: The prefix of the isolate fault codes (error_codes.ISOLATE_FAULTS): the whole prefix is
#: reserved, so no code a sender makes up reads as a fault either.
_HOST_ONLY_CODES = "isolate."
_MESSAGE_KINDS = ("call", "send", "ok", "err", "cancel", "drop")
_TARGET = object()  # key, in a received call, of the object it calls (never a JSON key)


#: The connection whose incoming call is running in this context (None outside any such call).
calling_peer: contextvars.ContextVar["Peer | None"] = \
    contextvars.ContextVar("dynwf_calling_peer", default=None)


class RemoteError(Exception):
    """An error raised on the other side whose class cannot be rebuilt here. ``code`` is the
    code it was sent with, if any: one of dynwf's whose class needs more than a message, or a
    code of the other side's own (a tenant's error may carry any string)."""

    carries_name = True  # report the remote class name, not "RemoteError"

    def __init__(self, message: str, name: str = "Error", code: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        if code:
            self.code = code


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    """The ``e`` of an ``err`` answer (:func:`emulator.error_wire.to_wire`), with the user's
    frames it was raised from when there are any (a tenant's ``run()`` failing: the host keeps
    them with the instance, :mod:`emulator.tracebacks`)."""
    wire: dict[str, Any] = to_wire(exc)
    frames = traceback_of(exc)
    if frames:
        wire["traceback"] = frames
    return wire


def error_from_wire(error: dict[str, Any]) -> BaseException:
    """The error to raise for an ``err`` message (:func:`emulator.error_wire.from_wire`). Codes
    of isolate faults are the host's to give: one claimed by the other side is dropped (a tenant
    cannot make its own error pass for a crash)."""
    code = error.get("code")
    if isinstance(code, str) and code.startswith(_HOST_ONLY_CODES):
        error = {**error, "code": None}
    return from_wire(error, RemoteError, refused=_NOT_REBUILT)


class Stub:
    """A reference to an object on the other side; attribute access gives callable methods."""

    __slots__ = ("_peer", "_ref", "_props", "_methods", "__weakref__")

    def __init__(self, peer: "Peer", ref: int, props: dict[str, Any] | None = None,
                 methods: frozenset[str] | None = None) -> None:
        self._peer = peer
        self._ref = ref
        self._props = props or {}
        self._methods = methods       # None: not known (a root), any name is sent

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._methods is _RELEASED:
            raise AttributeError(f"the remote object was released: {name!r} cannot be called")
        if name in self._props:
            return self._props[name]
        if self._methods is not None and name not in self._methods:
            raise AttributeError(f"the remote object has no method {name!r} that can be called "
                                 "over RPC")
        return _Method(self._peer, self._ref, name)

    def __repr__(self) -> str:
        return f"<stub {self._ref} of {self._peer.name}>"


#: The methods of a stub this side let go of (:meth:`Peer.release`): none.
_RELEASED: frozenset[str] = frozenset()


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


def rpc_methods(cls: type) -> tuple[str, ...]:
    """The methods of ``cls`` that can be called over RPC: public and callable."""
    methods = _METHODS.get(cls)
    if methods is None:
        methods = _METHODS[cls] = tuple(sorted(
            name for name in dir(cls) if not name.startswith("_") and name not in
            getattr(cls, "__rpc_props__", ()) and callable(getattr(cls, name, None))))
    return methods


_METHODS: dict[type, tuple[str, ...]] = {}


def _method_info(cls: type, name: str) -> tuple[bool, int | None, int | None] | None:
    """Whether method ``name`` of ``cls`` may be called over RPC: None if not, else whether it is
    a coroutine function and, for objects marked ``__rpc_strict__`` (called only by the runtime,
    which always sends arguments by position), how many arguments it takes: at least, at most."""
    function = getattr(cls, name, None) if not name.startswith("_") else None
    if not callable(function):
        return None
    least = most = None
    if getattr(cls, "__rpc_strict__", False):
        most = function.__code__.co_argcount - 1                      # less self
        least = most - len(function.__defaults__ or ())
    info = _METHOD_INFO[(cls, name)] = (inspect.iscoroutinefunction(function), least, most)
    return info


_METHOD_INFO: dict[tuple[type, str], tuple[bool, int | None, int | None]] = {}


class Peer:
    """``incoming``: what frames from the other side may be (``frames.FROM_ISOLATE`` on the
    host); ``outgoing``: the other side's rules, applied to what this side sends so that its
    callers get a payload error instead of a broken connection (set in isolates);
    ``send_tracebacks``: error answers carry the user's frames (set in isolates)."""

    def __init__(self, write: Callable[[bytes], None], root: Any = None, *, name: str = "peer",
                 proxies: dict[str, Callable[[Stub, Any], Any]] | None = None,
                 flush: Callable[[], None] | None = None, incoming: FrameRules = FROM_HOST,
                 outgoing: FrameRules | None = None, send_tracebacks: bool = False,
                 write_now: Callable[[bytes], None] | None = None) -> None:
        self._write = write
        self._write_now = write_now
        # an isolate's answers carry them (the host keeps those of a tenant's run()); the host's
        # never do, so no line of the host's code (the dispatcher's) reaches a tenant
        self.send_tracebacks = send_tracebacks
        self._flush = flush
        self.name = name
        self.incoming = incoming
        self.outgoing = outgoing
        #: told of a protocol violation once the peer is closed (the transport ends the connection)
        self.on_break: Callable[[ProtocolError], None] | None = None
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
        data: dict[str, Any] = {codec.TAG: "ref", "id": ref, "m": rpc_methods(type(obj))}
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
        ref, methods, props = data.get("id"), data.get("m"), data.get("props", {})
        if type(ref) is not int or type(props) is not dict or not (
                methods is None or type(methods) is list and all(type(m) is str for m in methods)):
            raise ProtocolViolation("a reference has the wrong shape")
        entry = self._stubs.get(ref)
        stub = entry[0]() if entry else None
        if stub is None:
            props = {k: codec.decode(v, self) for k, v in props.items()}
            stub = Stub(self, ref, props, frozenset(methods) if methods is not None else None)
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

    def release(self, stub: Stub) -> None:
        """Let go of ``stub`` now instead of when it is collected: the other side is told at
        once (it may then let go of the object), and any later call through it fails here. For
        a stub whose use is over while cycles may keep it alive until a full collection."""
        entry = self._stubs.get(stub._ref)
        if entry is None or entry[0]() is not stub:
            return
        del self._stubs[stub._ref]
        counter = entry[1]
        count, counter[0] = counter[0], 0     # its finalizer then sends nothing
        stub._methods = _RELEASED
        stub._props = {}
        if self.closed is None and count:
            try:
                self._send({"t": "drop", "id": stub._ref, "n": count})
            except Exception:
                pass

    def local(self, ref: int) -> Any:
        """An object this side exported; a reference to anything else is a protocol violation
        (the other side is told of each export and says when it lets go)."""
        entry = self._exports.get(ref) if type(ref) is int else None
        if entry is None:
            raise ProtocolViolation(f"a reference to object {ref!r}, which this side has not "
                                    "exported (or which was released)")
        return entry[0]

    @property
    def export_count(self) -> int:
        return len(self._exports)

    # ---- outgoing --------------------------------------------------------------------------

    def flush(self) -> None:
        """Write out what is queued now instead of at the end of this loop iteration."""
        if self._flush is not None and self.closed is None:
            self._flush()

    def _send(self, message: dict[str, Any], what: str = "the message", now: bool = False) -> None:
        """``now``: out at once when the transport can (an answer made by a task: its caller
        waits for nothing else, and waiting for the loop's next iteration costs one more)."""
        data = _JSON.encode(message).encode()
        if self.outgoing is not None:
            frames.check_outgoing(data, message, self.outgoing, what)
        if now and self._write_now is not None:
            self._write_now(data)
        else:
            self._write(data)

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
        self._send(message, f"the arguments of {method}()")
        self._pending[call_id] = future  # after the send: a refused message leaves nothing behind
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
        self._send(message, f"the arguments of {method}()")

    def _cancel(self, call_id: int) -> None:
        if self._pending.pop(call_id, None) is not None and self.closed is None:
            try:
                self._send({"t": "cancel", "id": call_id})
            except Exception:
                pass

    # ---- incoming --------------------------------------------------------------------------

    def receive(self, frame: bytes | bytearray) -> None:
        """Handle one frame. What our side never sends ends the connection (see :meth:`_break`)
        instead of raising into the transport."""
        if self.closed is not None:
            return
        try:
            message, plain = frames.decode(frame, self.incoming)
            if type(message) is not dict:
                raise ProtocolViolation(f"a message is a JSON {type(message).__name__}, not an object")
            kind = message.get("t")
            if kind == "call" or kind == "send":
                self._dispatch(message, plain, self._check_call(message, kind))
            elif kind == "ok":
                call_id = message.get("id")
                if type(call_id) is not int or "v" not in message:
                    raise ProtocolViolation("an ok message has no call id or no value")
                future = self._pending.pop(call_id, None)
                value = message["v"] if plain else self._decoded(message["v"], "a result")
                if future is not None and not future.done():
                    future.set_result(value)
            elif kind == "err":
                call_id, error = message.get("id"), message.get("e")
                if type(call_id) is not int or not _is_wire_error(error):
                    raise ProtocolViolation("an err message has no call id, or an error that is not "
                                            '{"name": str, "message": str, "code": str or null, '
                                            '"traceback"?: list}')
                carried = error.get("traceback")
                fault = traceback_fault(carried) if carried is not None else None
                if fault is not None:
                    raise ProtocolViolation(f"an err message's traceback is refused: {fault[1]}")
                future = self._pending.pop(call_id, None)
                if future is not None and not future.done():
                    exc = error_from_wire({
                        "name": cut(error["name"], MAX_ERROR_NAME_CHARS),
                        "message": cut(error["message"], MAX_ERROR_MESSAGE_CHARS),
                        "code": error.get("code")})
                    future.set_exception(carry(exc, carried) if carried else exc)
            elif kind == "cancel":
                call_id = message.get("id")
                if type(call_id) is not int:
                    raise ProtocolViolation("a cancel message has no call id")
                task = self._handling.pop(call_id, None)
                if task is not None:
                    task.cancel()
            elif kind == "drop":
                ref, count = message.get("id"), message.get("n")
                if type(ref) is not int or type(count) is not int or count < 1:
                    raise ProtocolViolation("a drop message needs an object id and a count of 1 or more")
                entry = self._exports.get(ref)
                if entry is not None and ref != 0:
                    entry[1] -= count
                    if entry[1] <= 0:
                        del self._exports[ref]
                        self._export_ids.pop(id(entry[0]), None)
            else:
                raise ProtocolViolation(f"a message of unknown type {_shown(kind)} (the types are "
                                        f"{', '.join(_MESSAGE_KINDS)})")
        except ProtocolViolation as violation:
            self._break(violation)

    def _check_call(self, message: dict[str, Any], kind: str) -> bool:
        """Check a call's shape, object and method; returns whether the method is a coroutine
        function (the object is kept in the message: the other side may let go of it before a
        queued call runs)."""
        ref, method, args, kwargs = message.get("ref"), message.get("m"), message.get("a"), \
            message.get("k")
        if type(ref) is not int or type(method) is not str or type(args) is not list \
                or not (kwargs is None or type(kwargs) is dict) \
                or (kind == "call" and type(message.get("id")) is not int):
            raise ProtocolViolation(
                f"a {kind} message needs an object id (int), a method name (str), arguments (a "
                "list), keyword arguments (an object, or none)" + (" and a call id (int)"
                                                                    if kind == "call" else ""))
        target = message[_TARGET] = self.local(ref)
        cls = type(target)
        info = _METHOD_INFO.get((cls, method)) or _method_info(cls, method)
        if info is None:
            raise ProtocolViolation(f"a call of {cls.__name__}.{_shown(method)}, which is not a "
                                    "method that object offers over RPC")
        coroutine, least, most = info
        if least is not None and (kwargs or not least <= len(args) <= most):
            raise ProtocolViolation(
                f"a call of {cls.__name__}.{method} with {len(args)} arguments"
                + (" and keyword arguments" if kwargs else "") + f" (it takes {least}"
                + (f" to {most}" if most != least else "") + ", by position)")
        return coroutine

    def _decoded(self, data: Any, what: str) -> Any:
        """Tagged values in ``data`` rebuilt; a malformed tag is a protocol violation."""
        try:
            return codec.decode(data, self)
        except ProtocolViolation:
            raise
        except Exception as exc:  # noqa: BLE001 - any malformed value: KeyError, TypeError, binascii
            raise ProtocolViolation(f"a tagged value in {what} does not decode: "
                                    f"{type(exc).__name__}: {exc}") from None

    def _break(self, violation: ProtocolViolation) -> None:
        """The other side sent what this side never sends: nothing more it says is trusted. The
        peer closes (calls in flight fail with the error) and the transport ends the connection."""
        if self.closed is not None:
            return
        error = ProtocolError(f"{self.name} broke the RPC protocol: {violation}")
        self.close(error)
        if self.on_break is not None:
            self.on_break(error)

    def _dispatch(self, message: dict[str, Any], plain: bool, coroutine: bool) -> None:
        """Run a synchronous method right here, a task only for a coroutine method: most frames
        (notices, engine bookkeeping) then cost no task and no extra loop iteration. A synchronous
        call waits behind handler tasks not yet started, so calls still start in arrival order."""
        if not plain:  # tags decoded now: a malformed one ends the connection, not just this call
            message["a"] = self._decoded(message["a"], "the arguments")
            if message.get("k"):
                message["k"] = self._decoded(message["k"], "the keyword arguments")
        queued = self._queued
        if queued is not None and queued.done():
            queued = self._queued = None
        if queued is not None or coroutine:
            self._queued = self._handle_later(message)
            return
        awaitable = contextvars.copy_context().run(self._run, message)
        if awaitable is not None:  # a plain method that returned an awaitable: await it in a task
            self._queued = self._handle_later(message, awaitable)

    def _handle_later(self, message: dict[str, Any], awaitable: Any = None) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._handle(message, awaitable))
        if message["t"] == "call":
            self._handling[message["id"]] = task
        return task

    def _run(self, message: dict[str, Any]) -> Any:
        """Call the method; answer unless its result is an awaitable, which is returned."""
        calling_peer.set(self)  # in a context of its own: see _dispatch
        call_id = message.get("id")
        try:
            result = self._invoke(message)
            if inspect.isawaitable(result):
                return result
            if call_id is not None:
                self._send({"t": "ok", "id": call_id, "v": codec.encode(result, self, "result")},
                           f"the result of {message['m']}()")
        except ProtocolViolation as violation:
            self._break(violation)
        except BaseException as exc:  # everything the callee raised goes back to the caller
            self._answer_error(call_id, exc)
        return None

    def _invoke(self, message: dict[str, Any]) -> Any:
        """The call itself; the object and method were checked when the message arrived."""
        return getattr(message[_TARGET], message["m"])(*message["a"], **(message.get("k") or {}))

    async def _handle(self, message: dict[str, Any], awaitable: Any = None) -> None:
        calling_peer.set(self)  # the task's own context
        call_id = message.get("id")
        if self._queued is asyncio.current_task():
            self._queued = None  # tasks start in creation order: every handler task has started
        try:
            result = self._invoke(message) if awaitable is None else awaitable
            if inspect.isawaitable(result):
                result = await result
            if call_id is not None:
                self._send({"t": "ok", "id": call_id, "v": codec.encode(result, self, "result")},
                           f"the result of {message['m']}()", now=True)
        except asyncio.CancelledError:
            if call_id is not None and self.closed is None and call_id in self._handling:
                self._send({"t": "err", "id": call_id,
                            "e": {"name": "CancelledError", "message": "call cancelled", "code": None}})
            raise
        except ProtocolViolation as violation:
            self._break(violation)
        except BaseException as exc:  # everything the callee raised goes back to the caller
            self._answer_error(call_id, exc)
        finally:
            if call_id is not None:
                self._handling.pop(call_id, None)

    def _answer_error(self, call_id: int | None, exc: BaseException) -> None:
        if call_id is not None and self.closed is None:
            try:
                self._send({"t": "err", "id": call_id,
                            "e": error_to_wire(exc) if self.send_tracebacks else to_wire(exc)})
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


def _is_wire_error(error: Any) -> bool:
    return type(error) is dict and type(error.get("name")) is str \
        and type(error.get("message")) is str and type(error.get("code", None)) in (str, type(None))


def _shown(value: Any) -> str:
    """``value`` for an error message, cut short: it came from the other side."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

"""The pool of live isolates, keyed by loader id: LRU with an idle timeout.

The pool holds at most ``max_isolates``: a load retires the least recently used idle isolate
to make room, and when every isolate has a call in flight it waits (up to ``room_wait_s``) for one
to finish, so a burst of tenants queues for isolates instead of forking past the bound. Past
that wait it goes over the bound rather than hold a call indefinitely (calls may need each other:
a dispatcher can call one tenant from inside another's call).

An isolate is evicted only between calls (never with a call in flight). A hot-reloaded tenant's
isolate is marked stale: calls already in it finish, the next call goes to a fresh isolate loaded
through the loader callback again. An isolate that dies fails only the calls in flight in it, with
``isolate.crashed``, ``isolate.cpu_limit`` or ``isolate.memory_limit``; one that breaks the RPC
protocol (``rpc/errors.py``) is killed, and its calls fail with ``isolate.protocol``.

A tenant whose isolates keep breaking the protocol waits before its next one is loaded:
:data:`BROKEN_RELOAD_S` after a break, doubling with each break that follows within
:data:`BROKEN_MEMORY_S`, up to :data:`BROKEN_RELOAD_MAX_S`. Measured with ``benchmarks/flood.py``:
a tenant that sends one bad frame from every isolate it gets was reloaded 26-77 times a second
without it (3-9 times in 15 s with it), and each fork, guard and import is host and machine time
its neighbours need. An honest tenant never breaks the protocol and never waits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable

from emulator.defaults import (ISOLATE_CPU_MS, ISOLATE_IDLE_TIMEOUT_S, ISOLATE_MEMORY_MB,
                               ISOLATE_ROOM_WAIT_S, ISOLATION, ISOLATIONS, MAX_ISOLATES)
from emulator.rules.limits import MAX_LOG_LINE_CHARS, utf8_size
from emulator.engine.logs import LogWindow
from emulator.rules.logs import LogLevel
from emulator.isolates.early import spare_profile
from emulator.isolates.child import EXIT_CPU_LIMIT, EXIT_MEMORY_LIMIT, guard_profile
from emulator.isolates.outbound import NO_OUTBOUND, Outbound, OutboundPolicy
from emulator.isolates.output import OutputReader
from emulator.isolates.sandbox import Layers
from emulator.isolates.zygote import Zygote
from emulator.rpc.errors import (ConnectionLost, CpuLimitError, MemoryLimitError, ProtocolError,
                                 ProtocolViolation)
from emulator.rpc.frames import FROM_HOST, FROM_ISOLATE
from emulator.rpc.peer import Peer
from emulator.rpc.target import RpcTarget
from emulator.rpc.transport import StreamTransport

LogSink = Callable[[str, str, str], None]  # (loader key, level, message)
BROKEN_RELOAD_S = 0.1
BROKEN_RELOAD_MAX_S = 5.0
BROKEN_MEMORY_S = 60.0


@dataclass
class IsolateLimits:
    memory_mb: int = ISOLATE_MEMORY_MB
    cpu_ms: int = ISOLATE_CPU_MS


class HostRoot(RpcTarget):
    """What an isolate may call in the host besides the capabilities in its env: its own log
    and ``fetch`` (outside any step; inside a step both go through that instance's handle).
    Lines are held to a quota per minute (``engine/logs.py``).

    ``outbound`` is the isolate's outbound policy, from the dispatcher's code dict: a plain
    attribute, which the isolate cannot read or change over RPC (only methods can be called)."""

    __rpc_strict__ = True   # only the runtime calls it: a call that does not bind is a violation

    def __init__(self, label: str, sink: LogSink | None,
                 outbound: OutboundPolicy = NO_OUTBOUND) -> None:
        self._label = label
        self._sink = sink
        self.outbound = Outbound(outbound)
        self._window = LogWindow(lambda: time.monotonic_ns() // 1_000_000)

    def log(self, level: str, message: str) -> None:
        if type(level) is not str or type(message) is not str:
            raise ProtocolViolation("a log line and its level must be strings")
        self._record(LogLevel.parse(level).value, message)

    def _record(self, level: str, message: str) -> None:
        """A line outside any step: the isolate's (checked by :meth:`log`) or the host's own about
        it (an outbound request, level ``fetch``), held to the same window."""
        message = message[:MAX_LOG_LINE_CHARS]
        admitted = self._window.admit(utf8_size(message))
        if admitted is False:
            return
        if admitted is not True:
            level, message = LogLevel.WARNING.value, admitted
        if self._sink is not None:
            self._sink(self._label, level, message)

    async def fetch(self, request: Any) -> Any:
        """An outbound request from outside any step: logged with the tenant only."""
        return await self.outbound.fetch(request, self._record if self._sink is not None else None)


@dataclass(eq=False)
class Isolate:
    key: str
    pid: int
    peer: Peer
    transport: StreamTransport | None      # None: an inline isolate, in this process
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    stale: bool = False
    dead: bool = False
    load_ms: float = 0.0
    reader: asyncio.Task[None] | None = None
    load_phases: dict[str, float] = field(default_factory=dict)
    on_idle: Callable[[], None] | None = None    # told when the last call in flight ends
    output: OutputReader | None = None           # what it writes to its descriptors 1 and 2
    broke: bool = False                          # it broke the RPC protocol

    async def invoke(self, entrypoint: str | None, method: str, args: list[Any],
                     kwargs: dict[str, Any], props: dict[str, Any] | None = None) -> Any:
        self.in_flight += 1
        self.last_used = time.monotonic()
        try:
            return await self.peer.remote.invoke(entrypoint, method, list(args), kwargs, props)
        finally:
            self.in_flight -= 1
            self.last_used = time.monotonic()
            if self.stale and self.in_flight == 0:
                self.kill()  # retired or hot-reloaded: its last call is done
            if self.in_flight == 0 and self.on_idle is not None:
                self.on_idle()

    inline_root: Any = None

    def kill(self) -> None:
        if self.dead:
            return
        if self.inline_root is not None:  # never signal this process: unload the modules
            self.dead = True
            if self.inline_root.inline_modules is not None:
                self.inline_root.inline_modules.unload()
            self.peer.close(ConnectionLost(f"the inline isolate of '{self.key}' was stopped"))
            return
        self.stop_process()

    def stop_process(self) -> None:
        """SIGKILL the isolate's process: only while the zygote has not reaped it (its pid cannot
        have been reused)."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class IsolatePool:
    def __init__(self, *, max_isolates: int = MAX_ISOLATES,
                 idle_timeout_s: float = ISOLATE_IDLE_TIMEOUT_S,
                 limits: IsolateLimits | None = None, log_sink: LogSink | None = None,
                 isolation: str = ISOLATION, room_wait_s: float = ISOLATE_ROOM_WAIT_S,
                 layers: Layers | None = None) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be 'process' or 'inline', not {isolation!r}")
        self.isolation = isolation
        self.max_isolates = max_isolates
        self.idle_timeout_s = idle_timeout_s
        self.limits = limits or IsolateLimits()
        self.log_sink = log_sink
        self.layers = layers or Layers.from_environment()
        self.zygote = Zygote(spare_profile=spare_profile(self.limits.memory_mb, self.layers))
        self._live: OrderedDict[str, Isolate] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Isolate]] = {}
        self._retired: set[Isolate] = set()
        self.loads = 0
        self.room_wait_s = room_wait_s
        self._starting = 0                  # loads past the room check, not yet live
        self._room: asyncio.Future[None] | None = None
        # every isolate's reader until it ends, including those of isolates just killed
        self._readers: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        # key -> (protocol breaks in a row, when the last one was): see the module's note
        self._broken: dict[str, tuple[int, float]] = {}

    async def start(self) -> None:
        if self.isolation == "process":
            await self.zygote.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    @property
    def live_count(self) -> int:
        return len(self._live)

    async def acquire(self, key: str, load_code: Callable[[], Awaitable[dict[str, Any]]]) -> Isolate:
        """The live isolate for ``key``, loading one (through ``load_code``) when there is none."""
        isolate = self._live.get(key)
        # a closed peer: its connection is ending and the reader has not yet run to say so (a
        # protocol violation marks the isolate dead at once; this holds for any other reason)
        if isolate is not None and not isolate.dead and not isolate.stale \
                and isolate.peer.closed is None:
            self._live.move_to_end(key)
            return isolate
        if isolate is not None:
            self._retire(isolate)
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.get_running_loop().create_future()
            self._loading[key] = loading
            try:
                isolate = await self._load(key, load_code)
            except BaseException as exc:
                loading.set_exception(exc)
                loading.exception()
                raise
            finally:
                self._loading.pop(key, None)
            loading.set_result(isolate)
            return isolate
        return await asyncio.shield(loading)

    async def _load(self, key: str, load_code: Callable[[], Awaitable[dict[str, Any]]]) -> Isolate:
        broken = self._broken.get(key)
        if broken is not None:
            count, last = broken
            wait = last + min(BROKEN_RELOAD_MAX_S, BROKEN_RELOAD_S * 2 ** (count - 1)) \
                - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        code = await load_code()
        await self._make_room()
        self._starting += 1
        # the outbound policy stays here, on the host's side of the connection; a code dict that
        # did not come through the loader has none, and gets no way out
        outbound = code.get("outbound", NO_OUTBOUND)
        code = {name: value for name, value in code.items() if name != "outbound"}
        try:
            if self.isolation == "inline":
                return await self._load_inline(key, code, outbound)
            return await self._load_process(key, code, outbound)
        finally:
            self._starting -= 1
            self._room_changed()

    async def _load_process(self, key: str, code: dict[str, Any],
                            outbound: OutboundPolicy) -> Isolate:
        payload = {**code, "memory_mb": code.get("memory_mb", self.limits.memory_mb),
                   "cpu_ms": code.get("cpu_ms", self.limits.cpu_ms),
                   "layers": self.layers.to_dict()}
        pid, sock, output = await self.zygote.fork(key, asdict(guard_profile(payload)))
        try:
            transport = await StreamTransport.open(sock, FROM_ISOLATE, budget=True)
        except BaseException:
            os.close(output)
            raise
        peer = Peer(transport.write, HostRoot(key, self.log_sink, outbound),
                    name=f"the isolate of '{key}'", incoming=FROM_ISOLATE,
                    write_now=transport.write_now)
        isolate = Isolate(key, pid, peer, transport, on_idle=self._room_changed)
        isolate.output = OutputReader.start(output, key, self.log_sink)
        peer.on_break = lambda error: self._broke(isolate)   # now, not when the reader runs
        loop = asyncio.get_running_loop()
        isolate.reader = loop.create_task(transport.serve(
            peer, on_lost=lambda reason: self._lost(isolate, reason)))
        self._readers.add(isolate.reader)
        isolate.reader.add_done_callback(self._readers.discard)
        try:
            info = await peer.remote.load(payload)
        except BaseException:
            isolate.kill()
            raise
        isolate.load_ms = info.get("load_ms", 0.0)
        isolate.load_phases = info.get("phases_ms", {})
        self.loads += 1
        self._live[key] = isolate
        return isolate

    async def _load_inline(self, key: str, code: dict[str, Any],
                           outbound: OutboundPolicy) -> Isolate:
        from emulator.isolates.child import IsolateRoot
        from emulator.sdk.remote import STEP_KIND
        from emulator.rpc.transport import memory_pair
        from emulator.runtime import make_importable
        make_importable()               # tenant code imports ``workers`` in this process
        root = IsolateRoot(key, inline=True)
        host_peer, child_peer = memory_pair(HostRoot(key, self.log_sink, outbound), root,
                                            names=(f"the isolate of '{key}'", f"inline {key}"),
                                            proxies_b={STEP_KIND: root.build_step},
                                            rules=(FROM_ISOLATE, FROM_HOST))
        root.peer = child_peer
        isolate = Isolate(key, os.getpid(), host_peer, None, inline_root=root,
                          on_idle=self._room_changed)
        close_pair = host_peer.on_break

        def broke(error: ProtocolError) -> None:
            if close_pair is not None:
                close_pair(error)
            isolate.kill()
            self._broke(isolate)
        host_peer.on_break = broke
        try:
            await host_peer.remote.load(dict(code))
        except BaseException:
            isolate.kill()
            raise
        self.loads += 1
        self._live[key] = isolate
        return isolate

    def _broke(self, isolate: Isolate) -> None:
        """``isolate`` broke the protocol: out of service at once, and its tenant's next load
        waits (see the module's note). Once per isolate."""
        if isolate.broke:
            return
        isolate.broke = True
        self._forget(isolate)
        now = time.monotonic()
        count, last = self._broken.get(isolate.key, (0, now))
        self._broken[isolate.key] = (count + 1 if now - last < BROKEN_MEMORY_S else 1, now)
        if len(self._broken) > 10_000:  # keep the oldest out
            for stale in [k for k, (_, at) in self._broken.items() if now - at >= BROKEN_MEMORY_S]:
                del self._broken[stale]

    def _forget(self, isolate: Isolate) -> None:
        isolate.dead = True
        if self._live.get(isolate.key) is isolate:
            del self._live[isolate.key]
        self._retired.discard(isolate)
        self._room_changed()

    async def _lost(self, isolate: Isolate, reason: ConnectionLost | None = None) -> BaseException:
        """Why ``isolate``'s connection ended: ``reason`` when this side ended it, else what its
        exit status says. The process is killed if it is still there (a protocol violation; or
        a process that closed its socket and lives on, which an honest isolate never does)."""
        self._forget(isolate)
        if isinstance(reason, ProtocolError):
            self._broke(isolate)
            isolate.stop_process()      # the connection has just been ended here: still alive
            return reason
        code = await self.zygote.exit_code(isolate.pid)
        if code is None:                # not reaped within a second of closing its socket
            isolate.stop_process()
        if code == EXIT_CPU_LIMIT:
            return CpuLimitError(key=isolate.key, limit_ms=self.limits.cpu_ms)
        if code == EXIT_MEMORY_LIMIT:
            return MemoryLimitError(key=isolate.key, limit_mb=self.limits.memory_mb)
        if code is not None and code < 0:
            try:
                how = f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        elif code is not None:
            how = f"exited with status {code}"
        else:
            how = "closed its connection"
        return ConnectionLost(f"the isolate of '{isolate.key}' {how}")

    def _retire(self, isolate: Isolate) -> None:
        """Take ``isolate`` out of service; it is stopped once its calls have finished."""
        if self._live.get(isolate.key) is isolate:
            del self._live[isolate.key]
        isolate.stale = True
        if isolate.in_flight == 0:
            isolate.kill()
        else:
            self._retired.add(isolate)
        self._room_changed()

    async def _make_room(self) -> None:
        """Before a load: retire idle isolates, least recently used first, until this one fits.
        Loads already past this check count (otherwise concurrent loads all pass it before any
        finishes). With every isolate busy, wait for one to go idle, up to ``room_wait_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.room_wait_s
        while len(self._live) + self._starting >= self.max_isolates:
            idle = next((i for i in self._live.values() if i.in_flight == 0), None)
            if idle is not None:
                self._retire(idle)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return  # go over the bound rather than hold this call any longer
            if self._room is None:
                self._room = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._room), remaining)
            except asyncio.TimeoutError:
                return

    def _room_changed(self) -> None:
        """An isolate went idle or away, or a load ended: waiting loads look again."""
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.idle_timeout_s / 4))
            now = time.monotonic()
            for isolate in list(self._live.values()):
                if isolate.in_flight == 0 and now - isolate.last_used > self.idle_timeout_s:
                    self._retire(isolate)
            for isolate in list(self._retired):
                if isolate.in_flight == 0:
                    isolate.kill()

    def evict(self, key: str) -> None:
        isolate = self._live.get(key)
        if isolate is not None:
            self._retire(isolate)

    def mark_stale(self, key: str) -> None:
        isolate = self._live.get(key)
        if isolate is not None:
            isolate.stale = True
            if isolate.in_flight == 0:
                self._retire(isolate)

    def mark_all_stale(self) -> None:
        """Every isolate reloads at its next call (the dispatcher, which builds their code, changed)."""
        for key in list(self._live):
            self.mark_stale(key)

    def get_live(self, key: str) -> Isolate | None:
        return self._live.get(key)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for isolate in [*self._live.values(), *self._retired]:
            isolate.kill()
            if isolate.output is not None:
                isolate.output.close()
        readers = list(self._readers)
        for reader in readers:
            reader.cancel()
        if readers:
            await asyncio.wait(readers, timeout=5)
        self._live.clear()
        self._retired.clear()
        if self.isolation == "process":
            await self.zygote.close()

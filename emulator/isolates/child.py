"""An isolate's main: forked from the zygote, serves one tenant's module set over RPC.

The host calls ``load(code)`` once (modules, env, limits), then ``invoke(entrypoint, method, args,
kwargs, props)`` for every call, many at once. Each call gets a fresh entrypoint instance, as a
Worker gets one per request; module-level state lives as long as the isolate.

Exit codes tell the host why an isolate died: 86 a call held the CPU past the limit, 87 memory ran
out. A signal (a segfault) or any other code is a crash.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import os
import signal
import socket
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

from emulator.defaults import ISOLATE_CPU_MS, ISOLATE_MEMORY_MB
from emulator.sdk import client as step_client
from emulator.rules.limits import MAX_LOG_LINE_CHARS
from emulator.sdk.step import WorkflowStep, uses_implicit_dependencies
from emulator.sdk.remote import STEP_KIND, RemoteStepBackend, step_proxy
from emulator.rpc.frames import FROM_ISOLATE
from emulator.rpc.peer import Peer
from emulator.rpc.target import RpcTarget
from emulator.rpc.transport import StreamTransport
from emulator.runtime.workers import outbound_route

EXIT_CPU_LIMIT = 86
EXIT_MEMORY_LIMIT = 87


class _Prepared:
    """The guard and watchdog a spare child installed ahead of need (see :func:`spare_main`)."""

    base: Any = None            # guard.BaseGuard
    watchdog: "_Watchdog | None" = None


def spare_main(channel: socket.socket, profile: dict[str, Any] | None = None) -> None:
    """A child forked ahead of need: make the event loop and, given a guard ``profile``, install
    the tenant-independent part of the guard and the watchdog; then wait for the zygote to hand
    over a host connection (or to go away). Never returns."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_warm_up())
    if profile is not None:
        from emulator.isolates import guard
        _Prepared.base = guard.install_base_guard(guard.GuardProfile(**profile))
        _Prepared.watchdog = _Watchdog(ISOLATE_CPU_MS)
        _Prepared.watchdog.start(loop)
    try:
        data, fds, _flags, _addr = socket.recv_fds(channel, 65536, 2)
    except OSError:
        data, fds = b"", []
    channel.close()
    if not data or len(fds) != 2:
        os._exit(0)
    main(fds[0], json.loads(data), loop, output=fds[1])


async def _warm_up() -> None:
    """Run the paths every isolate runs, once, while nobody waits: a forked child copies each
    memory page it writes, and paying those copies here takes them off the cold boot."""
    from emulator.rpc.transport import memory_pair
    here, there = memory_pair(None, IsolateRoot("warm-up"), names=("warm", "up"))
    try:
        await asyncio.wait_for(here.remote.invoke(None, "ping", [{"a": [1, 2.5, None]}], {}, None), 1)
    except Exception:
        pass  # "no code loaded" is the expected answer; the round trip is the point
    a, b = socket.socketpair()
    transport = await StreamTransport.open(a)
    transport.write(b"{}")
    transport.close()
    b.close()
    compile("class Default:\n    async def run(self):\n        return 1\n", "<warm-up>", "exec")


def main(fd: int, request: dict[str, Any], loop: asyncio.AbstractEventLoop | None = None, *,
         output: int | None = None) -> None:
    """Run the isolate until the host closes its connection; never returns. ``output`` becomes
    its descriptors 1 and 2: a pipe the host reads, never the host's terminal."""
    code = 0
    if output is not None:
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
    try:
        if loop is None:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_serve(socket.socket(fileno=fd), request))
    except MemoryError:
        code = EXIT_MEMORY_LIMIT
    except BaseException:
        code = 1
    finally:
        try:
            sys.stdout.flush()
        except Exception:
            pass
        os._exit(code)


async def _serve(sock: socket.socket, request: dict[str, Any]) -> None:
    transport = await StreamTransport.open(sock)
    root = IsolateRoot(request.get("label", "tenant"))
    # what it sends is checked against what the host accepts: an honest tenant whose message
    # the host would take for a protocol violation gets a payload error here instead
    peer = Peer(transport.write, root, name=f"isolate:{root.label}",
                proxies={STEP_KIND: root.build_step}, flush=transport.flush,
                write_now=transport.write_now,
                outgoing=FROM_ISOLATE, send_tracebacks=True)
    root.peer = peer
    await transport.serve(peer)


class _LogStream(io.TextIOBase):
    """``print`` and ``logging`` output, sent to the host line by line with the step it came from."""

    def __init__(self, root: "IsolateRoot", level: str) -> None:
        self._root, self._level, self._buffer = root, level, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._root.send_log(self._level, line)
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            line, self._buffer = self._buffer, ""
            self._root.send_log(self._level, line)


class _Watchdog:
    """Kills the isolate when the event loop is held by one call for longer than the CPU limit.

    The main thread's CPU clock is read from a helper thread: a blocked loop (``while True``) that
    burns CPU is killed; a loop that waits on I/O costs no CPU and is left alone.
    """

    def __init__(self, cpu_ms: int) -> None:
        self.cpu_ms = cpu_ms
        self.beat = time.monotonic()
        self._clock = time.pthread_getcpuclockid(threading.main_thread().ident)  # type: ignore[arg-type]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        def heartbeat() -> None:
            self.beat = time.monotonic()
            loop.call_later(0.05, heartbeat)
        heartbeat()
        threading.Thread(target=self._watch, name="dynwf-watchdog", daemon=True).start()

    def _watch(self) -> None:
        blocked_since_cpu: float | None = None
        while True:
            time.sleep(0.05)
            stalled = time.monotonic() - self.beat > 0.2
            cpu = time.clock_gettime(self._clock)
            if not stalled:
                blocked_since_cpu = None
                continue
            if blocked_since_cpu is None:
                blocked_since_cpu = cpu
            elif (cpu - blocked_since_cpu) * 1000 > self.cpu_ms:
                os._exit(EXIT_CPU_LIMIT)


class IsolateRoot(RpcTarget):
    """What the host may call in an isolate."""

    def __init__(self, label: str, *, inline: bool = False) -> None:
        self.label = label
        self.inline = inline
        self.inline_modules: Any = None
        self.peer: Peer | None = None
        self.module: Any = None
        self.env: Any = None
        self.implicit = True
        self.fingerprint: str | None = None

    # called by the host ---------------------------------------------------------------------

    async def load(self, code: dict[str, Any]) -> dict[str, Any]:
        """Install the guard and import the tenant's main module."""
        from emulator.isolates import guard
        outbound_route.set(self.fetch_through_host)  # for fetch at import time
        started = time.perf_counter()
        modules: dict[str, str] = code["modules"]
        self.implicit = uses_implicit_dependencies(code.get("compatibility_date"))
        self.fingerprint = code.get("fingerprint")
        self.env = SimpleNamespace(**(code.get("env") or {}))
        if self.inline:  # in the host process: no guard, no limits, output stays the host's
            from emulator.isolates.inline import InlineModules
            self.inline_modules = InlineModules(modules, self.label)
            self.module = self.inline_modules.import_main(code["main_module"])
            return {"pid": os.getpid(), "load_ms": (time.perf_counter() - started) * 1000}
        sys.stdout = _LogStream(self, "info")
        sys.stderr = _LogStream(self, "error")
        step_client.on_body_error = _exit_on_memory_error
        cpu_ms = int(code.get("cpu_ms") or ISOLATE_CPU_MS)
        profile = guard_profile(code)
        t1 = time.perf_counter()
        base = _Prepared.base
        if base is None:  # forked on demand: the whole guard now, and only then the watchdog
            base = guard.install_base_guard(profile)
            _Watchdog(cpu_ms).start(asyncio.get_running_loop())
        elif base.profile != profile:  # the zygote hands out spares by profile: a bug if seen
            raise RuntimeError(f"this isolate was prepared for {base.profile}, not {profile}")
        else:
            assert _Prepared.watchdog is not None
            _Prepared.watchdog.cpu_ms = cpu_ms
        guard.admit_tenant(base, modules, self.label)
        t2 = time.perf_counter()
        main = code["main_module"]
        self.module = importlib.import_module(main[:-3].replace("/", "."))
        t3 = time.perf_counter()
        return {"pid": os.getpid(), "load_ms": (t3 - started) * 1000,
                "phases_ms": {"setup": (t1 - started) * 1000, "guard": (t2 - t1) * 1000,
                              "import": (t3 - t2) * 1000}}

    async def invoke(self, entrypoint: str | None, method: str, args: list[Any],
                     kwargs: dict[str, Any], props: dict[str, Any] | None = None) -> Any:
        if self.module is None:
            raise RuntimeError("the isolate has no code loaded")
        name = entrypoint or "Default"
        cls = getattr(self.module, name, None)
        if not isinstance(cls, type):
            raise TypeError(f"the tenant's main module has no entrypoint class {name!r}")
        if method.startswith("_") or not callable(getattr(cls, method, None)):
            raise TypeError(f"entrypoint {name!r} has no method {method!r}")
        ctx = SimpleNamespace(props=props or {}, wait_until=_wait_until)
        outbound_route.set(self.fetch_through_host)  # this call's context, and tasks it starts
        instance = cls(ctx, self.env)
        try:
            result = getattr(instance, method)(*args, **kwargs)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
        except MemoryError:
            if self.inline:
                raise
            os._exit(EXIT_MEMORY_LIMIT)
        finally:
            # a run's step goes with its run: its stub is dropped now, and the host lets go of
            # the run's engine side, instead of both waiting for this isolate's full collection
            for arg in args:
                if isinstance(arg, WorkflowStep):
                    arg.release()
        return result

    # used inside the isolate ------------------------------------------------------------------

    def build_step(self, stub: Any, init: dict[str, Any]) -> Any:
        return step_proxy(self.implicit, self.fingerprint)(stub, init)

    async def fetch_through_host(self, request: Any) -> Any:
        """Where ``workers.fetch`` sends a request: the isolate has no network of its own."""
        if self.peer is None:
            raise RuntimeError("the isolate is not connected to its host")
        where = step_client.current_step.get()
        if where is not None and isinstance(where[2], RemoteStepBackend):
            return await where[2].fetch(where[1], request)  # logged under that instance's step
        return await self.peer.remote.fetch(request)

    def send_log(self, level: str, message: str) -> None:
        if self.peer is None or self.peer.closed is not None:
            return
        message = message[:MAX_LOG_LINE_CHARS]  # as the host keeps it: no longer line crosses
        where = step_client.current_step.get()
        if where is not None:  # inside a step: logged against that instance, through its handle
            where[2].log(where[1], level, message)
        else:
            self.peer.remote.log.send(level, message)


def guard_profile(code: dict[str, Any]) -> Any:
    """The guard profile a ``load`` of ``code`` needs (a ``guard.GuardProfile``); ``layers`` holds
    the pool's switches of the kernel layers (all on when absent)."""
    from emulator.isolates import guard
    return guard.GuardProfile(memory_mb=code.get("memory_mb", ISOLATE_MEMORY_MB),
                              allow_network=bool(code.get("allow_network")),
                              **(code.get("layers") or {}))


def _wait_until(awaitable: Any) -> None:
    asyncio.ensure_future(awaitable)


def _exit_on_memory_error(exc: BaseException) -> None:
    if isinstance(exc, MemoryError):
        os._exit(EXIT_MEMORY_LIMIT)

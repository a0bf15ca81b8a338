"""The zygote: a warm interpreter that forks one process per isolate.

Tried and measured here (docs/benchmarks.md): a fresh interpreter per isolate costs 65-83 ms;
multiprocessing's forkserver ~5 ms; ``os.fork()`` from a warm parent ~2 ms. So the host starts
one *fresh* interpreter (not a fork of the host: the host holds the engine's database connection
and the dispatcher's memory, which tenants must never inherit), which imports the runtime, calls
``gc.freeze()`` so children do not copy its objects on their first collection, and then forks on
request. It never starts a thread, so forking it is safe.

The zygote also prepares the kernel layers every isolate enters (:mod:`emulator.isolates.sandbox`):
it moves itself into an empty network namespace, builds the Landlock ruleset and the memory
cgroup parent, all once. It gets an environment of its own (never the host's variables, which
may hold secrets), no standard input, and output the host reads; each isolate gets an output pipe
of its own for its descriptors 1 and 2, so nothing it writes reaches the host's terminal.

The control channel is a ``SOCK_SEQPACKET`` pair (message boundaries kept, file descriptors passed
with ``SCM_RIGHTS``): the host sends ``{"req": n, "label": ..., "profile": ...}`` plus the write
end of the child's output pipe; the zygote makes the socket pair of the child's RPC connection and
answers ``{"req": n, "pid": pid}`` with the host's end of it, and ``{"exit": pid, "code": c}``
when a child ends (``c`` as ``os.waitstatus_to_exitcode``: negative for a signal; the
memory-limit exit code when the kernel's OOM killer ended it in its memory cgroup). The zygote
makes the pair, not the host, because a socket belongs to the network namespace it was made in:
made in the zygote's empty one, the isolate's only socket shows nothing of the host's network
(its interfaces and addresses) to an interface query.

Spare children install the tenant-independent part of the guard while they wait, for one guard
*profile* (memory limit, network on or off): a request with that profile gets a spare, any other
is forked on demand and installs the whole guard itself; the zygote then prepares its spares for
the new profile, since the next request most likely asks for it again.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import select
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

PRELOAD = (
    "asyncio", "json", "datetime", "decimal", "re", "random", "uuid", "hashlib", "base64",
    "dataclasses", "functools", "itertools", "collections", "math", "statistics", "typing",
    "logging", "traceback", "linecache", "zoneinfo", "urllib.parse", "http",
    "emulator.rpc.peer", "emulator.rpc.transport", "emulator.sdk.client",
    "emulator.sdk.step", "emulator.sdk.remote", "emulator.isolates.child",
    "emulator.isolates.guard", "emulator.isolates.guard.folders",
    "emulator.isolates.guard.tenant_modules", "emulator.isolates.guard.import_policy",
    "emulator.isolates.guard.audit_hooks", "emulator.isolates.guard.resource_limits",
    "emulator.errors", "workers", "workers.workflows", "dynamic_workflows",
)
READY = b'{"ready":true}'
# What the zygote passes on from the host's environment: the locale and time zone (the values of
# ``time.localtime`` and text encodings), never credentials or the host's own settings.
_PASSED_ENVIRONMENT = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED", "PYTHONUTF8")


# ---- the host's side ---------------------------------------------------------------------------

class Zygote:
    """Starts the zygote process and asks it for isolates."""

    def __init__(self, spare_profile: dict[str, Any] | None = None) -> None:
        self.spare_profile = spare_profile
        self.process: subprocess.Popen[bytes] | None = None
        self._ctrl: socket.socket | None = None
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._next = 1
        self._reader: asyncio.Task[None] | None = None
        self._stderr_tail: collections.deque[bytes] = collections.deque(maxlen=40)

    async def start(self) -> None:
        adopted = _early.pop(json.dumps(self.spare_profile, sort_keys=True), None)
        self.process, host_end = adopted if adopted is not None else _spawn(self.spare_profile)
        self._ctrl = host_end
        loop = asyncio.get_running_loop()
        assert self.process.stderr is not None
        loop.add_reader(self.process.stderr.fileno(), self._read_stderr)
        try:
            first = await asyncio.wait_for(loop.sock_recv(host_end, 65536), timeout=30)
        except (asyncio.TimeoutError, OSError):
            first = b""
        if first != READY:
            self._read_stderr()
            tail = b"".join(self._stderr_tail).decode(errors="replace").strip()
            raise RuntimeError("the isolate zygote failed to start"
                               + (f": {tail[-2000:]}" if tail else f" ({first!r})"))
        self._reader = loop.create_task(self._read())

    def _read_stderr(self) -> None:
        """Keep the end of what the zygote itself wrote (a start-up failure's traceback)."""
        assert self.process is not None and self.process.stderr is not None
        try:
            chunk = os.read(self.process.stderr.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self.process.stderr.fileno())
            return
        self._stderr_tail.append(chunk[-4096:])

    async def _read(self) -> None:
        assert self._ctrl is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await _ready(self._ctrl)
                data, fds, _flags, _addr = socket.recv_fds(self._ctrl, 65536, 1)
            except BlockingIOError:
                continue
            except (OSError, ValueError, asyncio.CancelledError):   # ValueError: closed here
                data, fds = b"", []
            if not data:
                for fd in fds:
                    os.close(fd)
                error = RuntimeError("the isolate zygote exited")
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(error)
                return
            message = json.loads(data)
            if "pid" in message:
                future = self._pending.pop(message["req"], None)
                if future is not None and not future.done() and len(fds) == 1:
                    future.set_result((message["pid"], socket.socket(fileno=fds[0])))
                else:          # nobody waits for it any more: its isolate sees the end at once
                    for fd in fds:
                        os.close(fd)
                continue
            for fd in fds:     # only a child's start carries a descriptor
                os.close(fd)
            if "exit" in message:
                future = self._exits.setdefault(message["exit"], loop.create_future())
                if not future.done():
                    future.set_result(message["code"])

    async def fork(self, label: str,
                   profile: dict[str, Any] | None = None) -> tuple[int, socket.socket, int]:
        """A new isolate process whose guard will have ``profile``: its pid, the host's end of its
        connection, and the read end of its output pipe (its descriptors 1 and 2)."""
        if self._ctrl is None:
            await self.start()
        assert self._ctrl is not None
        output_read, output_write = os.pipe2(os.O_CLOEXEC)
        request = self._next
        self._next += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[request] = future
        message = json.dumps({"req": request, "label": label, "profile": profile}).encode()
        try:
            while True:
                try:
                    socket.send_fds(self._ctrl, [message], [output_write])
                    break
                except BlockingIOError:  # many forks at once filled the channel: wait, not fail
                    await _ready(self._ctrl, writing=True)
        except BaseException:
            os.close(output_read)
            raise
        finally:
            os.close(output_write)
        pid, host_sock = await future
        return pid, host_sock, output_read

    async def exit_code(self, pid: int, timeout: float = 1.0) -> int | None:
        """How process ``pid`` ended, once the zygote has reaped it (None if not within ``timeout``)."""
        future = self._exits.setdefault(pid, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            if future.done():
                self._exits.pop(pid, None)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.process is not None and self.process.stderr is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.process.stderr.fileno())
            except (ValueError, OSError):
                pass
        if self._ctrl is not None:
            self._ctrl.close()
            self._ctrl = None
        if self.process is not None:
            self.process.terminate()
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.process.wait, 5)
            except subprocess.TimeoutExpired:
                self.process.kill()
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None


def _spawn(spare_profile: dict[str, Any] | None) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """The zygote process, started, and the host's end of its control channel."""
    host_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    from emulator.runtime import RUNTIME_PATH
    root = str(Path(__file__).resolve().parents[2])
    env = {name: os.environ[name] for name in _PASSED_ENVIRONMENT if name in os.environ}
    env["PYTHONPATH"] = os.pathsep.join([root, RUNTIME_PATH])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PATH"] = os.defpath
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator.isolates.zygote", str(zygote_end.fileno()),
         json.dumps(spare_profile)],
        pass_fds=[zygote_end.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env=env, start_new_session=True)
    zygote_end.close()
    host_end.setblocking(False)
    assert process.stderr is not None
    os.set_blocking(process.stderr.fileno(), False)
    return process, host_end


#: Zygotes started ahead of their pool (:func:`start_early`), by spare profile (as JSON).
_early: dict[str, tuple[subprocess.Popen[bytes], socket.socket]] = {}
_stopped_at_exit = False


def start_early(spare_profile: dict[str, Any] | None) -> None:
    """Start the zygote now, before this process has an event loop or a pool: it preloads the
    runtime on another core while this process does the rest of its start-up (imports, the
    project's check, the database), and the first :class:`Zygote` of this process with the same
    spare profile adopts it instead of starting one. The same process, environment and
    arguments as :meth:`Zygote.start` would start; one nobody adopts is stopped by
    :func:`stop_unadopted`, at the latest when this process exits."""
    key = json.dumps(spare_profile, sort_keys=True)
    if key in _early:
        return
    global _stopped_at_exit
    if not _stopped_at_exit:
        import atexit
        atexit.register(stop_unadopted)
        _stopped_at_exit = True
    _early[key] = _spawn(spare_profile)


def stop_unadopted() -> None:
    """Stop the zygotes :func:`start_early` started that no pool adopted (the command ended
    before it started its host: a usage error, a refusal)."""
    while _early:
        process, host_end = _early.popitem()[1]
        host_end.close()          # it exits at its next look at the channel; do not wait for it
        process.terminate()
        if process.stderr is not None:
            process.stderr.close()


async def _ready(sock: socket.socket, *, writing: bool = False) -> None:
    """Wait until ``sock`` can be read (or, ``writing``, written) without blocking."""
    loop = asyncio.get_running_loop()
    add, remove = (loop.add_writer, loop.remove_writer) if writing else \
        (loop.add_reader, loop.remove_reader)
    ready = loop.create_future()
    fd = sock.fileno()        # kept: the socket may be closed while this waits
    add(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        remove(fd)


# ---- the zygote process ------------------------------------------------------------------------

def _preload(profile: dict[str, Any] | None) -> None:
    import importlib
    for name in PRELOAD:
        importlib.import_module(name)
    if "_ctypes" in sys.modules:  # a native-call capability every isolate would inherit
        raise RuntimeError("a module preloaded for isolates imported ctypes: "
                           + ", ".join(sorted(n for n in sys.modules if "ctypes" in n)))
    from emulator.isolates import guard
    guard.prepare(guard.GuardProfile(**profile) if profile is not None else None)


SPARES = 2


def serve(ctrl_fd: int, spare_profile: dict[str, Any] | None = None) -> None:
    ctrl = socket.socket(fileno=ctrl_fd)
    _preload(spare_profile)
    import gc
    gc.collect()
    gc.freeze()
    spares: list[tuple[int, socket.socket]] = []
    _refill(spares, ctrl, spare_profile)
    ctrl.sendall(READY)
    while True:
        ready, _, _ = select.select([ctrl], [], [], 0.05)
        _reap(ctrl)
        if not ready:
            _refill(spares, ctrl, spare_profile)
            continue
        try:
            data, fds, _flags, _addr = socket.recv_fds(ctrl, 65536, 4)
        except OSError:
            data, fds = b"", []
        if not data:  # the host is gone; isolates and spares notice their own sockets close
            _discard(spares)
            _reap(ctrl)
            return
        request: dict[str, Any] = json.loads(data)
        profile = request.get("profile")
        if len(fds) != 1:  # a malformed request: nothing to hand over
            for fd in fds:
                os.close(fd)
            continue
        # the RPC connection, made here in the zygote's network namespace (see the top)
        host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        handed = [child_end.fileno(), fds[0]]
        pid = _hand_to_spare(spares, data, handed) if profile == spare_profile else None
        if pid is None:
            pid = os.fork()
            if pid == 0:
                ctrl.close()
                host_end.close()
                for _, spare in spares:
                    spare.close()
                from emulator.isolates import child
                child.main(handed[0], request, output=handed[1])  # never returns
        child_end.close()
        os.close(fds[0])
        socket.send_fds(ctrl, [json.dumps({"req": request["req"], "pid": pid}).encode()],
                        [host_end.fileno()])
        host_end.close()
        if profile != spare_profile:  # prepare for the profile asked for now
            spare_profile = profile
            _discard(spares)
        if not spares:  # otherwise refill on the idle tick: a fork now competes with the new isolate
            _refill(spares, ctrl, spare_profile)


def _refill(spares: list[tuple[int, socket.socket]], ctrl: socket.socket,
            profile: dict[str, Any] | None) -> None:
    """Keep children forked ahead of need, their event loop made and their guard's
    tenant-independent part installed for ``profile``: the fork and the child's start-up are then
    paid before the request, not during it."""
    while len(spares) < SPARES:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ctrl.close()
            ours.close()
            for _, spare in spares:
                spare.close()
            from emulator.isolates import child
            child.spare_main(theirs, profile)  # never returns
        theirs.close()
        spares.append((pid, ours))


def _discard(spares: list[tuple[int, socket.socket]]) -> None:
    """Let the spares go: each exits when it sees its channel close."""
    while spares:
        spares.pop()[1].close()


def _hand_to_spare(spares: list[tuple[int, socket.socket]], request: bytes,
                   fds: list[int]) -> int | None:
    while spares:
        pid, spare = spares.pop(0)
        try:
            socket.send_fds(spare, [request], fds)
            return pid
        except OSError:
            continue  # that spare died; try the next
        finally:
            spare.close()
    return None


def _reap(ctrl: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        from emulator.isolates import child, sandbox
        memory = sandbox._prepared.memory if sandbox._prepared is not None else None
        if memory is not None and memory.release(pid):
            code = child.EXIT_MEMORY_LIMIT  # the kernel's OOM killer, inside the isolate's limit
        try:
            ctrl.sendall(json.dumps({"exit": pid, "code": code}).encode())
        except OSError:
            return


if __name__ == "__main__":
    serve(int(sys.argv[1]), json.loads(sys.argv[2]) if len(sys.argv) > 2 else None)

"""Frames between two peers: over a stream socket (isolates) or in memory (inline mode).

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON. Frames written during
one loop iteration go out in one ``write`` (one system call under load instead of one per frame).
The in-memory transport carries the same bytes, so inline mode has the same semantics (values
are copied, never shared) and can be stepped through with pdb.

A frame's length is checked against the limit of its direction (``frames.FrameRules``) as soon as
its 4-byte prefix is read, before the frame is buffered: an isolate announcing a frame over 4 MiB
breaks the protocol with at most one read (16 KiB) held. On the host, each isolate's connection
has a :class:`~emulator.rpc.budget.LoopBudget`: when its frames have taken more than their share
of the event loop, reading from it stops for a while (``budget.py``).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any, Awaitable, Callable

from emulator.rpc.budget import LoopBudget
from emulator.rpc.errors import ConnectionLost, FrameTooLargeError, ProtocolError
from emulator.rpc.frames import FROM_HOST, FrameRules
from emulator.rpc.peer import Peer

_LENGTH = struct.Struct(">I")
# The read buffer kept per connection. Small on purpose: the host holds one per isolate, and
# 256 KiB buffers (above malloc's mmap threshold, then moved into the heap by its dynamic
# threshold) left the host at 88 MB instead of 40 MB after 400 tenants' isolates came and went.
# A longer frame doubles it for as long as it is held.
_READ_SIZE = 16 * 1024


class StreamTransport:
    """Frames over a stream socket. Incoming frames are handed to the peer from the protocol's
    ``data_received``, in the loop iteration that read them (no reader task to wake first), and
    whatever the peer answered inline goes out in that same iteration."""

    def __init__(self, transport: asyncio.Transport, protocol: "_FrameProtocol") -> None:
        self.writer = transport
        self._protocol = protocol
        self._out: list[bytes] = []
        self._scheduled: asyncio.Handle | None = None
        self.peer: Peer | None = None
        protocol.owner = self

    @classmethod
    async def open(cls, sock: socket.socket, rules: FrameRules = FROM_HOST, *,
                   budget: bool = False) -> "StreamTransport":
        """Frames over ``sock``; ``rules`` say what the other side may send, ``budget`` holds
        its frames to their share of the loop (the host's side of an isolate)."""
        transport, protocol = await asyncio.get_running_loop().create_connection(
            lambda: _FrameProtocol(rules, budget), sock=sock)
        return cls(transport, protocol)

    @property
    def budget(self) -> LoopBudget | None:
        return self._protocol.budget

    def write(self, data: bytes) -> None:
        self._out.append(_LENGTH.pack(len(data)))
        self._out.append(data)
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self.flush)

    def write_now(self, data: bytes) -> None:
        """Like :meth:`write`, handed to the operating system at once with whatever is queued
        (no flush scheduled for the next loop iteration)."""
        self._out.append(_LENGTH.pack(len(data)))
        self._out.append(data)
        self.flush()

    def flush(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._out and not self.writer.is_closing():
            self.writer.write(b"".join(self._out))
        self._out.clear()

    async def serve(self, peer: Peer, on_lost: Callable[[ConnectionLost | None],
                                                     Awaitable[BaseException]] | None = None) -> None:
        """Deliver frames to ``peer`` until the other side goes away; ``on_lost`` is told why
        the connection ended here (None: the other side closed it) and returns what calls still
        in flight fail with."""
        self.peer = peer
        told = peer.on_break   # whoever else wants to know, told after the connection is ended

        def on_break(error: ProtocolError) -> None:
            self._protocol.end(error)
            if told is not None:
                told(error)
        peer.on_break = on_break
        try:
            self._protocol.deliver()
            reason = await self._protocol.lost
        except asyncio.CancelledError:
            self.close()
            peer.close(ConnectionLost("the connection was closed by this side"))
            raise
        self.close()
        if reason is not None:
            peer.close(reason)
        peer.close(await on_lost(reason) if on_lost else
                   ConnectionLost("the other side closed the connection"))

    def close(self) -> None:
        try:
            self.flush()
            self.writer.close()
        except Exception:
            pass


class _FrameProtocol(asyncio.BufferedProtocol):
    """Splits the byte stream into frames. ``lost`` resolves when the connection ends: to None
    when the other side went away, or to the :class:`ConnectionLost` that ended it here.

    Bytes are read into one buffer kept for the connection: a read into a fresh bytes object
    allocates (and, at this size, maps and unmaps) memory on every frame."""

    def __init__(self, rules: FrameRules, budget: bool) -> None:
        self.owner: StreamTransport | None = None
        self.rules = rules
        self.budget = LoopBudget(time.perf_counter()) if budget else None
        self._buffer = bytearray(_READ_SIZE)
        self._used = 0
        self._resume: asyncio.TimerHandle | None = None   # set while reading is held back
        self.largest_buffer = _READ_SIZE   # how far the buffer ever grew (tests, benchmarks)
        self.lost: asyncio.Future[ConnectionLost | None] = \
            asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> memoryview:
        """The free room after the bytes held: grown when short (a long frame, whose length was
        checked when its prefix arrived: doubled, up to that frame and one read more), back to
        the usual size once empty."""
        size, used = len(self._buffer), self._used
        if used == 0 and size > 4 * _READ_SIZE:
            self._buffer = bytearray(_READ_SIZE)
        elif size - used < _READ_SIZE // 4:
            grown = 2 * size
            if used >= 4:  # the frame being read starts the buffer
                (length,) = _LENGTH.unpack_from(self._buffer, 0)
                if used < 4 + length <= 4 + self.rules.max_bytes:
                    grown = max(size + _READ_SIZE, min(grown, 4 + length + _READ_SIZE))
            self._buffer.extend(bytes(grown - size))
            self.largest_buffer = max(self.largest_buffer, grown)
        return memoryview(self._buffer)[self._used:]

    def buffer_updated(self, nbytes: int) -> None:
        self._used += nbytes
        self.deliver()

    def deliver(self) -> None:
        """Hand every complete frame to the peer (once there is one), then send what it queued.
        Each length is checked as soon as its prefix is here, peer or not."""
        owner = self.owner
        if self.lost.done() or self._resume is not None:
            return
        peer = owner.peer if owner is not None else None
        buffer, used, limit, budget = self._buffer, self._used, self.rules.max_bytes, self.budget
        clock = time.perf_counter
        last = clock() if budget is not None else 0.0
        start = 0
        try:
            while used - start >= 4:
                (length,) = _LENGTH.unpack_from(buffer, start)
                if length > limit:
                    raise self._too_large(length, peer)
                end = start + 4 + length
                if used < end or peer is None:
                    break
                frame = buffer[start + 4:end]
                start = end
                peer.receive(frame)
                if self.lost.done():
                    break
                if budget is not None:
                    now = clock()
                    pause = budget.charge(now - last, length, now)
                    last = now
                    if pause:
                        self._hold(pause)
                        break
        except ConnectionLost as exc:
            self.end(exc)
        finally:
            if start and not self.lost.done():  # moved within the buffer, never resized: the
                buffer[:used - start] = buffer[start:used]  # transport holds a view of it
                self._used = used - start
            if owner is not None:
                owner.flush()

    def _too_large(self, length: int, peer: Peer | None) -> ConnectionLost:
        problem = (f"a frame of {length:,} bytes is over the limit of {self.rules.max_bytes:,} "
                   f"bytes for a message from {self.rules.sender}")
        if self.rules.strict:
            return ProtocolError(f"{peer.name if peer else 'the other side'} broke the RPC "
                                 f"protocol: {problem}")
        return FrameTooLargeError(problem)

    def _hold(self, seconds: float) -> None:
        """Stop reading for ``seconds``; frames already read wait in the buffer."""
        transport = self.owner.writer if self.owner is not None else None
        if transport is not None:
            transport.pause_reading()
        self._resume = asyncio.get_running_loop().call_later(seconds, self._release)

    def _release(self) -> None:
        self._resume = None
        if self.lost.done():
            return
        transport = self.owner.writer if self.owner is not None else None
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
        self.deliver()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(None)

    def end(self, reason: ConnectionLost) -> None:
        """End the connection from this side (a protocol violation)."""
        self._end(reason)

    def _end(self, reason: ConnectionLost | None) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        # the protocol and its transports refer to each other: without this, a buffer grown
        # for a 4 MiB frame lives until the next full collection (a flood of them piled up)
        self._buffer, self._used = bytearray(), 0
        if not self.lost.done():
            self.lost.set_result(reason)
        if self.owner is not None:
            self.owner.writer.close()


class MemoryTransport:
    """One end of an in-memory pair; see :func:`memory_pair`."""

    def __init__(self) -> None:
        self.other: MemoryTransport | None = None
        self.peer: Peer | None = None

    def write(self, data: bytes) -> None:
        other = self.other
        if other is not None and other.peer is not None:
            asyncio.get_running_loop().call_soon(other._deliver, bytes(data))

    def _deliver(self, data: bytes) -> None:
        if self.peer is not None and self.peer.closed is None:
            if len(data) > self.peer.incoming.max_bytes:
                self.close(ProtocolError(f"{self.peer.name} broke the RPC protocol: a frame of "
                                         f"{len(data):,} bytes is over the limit of "
                                         f"{self.peer.incoming.max_bytes:,} bytes"))
                return
            self.peer.receive(data)

    def close(self, reason: BaseException | None = None) -> None:
        for end in (self, self.other):
            if end is not None and end.peer is not None:
                end.peer.close(reason or ConnectionLost("the in-memory connection was closed"))


def memory_pair(root_a: Any, root_b: Any, *, names: tuple[str, str] = ("a", "b"),
                proxies_a: dict | None = None, proxies_b: dict | None = None,
                rules: tuple[FrameRules, FrameRules] = (FROM_HOST, FROM_HOST)) -> tuple[Peer, Peer]:
    """Two connected peers in this process; ``peer_a.remote`` is ``root_b`` seen through RPC.
    ``rules``: what each side may receive (each side also checks what it sends against what the
    other may receive, when the other's rules are strict)."""
    end_a, end_b = MemoryTransport(), MemoryTransport()
    end_a.other, end_b.other = end_b, end_a
    in_a, in_b = rules
    peer_a = Peer(end_a.write, root_a, name=names[0], proxies=proxies_a, incoming=in_a,
                  outgoing=in_b if in_b.strict else None)
    peer_b = Peer(end_b.write, root_b, name=names[1], proxies=proxies_b, incoming=in_b,
                  outgoing=in_a if in_a.strict else None)
    end_a.peer, end_b.peer = peer_a, peer_b
    peer_a.on_break = end_a.close
    peer_b.on_break = end_b.close
    return peer_a, peer_b

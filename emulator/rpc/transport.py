"""Frames between two peers: over a stream socket (isolates) or in memory (inline mode).

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON. Frames written during
one loop iteration go out in one ``write`` (one system call under load instead of one per frame).
The in-memory transport carries the same bytes, so inline mode has the same semantics (values
are copied, never shared) and can be stepped through with pdb.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, Awaitable, Callable

from emulator.rpc.peer import ConnectionLost, Peer

_LENGTH = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
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
    async def open(cls, sock: socket.socket) -> "StreamTransport":
        transport, protocol = await asyncio.get_running_loop().create_connection(
            _FrameProtocol, sock=sock)
        return cls(transport, protocol)

    def write(self, data: bytes) -> None:
        self._out.append(_LENGTH.pack(len(data)))
        self._out.append(data)
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._out and not self.writer.is_closing():
            self.writer.write(b"".join(self._out))
        self._out.clear()

    async def serve(self, peer: Peer,
                    on_lost: Callable[[], Awaitable[BaseException]] | None = None) -> None:
        """Deliver frames to ``peer`` until the other side goes away."""
        self.peer = peer
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
        peer.close(await on_lost() if on_lost else
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

    def __init__(self) -> None:
        self.owner: StreamTransport | None = None
        self._buffer = bytearray(_READ_SIZE)
        self._used = 0
        self.lost: asyncio.Future[ConnectionLost | None] = \
            asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> memoryview:
        """The free room after the bytes held: doubled when short (a long frame), back to the
        usual size once empty."""
        if self._used == 0 and len(self._buffer) > 4 * _READ_SIZE:
            self._buffer = bytearray(_READ_SIZE)
        elif len(self._buffer) - self._used < _READ_SIZE // 4:
            self._buffer.extend(bytes(len(self._buffer)))
        return memoryview(self._buffer)[self._used:]

    def buffer_updated(self, nbytes: int) -> None:
        self._used += nbytes
        self.deliver()

    def deliver(self) -> None:
        """Hand every complete frame to the peer (once there is one), then send what it queued."""
        owner = self.owner
        peer = owner.peer if owner is not None else None
        if peer is None or self.lost.done():
            return
        buffer, used = self._buffer, self._used
        start = 0
        try:
            while used - start >= 4:
                (length,) = _LENGTH.unpack_from(buffer, start)
                if length > MAX_FRAME:
                    raise ConnectionLost(f"frame of {length} bytes is over the {MAX_FRAME} byte "
                                         "limit", code="rpc.frame_too_large")
                end = start + 4 + length
                if used < end:
                    break
                frame = buffer[start + 4:end]
                start = end
                peer.receive(frame)
        except ConnectionLost as exc:
            self._end(exc)
        finally:
            if start:  # moved within the buffer, never resized: the transport holds a view of it
                buffer[:used - start] = buffer[start:used]
                self._used = used - start
            owner.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(None)

    def _end(self, reason: ConnectionLost | None) -> None:
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
            self.peer.receive(data)

    def close(self, reason: BaseException | None = None) -> None:
        for end in (self, self.other):
            if end is not None and end.peer is not None:
                end.peer.close(reason or ConnectionLost("the in-memory connection was closed"))


def memory_pair(root_a: Any, root_b: Any, *, names: tuple[str, str] = ("a", "b"),
                proxies_a: dict | None = None, proxies_b: dict | None = None) -> tuple[Peer, Peer]:
    """Two connected peers in this process; ``peer_a.remote`` is ``root_b`` seen through RPC."""
    end_a, end_b = MemoryTransport(), MemoryTransport()
    end_a.other, end_b.other = end_b, end_a
    peer_a = Peer(end_a.write, root_a, name=names[0], proxies=proxies_a)
    peer_b = Peer(end_b.write, root_b, name=names[1], proxies=proxies_b)
    end_a.peer, end_b.peer = peer_a, peer_b
    return peer_a, peer_b

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


class StreamTransport:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._out: list[bytes] = []
        self._scheduled = False
        self.peer: Peer | None = None

    @classmethod
    async def open(cls, sock: socket.socket) -> "StreamTransport":
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_FRAME)
        return cls(reader, writer)

    def write(self, data: bytes) -> None:
        self._out.append(_LENGTH.pack(len(data)))
        self._out.append(data)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._out and not self.writer.is_closing():
            self.writer.write(b"".join(self._out))
        self._out.clear()

    async def serve(self, peer: Peer,
                    on_lost: Callable[[], Awaitable[BaseException]] | None = None) -> None:
        """Read frames into ``peer`` until the other side goes away."""
        self.peer = peer
        try:
            while True:
                header = await self.reader.readexactly(4)
                (length,) = _LENGTH.unpack(header)
                if length > MAX_FRAME:
                    raise ConnectionLost(f"frame of {length} bytes is over the {MAX_FRAME} byte limit",
                                         code="rpc.frame_too_large")
                peer.receive(await self.reader.readexactly(length))
        except asyncio.CancelledError:
            self.close()
            peer.close(ConnectionLost("the connection was closed by this side"))
            raise
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except ConnectionLost as exc:
            peer.close(exc)
        self.close()
        peer.close(await on_lost() if on_lost else
                   ConnectionLost("the other side closed the connection"))

    def close(self) -> None:
        try:
            self.flush()
            self.writer.close()
        except Exception:
            pass


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

"""What an isolate writes to its descriptors 1 and 2, read by the host line by line.

``print`` and ``logging`` in tenant code go to the host over RPC, with the step they came from.
What reaches the descriptors themselves (native code, ``os.write(2, ...)``, a tenant that put
``sys.__stderr__`` back) arrives here, on a pipe of the isolate's own: never the host's terminal,
where it could type commands into the developer's shell. Lines are cut at 16 KiB, and an isolate
gets ``QUOTA_BYTES`` in all; past that one line says the output was truncated and the rest is
read and dropped (reading on keeps a writer from blocking on a full pipe).
"""

from __future__ import annotations

import asyncio
import os
from typing import Callable

LogSink = Callable[[str, str, str], None]  # (loader key, level, message)

LINE_BYTES = 16 * 1024
QUOTA_BYTES = 1024 * 1024


class OutputReader(asyncio.Protocol):
    """Reads one isolate's output pipe into the pool's log sink."""

    def __init__(self, key: str, sink: LogSink | None) -> None:
        self.key = key
        self._sink = sink
        self._pending = b""
        self.received = 0
        self.dropped = 0
        self.transport: asyncio.ReadTransport | None = None

    @classmethod
    async def open(cls, fd: int, key: str, sink: LogSink | None) -> "OutputReader":
        reader = cls(key, sink)
        pipe = os.fdopen(fd, "rb", buffering=0)
        try:
            await asyncio.get_running_loop().connect_read_pipe(lambda: reader, pipe)
        except BaseException:
            pipe.close()
            raise
        return reader

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        room = QUOTA_BYTES - self.received
        if room <= 0:
            self.dropped += len(data)
            return
        kept = data[:room]
        self.received += len(kept)
        self.dropped += len(data) - len(kept)
        lines = (self._pending + kept).split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > LINE_BYTES:
            lines.append(self._pending)
            self._pending = b""
        for line in lines:
            self._emit(line)
        if self.received >= QUOTA_BYTES:
            self._flush()
            self._emit(f"[output truncated: this isolate wrote more than {QUOTA_BYTES:,} bytes "
                       "to its standard output and error; the rest is dropped]".encode())

    def eof_received(self) -> bool:
        self._flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._flush()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _flush(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = b""

    def _emit(self, line: bytes) -> None:
        if self._sink is None:
            return
        text = line[:LINE_BYTES].decode("utf-8", errors="replace").rstrip("\r")
        if len(line) > LINE_BYTES:
            text += f" [line cut at {LINE_BYTES:,} bytes]"
        self._sink(self.key, "output", text)

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


class OutputReader:
    """Reads one isolate's output pipe into the pool's log sink. Registered with the event loop
    directly (no transport to wait for): a load does not pay a loop iteration for it."""

    def __init__(self, fd: int, key: str, sink: LogSink | None) -> None:
        self.key = key
        self._sink = sink
        self._fd = fd
        self._pending = b""
        self.received = 0
        self.dropped = 0
        os.set_blocking(fd, False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)

    @classmethod
    def start(cls, fd: int, key: str, sink: LogSink | None) -> "OutputReader":
        return cls(fd, key, sink)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.data_received(data)
        else:
            self._flush()
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            self._flush()
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

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

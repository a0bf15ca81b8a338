"""Frames from an isolate over a real socket pair: the length is refused on its prefix, the
structure of a large frame before it is parsed, nesting without a RecursionError, and a
connection whose frames take more than their share of the event loop is read less often
(``rpc/frames.py``, ``rpc/budget.py``)."""

import asyncio
import json
import socket
import struct
import time

import pytest

from emulator.rpc.errors import ProtocolError
from emulator.rpc.frames import (FROM_ISOLATE, ISOLATE_FRAME_BYTES, MAX_DEPTH, MAX_INT_DIGITS,
                                 SCAN_FROM_BYTES, decode, is_deeper_than)
from emulator.rpc.errors import ProtocolViolation
from emulator.rpc.peer import Peer
from emulator.rpc.target import RpcTarget
from emulator.rpc.transport import StreamTransport


class Host(RpcTarget):
    def __init__(self) -> None:
        self.lines = 0

    def log(self, level: str, message: str) -> None:
        self.lines += 1


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


async def _host_side(sock: socket.socket) -> tuple[StreamTransport, Peer, Host, asyncio.Task]:
    transport = await StreamTransport.open(sock, FROM_ISOLATE, budget=True)
    root = Host()
    peer = Peer(transport.write, root, name="the isolate of 'test'", incoming=FROM_ISOLATE)
    task = asyncio.get_running_loop().create_task(transport.serve(peer))
    return transport, peer, root, task


async def _send_all(sock: socket.socket, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, data)
    except (BrokenPipeError, ConnectionResetError):
        pass                                   # the host hung up: what the test expects


def test_a_length_over_the_limit_ends_the_connection_with_one_read_held():
    async def main():
        host_sock, isolate_sock = socket.socketpair()
        isolate_sock.setblocking(False)
        transport, peer, _root, task = await _host_side(host_sock)
        sender = asyncio.ensure_future(_send_all(
            isolate_sock, struct.pack(">I", 63 * 1024 * 1024) + b"x" * (8 * 1024 * 1024)))
        await asyncio.wait_for(task, 10)
        sender.cancel()
        isolate_sock.close()
        return peer.closed, transport._protocol.largest_buffer
    reason, buffered = asyncio.run(main())
    assert isinstance(reason, ProtocolError) and reason.code == "isolate.protocol"
    assert "a frame of 66,060,288 bytes is over the limit of 4,194,304 bytes" in reason.message
    assert buffered <= 64 * 1024


@pytest.mark.parametrize("unit, refusal", [
    (b"{},", "lists and objects ('[' and '{'), over the limit of 65,536"),
    (b"[],", "lists and objects ('[' and '{'), over the limit of 65,536"),
    (b"0,", "separators (',' and ':'), over the limit of 262,144"),
    (b'"":0,', "separators (',' and ':'), over the limit of 262,144"),
])
def test_a_full_size_frame_of_tiny_values_is_refused_before_it_is_parsed(unit, refusal):
    count = (ISOLATE_FRAME_BYTES - 2) // len(unit)
    data = b"[" + unit * (count - 1) + unit[:-1] + b"]" if unit != b'"":0,' else \
        b"{" + unit * (count - 1) + unit[:-1] + b"}"
    started = time.perf_counter()
    with pytest.raises(ProtocolViolation) as info:
        decode(data, FROM_ISOLATE)
    assert refusal in str(info.value)
    assert time.perf_counter() - started < 0.5     # counting, not parsing: a few ms


def test_a_large_frame_may_not_hold_an_integer_of_more_than_1000_digits():
    """Parsing an integer is quadratic in its digits: from 64 KiB up a frame's integers are held
    to 1,000 digits (a smaller one holds too few to matter, up to Python's own 4,300), and a
    string of digits is only text."""
    number = b"9" * (MAX_INT_DIGITS + 1)
    padding = b'"' + b"x" * SCAN_FROM_BYTES + b'"'

    def frame_with(value: bytes, pad: bytes = padding) -> bytes:
        return b'{"t":"send","ref":0,"m":"log","a":["info",' + value + b"," + pad + b"]}"
    with pytest.raises(ProtocolViolation, match="an integer of 1,001 digits is over the limit"):
        decode(frame_with(number), FROM_ISOLATE)
    assert decode(frame_with(b'"' + number + b'"'), FROM_ISOLATE)[0]["a"][1] == number.decode()
    assert decode(frame_with(number, b'"short"'), FROM_ISOLATE)[0]["a"][1] == int(number)
    with pytest.raises(ProtocolViolation, match="Exceeds the limit"):
        decode(frame_with(b"9" * 5000, b'"short"'), FROM_ISOLATE)


def test_a_full_size_frame_of_text_is_accepted():
    """Text counts too (a step result is JSON in a string, parsed again to be checked): prose
    with a comma every few words passes."""
    data = json.dumps({"t": "send", "ref": 0, "m": "log",
                       "a": ["info", "a few plain words, " * (ISOLATE_FRAME_BYTES // 20)]}).encode()
    assert SCAN_FROM_BYTES < len(data) <= ISOLATE_FRAME_BYTES
    message, plain = decode(data, FROM_ISOLATE)
    assert plain and message["m"] == "log"


@pytest.mark.parametrize("depth, refused", [(MAX_DEPTH, False), (MAX_DEPTH + 1, True),
                                            (50_000, True)])
def test_nesting_is_bounded_without_a_recursion_error(depth, refused):
    data = b"[" * depth + b"]" * depth
    deep_text = json.dumps(["[" * 500]).encode()     # brackets in a string nest nothing
    assert decode(deep_text, FROM_ISOLATE)[0] == ["[" * 500]
    if refused:
        with pytest.raises(ProtocolViolation, match=f"deeper than {MAX_DEPTH} levels"):
            decode(data, FROM_ISOLATE)
    else:
        assert decode(data, FROM_ISOLATE)[0] is not None
        assert not is_deeper_than(json.loads(data), MAX_DEPTH)


def test_a_connection_flooding_small_frames_is_paused_and_its_neighbour_is_not():
    """One connection writes log notices as fast as it can; another makes calls one at a time.
    The flood is paused (its share of the loop is a quarter) and the other's calls answer."""
    async def main():
        flood_host, flood_isolate = socket.socketpair()
        quiet_host, quiet_isolate = socket.socketpair()
        flood_isolate.setblocking(False)
        quiet_isolate.setblocking(False)
        flood, _, flood_root, flood_task = await _host_side(flood_host)
        quiet, _, quiet_root, quiet_task = await _host_side(quiet_host)
        notice = frame(json.dumps({"t": "send", "ref": 0, "m": "log",
                                   "a": ["info", "x" * 200]}).encode())
        stop = asyncio.Event()

        async def flooder():
            burst = notice * 2000
            while not stop.is_set():
                await _send_all(flood_isolate, burst)

        loop = asyncio.get_running_loop()
        flooding = loop.create_task(flooder())
        call = frame(json.dumps({"t": "send", "ref": 0, "m": "log", "a": ["info", "q"]}).encode())
        gaps = []
        for _ in range(200):
            before = quiet_root.lines
            started = time.perf_counter()
            await _send_all(quiet_isolate, call)
            deadline = loop.time() + 5
            while quiet_root.lines == before and loop.time() < deadline:
                await asyncio.sleep(0)
            gaps.append(time.perf_counter() - started)
        stop.set()
        flooding.cancel()
        for sock in (flood_isolate, quiet_isolate):
            sock.close()
        await asyncio.wait({flood_task, quiet_task}, timeout=5)
        return flood.budget, quiet.budget, flood_root.lines, sorted(gaps)
    flood_budget, quiet_budget, flooded, gaps = asyncio.run(main())
    assert flood_budget.pauses > 0 and flooded > 1000
    assert quiet_budget.pauses == 0
    assert gaps[int(len(gaps) * 0.99) - 1] < 0.05, gaps[-5:]

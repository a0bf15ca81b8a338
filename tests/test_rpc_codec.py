"""The RPC codec and peer: what crosses by value, by reference or not at all, and that the fast
paths for plain JSON (no walk on encode, no decode of a frame without tags) change nothing."""

from __future__ import annotations

import asyncio
import enum
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from emulator.rpc import codec
from emulator.rpc.peer import Peer
from emulator.rpc.target import RpcTarget
from emulator.rpc.transport import memory_pair


class Echo(RpcTarget):
    """Returns what it is given, as the other side decoded it."""

    def echo(self, value: Any) -> Any:
        return value

    async def echo_later(self, value: Any) -> Any:
        await asyncio.sleep(0)
        return value

    def kind(self, value: Any) -> str:
        return type(value).__name__


class Level(enum.IntEnum):
    HIGH = 2


def roundtrip(method: str, value: Any) -> Any:
    async def main() -> Any:
        here, _there = memory_pair(None, Echo())
        return await getattr(here.remote, method)(value)
    return asyncio.run(main())


def wire(value: Any) -> str:
    return json.dumps(codec.encode(value, Peer(lambda data: None)), separators=(",", ":"))


@pytest.mark.parametrize("method", ["echo", "echo_later"])
@pytest.mark.parametrize("value", [
    None, True, 3, 2.5, "text", "$rpc", [1, [2, [3]]], {"a": {"b": [None, "c"]}},
    {"$rpc": "date", "ms": 0}, {"a": [{"$rpc": 1, "v": 2}]}, 'say "$rpc"', "\u0001control",
])
def test_json_values_come_back_equal(method: str, value: Any) -> None:
    assert roundtrip(method, value) == value


def test_tuples_are_sent_as_lists_and_subclasses_as_their_json() -> None:
    assert roundtrip("echo", (1, (2, 3))) == [1, [2, 3]]
    assert wire((1, (2, 3))) == "[1,[2,3]]"
    assert roundtrip("echo", {"level": Level.HIGH}) == {"level": 2}


def test_datetimes_and_bytes_cross_by_value_inside_plain_values() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678000)
    sent = {"at": when, "aware": when.replace(tzinfo=timezone.utc), "raw": [b"\x00\xff"]}
    assert roundtrip("echo", sent) == {"at": when, "aware": when, "raw": [b"\x00\xff"]}


def test_an_rpc_target_crosses_by_reference() -> None:
    async def main() -> Any:
        here, _there = memory_pair(None, Echo())
        inner = Echo()
        return await here.remote.kind({"target": [inner]}), await here.remote.kind([inner])
    assert asyncio.run(main()) == ("dict", "list")
    assert roundtrip("kind", Echo()) == "Stub"


@pytest.mark.parametrize(("value", "message"), [
    ({1: "a"}, "Cannot send a dict with a int key at value over RPC"),
    ({"a": {True: 1}}, "Cannot send a dict with a bool key at value['a'] over RPC"),
    ([1, {"x": object()}], "Cannot send object at value[1]['x'] over RPC"),
    ({"s": {1, 2}}, "Cannot send set at value['s'] over RPC"),
])
def test_refusals_name_the_type_and_the_path(value: Any, message: str) -> None:
    with pytest.raises(codec.RpcTypeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        codec.encode(value, Peer(lambda data: None))


def test_nan_is_refused_when_the_frame_is_written() -> None:
    async def main() -> None:
        here, _there = memory_pair(None, Echo())
        await here.remote.echo([float("nan")])
    with pytest.raises(ValueError, match="Out of range float values"):
        asyncio.run(main())


def test_only_text_without_tags_or_escapes_skips_decoding() -> None:
    assert codec.is_plain_text('{"a":[1,"$rp"]}')
    assert not codec.is_plain_text(wire({"$rpc": 1}))
    assert not codec.is_plain_text(wire(datetime(2026, 1, 1)))
    assert not codec.is_plain_text('{"\\u0024rpc":"date","ms":0}')


def test_calls_start_in_arrival_order() -> None:
    """A synchronous method runs as its frame is read; it still waits for a coroutine method
    called before it to start."""
    order: list[str] = []

    class Recorder(RpcTarget):
        async def first(self) -> None:
            order.append("first")

        def second(self) -> None:
            order.append("second")

    async def main() -> None:
        here, _there = memory_pair(None, Recorder())
        await asyncio.gather(here.remote.first(), here.remote.second())
    asyncio.run(main())
    assert order == ["first", "second"]


def test_an_isolate_fault_code_from_the_other_side_is_not_believed() -> None:
    """Only the host says an isolate crashed: an error claiming ``isolate.*`` from the other
    side keeps its text and loses the code, so it is the tenant's own error, not a fault."""
    from emulator.rpc.peer import error_from_wire
    forged = error_from_wire({"name": "Whatever", "message": "I crashed, honestly",
                              "code": "isolate.crashed"})
    assert getattr(forged, "code", None) is None and str(forged) == "I crashed, honestly"
    kept = error_from_wire({"name": "X", "message": "m", "code": "instance.not_found"})
    assert kept.code == "instance.not_found"


class Holder(RpcTarget):
    """Hands out one object by reference."""

    def __init__(self) -> None:
        self.inner = Echo()

    def give(self) -> Any:
        return self.inner


def test_a_released_stub_is_let_go_of_at_once_and_cannot_be_called() -> None:
    async def main() -> tuple[int, int, bool, str]:
        here, there = memory_pair(None, Holder())
        stub = await here.remote.give()
        again = await here.remote.give()          # the same object twice: one stub, counted twice
        held = there.export_count
        here.release(stub)
        for _ in range(10):                        # the drop is a one-way frame
            await asyncio.sleep(0)
        with pytest.raises(AttributeError) as refused:
            stub.echo
        return held, there.export_count, again is stub, str(refused.value)
    held, after, same, message = asyncio.run(main())
    assert same and held == 2 and after == 1      # the root is all the other side still exports
    assert "released" in message

"""Encoding of values for the wire, and decoding on the other side.

Plain JSON values stay as they are. Everything else becomes a tagged object ``{"$rpc": tag, ...}``:
``date`` (naive UTC datetime, epoch ms), ``bytes`` (base64), ``val`` (a registered value type),
``ref`` (an RpcTarget exported by the sender), ``back`` (a stub of the receiver's own object,
coming home) and ``dict`` (a user dict that itself has a ``"$rpc"`` key, escaped).
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from emulator.error_codes import Code
from emulator.rpc.target import RpcTarget, value_types

if TYPE_CHECKING:
    from emulator.rpc.peer import Peer

TAG = "$rpc"
_SCALARS = (str, int, float, bool, type(None))
_PLAIN_SCALARS = frozenset(_SCALARS)
#: How a tag key is spelled in a frame (unless escaped).
MARK = f'"{TAG}"'


class RpcTypeError(TypeError):
    """A value that cannot cross the isolate boundary."""

    code = Code.RPC_UNSERIALISABLE


def _is_plain(value: Any) -> bool:
    """True when ``value`` is made of exact JSON types only (tuples allowed: they are sent as
    lists), with string keys and no ``"$rpc"`` key: :func:`encode` would return an equal copy,
    so the value can go to ``json.dumps`` as it is. Checks types exactly, without building paths
    or copies, which is what makes it cheaper than the walk in :func:`_encode`."""
    cls = type(value)
    if cls in _PLAIN_SCALARS:
        return True
    if cls is list or cls is tuple:
        for item in value:
            if type(item) not in _PLAIN_SCALARS and not _is_plain(item):
                return False
        return True
    if cls is dict:
        if TAG in value:
            return False
        for key, item in value.items():
            if type(key) is not str or (type(item) not in _PLAIN_SCALARS and not _is_plain(item)):
                return False
        return True
    return False


def encode(value: Any, peer: "Peer", path: str = "value") -> Any:
    """``value`` as JSON values, with tagged objects for everything JSON cannot carry."""
    if _is_plain(value):
        return value
    return _encode(value, peer, path)


def _encode(value: Any, peer: "Peer", path: str) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [v if type(v) in _PLAIN_SCALARS else _encode(v, peer, f"{path}[{i}]")
                for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise RpcTypeError(f"Cannot send a dict with a {type(key).__name__} key at {path} "
                                   "over RPC: keys must be strings")
            out[key] = (item if type(item) in _PLAIN_SCALARS
                        else _encode(item, peer, f"{path}[{key!r}]"))
        return {TAG: "dict", "v": out} if TAG in out else out
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return {TAG: "date", "ms": round(aware.timestamp() * 1000)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {TAG: "bytes", "b64": base64.b64encode(bytes(value)).decode("ascii")}
    from emulator.rpc.peer import Stub
    if isinstance(value, Stub):
        if value._peer is peer:
            return {TAG: "back", "id": value._ref}
        raise RpcTypeError(f"Cannot forward a stub received from another connection at {path}")
    tag = getattr(type(value), "__rpc_tag__", None)
    if tag is not None and tag in value_types():
        return {TAG: "val", "tag": tag, "v": encode(value.to_rpc(), peer, f"{path}.{tag}")}
    if isinstance(value, RpcTarget):
        return peer.export(value, path)
    proxy = getattr(value, "__rpc_proxy__", None)
    if proxy is not None:
        return peer.export(proxy(), path)
    raise RpcTypeError(f"Cannot send {type(value).__name__} at {path} over RPC: only JSON values, "
                       "datetimes, bytes and RpcTarget objects can cross the boundary")


def is_plain_text(text: str) -> bool:
    """Whether the JSON ``text`` certainly holds no tagged object, so that :func:`decode` would
    return its values unchanged: every tag is a ``"$rpc"`` key, spelled so unless its characters
    were written as ``\\u`` escapes (which this side never writes, and the check refuses)."""
    return MARK not in text and "\\u" not in text


def decode(data: Any, peer: "Peer") -> Any:
    if isinstance(data, list):
        return [decode(v, peer) for v in data]
    if not isinstance(data, dict):
        return data
    tag = data.get(TAG)
    if tag is None:
        return {k: decode(v, peer) for k, v in data.items()}
    if tag == "date":
        return datetime.fromtimestamp(data["ms"] / 1000, tz=timezone.utc).replace(tzinfo=None)
    if tag == "bytes":
        return base64.b64decode(data["b64"])
    if tag == "val":
        cls = value_types().get(data["tag"])
        if cls is None:
            raise RpcTypeError(f"Unknown value type {data['tag']!r} received over RPC")
        return cls.from_rpc(decode(data["v"], peer))  # type: ignore[attr-defined]
    if tag == "ref":
        return peer.import_ref(data)
    if tag == "back":
        return peer.local(data["id"])
    if tag == "dict":
        return {k: decode(v, peer) for k, v in data["v"].items()}
    raise RpcTypeError(f"Unknown RPC tag {tag!r}")

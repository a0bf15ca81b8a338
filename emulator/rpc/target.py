"""What may cross the isolate boundary, and how.

- JSON values (and tuples, sent as lists), ``datetime`` (naive UTC) and ``bytes`` travel **by
  value**, as do classes registered with :func:`value_type` (``Request``, ``Response``).
- Objects that subclass :class:`RpcTarget` travel **by reference**: the other side gets a stub whose
  method calls travel back. Only public methods (no leading underscore) defined on the class can be
  called. Attributes named in ``__rpc_props__`` are copied to the stub when it is sent (an
  instance stub's ``id``).
- Anything else is refused with an error naming its type and where it was found, as the platform
  refuses an object that is neither serialisable nor an ``RpcTarget``.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, TypeVar


class RpcTarget:
    """Subclass to pass an object by reference across RPC."""

    #: Attributes copied by value into the remote stub when this object is sent.
    __rpc_props__: ClassVar[tuple[str, ...]] = ()


T = TypeVar("T")
_VALUE_TYPES: dict[str, type] = {}


def value_type(tag: str) -> Callable[[type[T]], type[T]]:
    """Register a class that crosses by value. It must define ``to_rpc(self) -> dict`` (of
    RPC-encodable values) and ``from_rpc(cls, data) -> instance``."""
    def register(cls: type[T]) -> type[T]:
        cls.__rpc_tag__ = tag  # type: ignore[attr-defined]
        _VALUE_TYPES[tag] = cls
        return cls
    return register


def value_types() -> dict[str, type]:
    return _VALUE_TYPES


def is_value_type(value: Any) -> bool:
    return getattr(type(value), "__rpc_tag__", None) in _VALUE_TYPES

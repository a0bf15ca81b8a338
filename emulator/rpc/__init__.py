"""Capability RPC between the host and isolates (and in memory, for ``--isolation inline``)."""

from emulator.rpc.target import RpcTarget, value_type

__all__ = ["RpcTarget", "value_type"]

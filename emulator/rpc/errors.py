"""Why an RPC connection ended: the other side went away, or sent what this protocol never sends.

Two kinds of trouble reach a peer from the other side, and they are answered differently:

- a call whose values a method refuses (a step name the platform rejects, a sleep past 365 days):
  the method raises one of the coded errors of ``emulator.errors`` and the caller gets it back,
  as it would from the platform; the connection stays up;
- a :class:`ProtocolViolation`: bytes, a message or arguments that our own side of the protocol
  never produces (an oversized or undecodable frame, a message of the wrong shape, a call to a
  method the object does not offer, an argument of the wrong type where the runtime always sends
  one type). Only a sender that bypassed the runtime sends these, and nothing it said can be
  trusted after that: the receiving peer ends the connection with a :class:`ProtocolError`, every
  call in flight on it fails with that error, and the host kills the isolate.
"""

from __future__ import annotations

from emulator.error_codes import Code


class ConnectionLost(Exception):
    """The other side is gone; the class (and its ``code``) says why, when it is known: by
    default an isolate that died (``isolate.crashed``)."""

    code: Code = Code.ISOLATE_CRASHED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(ConnectionLost):
    """The connection was ended because the other side broke the protocol (``isolate.protocol``).
    Calls in flight fail with it; the engine counts it as an isolate fault of the attempt."""

    code = Code.ISOLATE_PROTOCOL


class CpuLimitError(ConnectionLost):
    """The isolate ``key`` was stopped: a call held the CPU past the limit of ``limit_ms``."""

    code = Code.ISOLATE_CPU_LIMIT

    def __init__(self, *, key: str, limit_ms: int) -> None:
        self.key, self.limit_ms = key, limit_ms
        super().__init__(f"the isolate of '{key}' was stopped: a call held the CPU longer than "
                         f"the limit of {limit_ms} ms")


class MemoryLimitError(ConnectionLost):
    """The isolate ``key`` ran out of memory (its limit: ``limit_mb``)."""

    code = Code.ISOLATE_MEMORY_LIMIT

    def __init__(self, *, key: str, limit_mb: int) -> None:
        self.key, self.limit_mb = key, limit_mb
        super().__init__(f"the isolate of '{key}' ran out of memory (limit {limit_mb} MiB)")


class FrameTooLargeError(ConnectionLost):
    """The other side sent a frame over this connection's bound (an isolate that does is
    breaking the protocol instead: :class:`ProtocolError`)."""

    code = Code.RPC_FRAME_TOO_LARGE


class ProtocolViolation(Exception):
    """Raised by code reading what the other side sent when it is not something our side ever
    sends; the peer turns it into a :class:`ProtocolError` naming the sender."""

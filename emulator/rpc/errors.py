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


class ConnectionLost(Exception):
    """The other side is gone; carries the reason (an isolate fault) when it is known."""

    def __init__(self, message: str, code: str = "isolate.crashed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ProtocolError(ConnectionLost):
    """The connection was ended because the other side broke the protocol (``isolate.protocol``).
    Calls in flight fail with it; the engine counts it as an isolate fault of the attempt."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="isolate.protocol")


class ProtocolViolation(Exception):
    """Raised by code reading what the other side sent when it is not something our side ever
    sends; the peer turns it into a :class:`ProtocolError` naming the sender."""

"""The exceptions syncws raises.

One tree, so ``except syncws.WebSocketError`` catches everything the library
raises on its own account::

    WebSocketError
     +-- ConnectionClosed        the connection is closed (has .code, .reason)
     +-- HandshakeError          the opening handshake was refused (also a ValueError)
     +-- PayloadTooBig           a message was over max_payload_length
     +-- InvalidStateError       the call does not fit the connection's state

Wrong arguments raise the builtin ``TypeError`` / ``ValueError`` at once, and
a blocking call that runs out of time raises the builtin ``TimeoutError``.
"""

from __future__ import annotations

__all__ = [
    "ConnectionClosed",
    "HandshakeError",
    "InvalidStateError",
    "PayloadTooBig",
    "WebSocketError",
]


class WebSocketError(Exception):
    """Base class of every exception syncws raises on its own account."""


class ConnectionClosed(WebSocketError):
    """The WebSocket connection is closed.

    ``code`` is the close code the connection ended with (1006 when it ended
    without a closing handshake) and ``reason`` the close reason.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class HandshakeError(WebSocketError, ValueError):
    """The server refused the opening handshake.

    ``status`` is the HTTP status it answered with (0 when it did not answer
    with HTTP at all) and ``body`` the response body.
    """

    def __init__(self, message: str, status: int = 0, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class PayloadTooBig(WebSocketError):
    """A received message was larger than ``max_payload_length``."""


class InvalidStateError(WebSocketError):
    """The call does not fit the connection's state (for example sending before open)."""

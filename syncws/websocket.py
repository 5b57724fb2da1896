"""``ServerWebSocket``: what handlers get as ``ws``."""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from . import _frames
from ._cork import CORKS, Part, end_cork, queue_part, start_cork
from ._deflate import MIN_COMPRESS_SIZE
from ._frames import OP_BINARY, OP_PING, OP_PONG, encode_frame, frame_header
from ._pubsub import check_topic
from ._ws_conn import DROPPED, send_result
from .types import DataT as T
from .types import ReadyState

if TYPE_CHECKING:
    from ._ws_conn import WsConnection
    from .server import Server

__all__ = ["ServerWebSocket"]

R = TypeVar("R")

# How much of ws.data repr(ws) shows: enough to tell sessions apart.
_DATA_REPR = reprlib.Repr()
_DATA_REPR.maxstring = _DATA_REPR.maxother = 80

# From this size on, a payload sent plain is queued as it is, not copied into
# its frame (a 64 KiB echo went 1.2-1.3x faster with it).
UNCOPIED_PAYLOAD_SIZE = 16 * 1024


def check_compress(compress: object) -> bool:
    """``compress`` itself, or ``TypeError`` unless it is a bool (``server.publish`` too)."""
    if not isinstance(compress, bool):
        raise TypeError(f"compress must be a bool, not {type(compress).__name__}")
    return compress


class ServerWebSocket(Generic[T]):
    """One server-side WebSocket connection, as Bun's ``ServerWebSocket``.

    Every method is thread-safe and never blocks: sends are queued on the
    connection's outbound buffer and written by the I/O loop. ``data`` is
    what ``server.upgrade(req, data=...)`` attached, free for the
    application to read and replace.
    """

    __slots__ = ("__weakref__", "_conn", "_server", "data")

    def __init__(self, conn: WsConnection, server: Server[T], data: T) -> None:
        self._conn = conn
        self._server = server
        self.data: T = data

    if not TYPE_CHECKING:  # (a type checker already refuses unknown attributes)
        def __setattr__(self, name, value):
            try:
                object.__setattr__(self, name, value)
            except AttributeError:
                # ws.user = ... is how other libraries keep per-connection state.
                raise AttributeError(
                    f"'ServerWebSocket' object has no attribute {name!r}: keep per-connection "
                    f"state in ws.data (server.upgrade(req, data={{...}}), then "
                    f"ws.data[{name!r}] = ...)") from None

    # -- sending ------------------------------------------------------------

    def send(self, message: str | bytes | bytearray | memoryview, compress: bool = False) -> int:
        """Send a text (``str``) or binary (bytes-like) message.

        Returns the payload length in bytes when queued, -1 when queued but
        the connection is now over its backpressure limit (wait for
        ``drain``), 0 when dropped (closed, or already over the limit).
        """
        if message.__class__ is bytes:
            return self._send(OP_BINARY, message, compress)
        opcode, payload = _frames.message_payload(message)
        return self._send(opcode, payload, compress)

    def send_text(self, message: str, compress: bool = False) -> int:
        """Send a text message; ``TypeError`` for anything but ``str``."""
        if not isinstance(message, str):
            raise TypeError(f"send_text expects a str, not {type(message).__name__}")
        opcode, payload = _frames.message_payload(message)
        return self._send(opcode, payload, compress)

    def send_binary(self, message: bytes | bytearray | memoryview, compress: bool = False) -> int:
        """Send a binary message; ``TypeError`` for anything but bytes-like."""
        payload = _frames.buffer_bytes(message)
        if payload is None:
            raise TypeError(f"send_binary expects bytes, not {type(message).__name__}")
        return self._send(OP_BINARY, payload, compress)

    def _send(self, opcode: int, payload: bytes, compress: bool) -> int:
        # As Bun: plain when deflate was not negotiated; plain too when the
        # message is too small to gain from it (see MIN_COMPRESS_SIZE).
        corks = CORKS.corks
        part: Part | None = None
        if compress is False:  # the common case first: one identity test
            if len(payload) < UNCOPIED_PAYLOAD_SIZE or corks:
                part = encode_frame(opcode, payload)
        else:
            check_compress(compress)  # True, or a TypeError
            deflate = self._conn.deflate
            if deflate is None or len(payload) < MIN_COMPRESS_SIZE:
                part = encode_frame(opcode, payload)
            elif deflate.shared:
                part = deflate.frame(opcode, payload)
            else:
                # A per-connection context compresses in wire order, under its lock.
                part = (opcode, payload)
        if part is None:
            # A big payload is not copied behind its header: the two go out
            # as chunks of their own, in one sendmsg().
            status = self._conn.enqueue(frame_header(opcode, len(payload)), payload=payload)
        elif not corks and part.__class__ is bytes:
            status = self._conn.enqueue(part)
        else:
            status = queue_part(self._conn, part, corks)
        if status != DROPPED:
            self._server._counters["messages_out"] += 1
        return send_result(status, len(payload))

    def _queue(self, part: Part, payload_len: int) -> int:
        return send_result(queue_part(self._conn, part, CORKS.corks), payload_len)

    def ping(self, data: str | bytes = b"") -> int:
        """Send a ping (at most 125 bytes); returns the payload length, 0 if closed."""
        payload = _frames.control_payload(data, "ping")
        return self._queue(encode_frame(OP_PING, payload), len(payload))

    def pong(self, data: str | bytes = b"") -> int:
        """Send an unsolicited pong (at most 125 bytes); returns the payload length."""
        payload = _frames.control_payload(data, "pong")
        return self._queue(encode_frame(OP_PONG, payload), len(payload))

    def cork(self, callback: Callable[[ServerWebSocket[T]], R]) -> R:
        """Call ``callback(ws)``; the sends it makes on this thread go out in one write.

        Each send is queued as it is made (it answers -1 or 0 as any send
        does, and goes out before a close asked for meanwhile); only the
        write waits until ``callback`` returns. Returns what ``callback``
        returns. Other threads are not blocked; a nested ``cork`` just runs
        its callback.

        >>> ws.cork(lambda w: (w.send("a"), w.send("b")))  # doctest: +SKIP
        """
        if not callable(callback):
            raise TypeError("cork expects a callable")
        if not start_cork(self._conn):
            return callback(self)
        try:
            return callback(self)
        finally:
            end_cork(self._conn)

    # -- pub/sub --------------------------------------------------------------

    def subscribe(self, topic: str) -> bool:
        """Subscribe to ``topic``; True (also when already subscribed), False once closing."""
        check_topic(topic)
        if self._conn.state is not ReadyState.OPEN:
            return False
        self._server._registry.subscribe(self._conn, topic)
        if self._conn.state is not ReadyState.OPEN:
            # Lost a race with the close, which already emptied our topics.
            self._server._registry.unsubscribe_all(self._conn)
            return False
        return True

    def unsubscribe(self, topic: str) -> bool:
        """Leave ``topic``; True if this socket was subscribed to it."""
        check_topic(topic)
        return self._server._registry.unsubscribe(self._conn, topic)

    def is_subscribed(self, topic: str) -> bool:
        """Whether this socket is subscribed to ``topic``."""
        check_topic(topic)
        return self._server._registry.is_subscribed(self._conn, topic)

    @property
    def subscriptions(self) -> list[str]:
        """This socket's topics, in subscribe order (``[]`` once closed)."""
        return self._server._registry.topics_of(self._conn)

    def publish(self, topic: str, message: str | bytes | bytearray | memoryview,
                compress: bool = False) -> int:
        """Send ``message`` to every subscriber of ``topic`` except this socket.

        With ``publish_to_self=True`` this socket gets it too when subscribed.
        Returns as ``Server.publish``. Works from the ``close`` handler.
        """
        exclude = None if self._conn.config.publish_to_self else self._conn
        return self._server._publish(topic, message, compress, exclude)

    def publish_text(self, topic: str, message: str, compress: bool = False) -> int:
        """``publish`` for a ``str``; ``TypeError`` for anything else."""
        if not isinstance(message, str):
            raise TypeError(f"publish_text expects a str, not {type(message).__name__}")
        return self.publish(topic, message, compress)

    def publish_binary(self, topic: str, message: bytes | bytearray | memoryview,
                       compress: bool = False) -> int:
        """``publish`` for bytes-like data; ``TypeError`` for anything else."""
        payload = _frames.buffer_bytes(message)
        if payload is None:
            raise TypeError(f"publish_binary expects bytes, not {type(message).__name__}")
        return self.publish(topic, payload, compress)

    # -- closing --------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; returns at once.

        What was sent before goes out first; messages received but not yet
        handled are dropped, as in Bun (only ``close`` runs). ``ValueError`` for a code
        that may not be sent (only 1000-1003, 1007-1013, 3000-4999) or a
        reason over 123 UTF-8 bytes. A second call does nothing.
        """
        _frames.close_payload(code, reason)
        self._conn.request_close(code, reason)

    def terminate(self) -> None:
        """Drop the TCP connection at once; ``close`` gets 1006.

        Does nothing once the connection is closing (after ``close()``, or
        the peer's close frame): that close finishes with its own code.
        """
        self._conn.request_terminate()

    # -- flow control -----------------------------------------------------------

    def pause(self) -> None:
        """Stop reading (and delivering) this connection's messages until ``resume``."""
        self._conn.set_user_paused(True)

    def resume(self) -> None:
        """Deliver what was held back, then read again."""
        self._conn.set_user_paused(False)

    @property
    def is_paused(self) -> bool:
        """Whether ``pause()`` is in effect."""
        return self._conn.user_paused

    @property
    def buffered_amount(self) -> int:
        """Wire bytes queued and not yet taken by the kernel (frame headers included)."""
        return self._conn.out.size

    # -- facts ------------------------------------------------------------------

    @property
    def ready_state(self) -> ReadyState:
        """OPEN, then CLOSED from the moment a close begins (as in Bun: 2 is never seen).

        Once ``close()`` or ``terminate()`` returns, or the peer's close
        frame arrived, the socket takes no more sends and has left its
        topics; the closing handshake finishes in the background.
        """
        state = self._conn.state
        return ReadyState.CLOSED if state is ReadyState.CLOSING else state

    @property
    def remote_address(self) -> str:
        """The peer's IP address."""
        return self._conn.peer[0]

    @property
    def protocol(self) -> str:
        """The subprotocol chosen at upgrade, "" if none."""
        return self._conn.protocol

    def __repr__(self) -> str:
        # reprlib: ws lands in logs and tracebacks, and ws.data may be a big session.
        return (f"<ServerWebSocket {self.remote_address} {self.ready_state.name} "
                f"data={_DATA_REPR.repr(self.data)}>")

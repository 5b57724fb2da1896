"""WebSocket clients: the blocking ``connect()`` and the Bun/browser-style ``WebSocket``.

``connect(url)`` returns a :class:`ClientWebSocket` for scripts and tests::

    with syncws.connect("ws://localhost:3000") as ws:
        ws.send("hello")
        print(ws.recv(timeout=5))

:class:`WebSocket` is the event API of Bun's docs::

    ws = syncws.WebSocket("ws://localhost:3000", headers={"Authorization": "Bearer token"})
    ws.add_event_listener("open", lambda event: ws.send("Hello"))
    ws.add_event_listener("message", lambda event: print(event.data))

Threads: every connection has one daemon reader thread that parses frames,
answers pings and echoes the server's close; received messages wait in a
bounded inbox, and the reader stops reading the socket while it is full, so
a fast server cannot fill the client's memory. Writes go straight to the
socket under a lock, from whichever thread calls ``send``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import socket
import ssl as ssl_module
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal, cast, overload

from wsproto.extensions import Extension
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed, RsvBits

from . import _frames
from ._client_handshake import (
    HeaderArg,
    Target,
    bounded_deflate,
    normalize_headers,
    normalize_subprotocols,
    open_connection,
    parse_url,
)
from ._frames import OP_CLOSE, OP_PING, OP_PONG, encode_masked_frame
from ._http import Headers
from .exceptions import ConnectionClosed, InvalidStateError, PayloadTooBig
from .types import ReadyState

__all__ = [
    "ClientWebSocket",
    "CloseEvent",
    "ErrorEvent",
    "Event",
    "MessageEvent",
    "WebSocket",
    "connect",
]

logger = logging.getLogger("syncws")

DEFAULT_MAX_PAYLOAD_LENGTH: Final = 16 * 1024 * 1024
# How long a closing handshake may take before the TCP connection is dropped
# (the server uses the same deadline).
CLOSE_TIMEOUT: Final = 5.0
# The reader stops reading the socket while this much waits for recv().
INBOX_MAX_BYTES: Final = 1024 * 1024
INBOX_MAX_MESSAGES: Final = 1024
_READ_SIZE = 65536

# Closes that end iteration quietly: normal and going away. Anything else,
# an empty close frame (1005) included, raises: the loop learns why it ended.
_CLEAN_CODES = frozenset({1000, 1001})

_MESSAGE, _TOO_BIG, _WAKE, _END = 0, 1, 2, 3
_Item = tuple[int, object]

_reader_ids = itertools.count(1)
_client_ids = itertools.count(1)


class _Inbox:
    """Received messages waiting for their consumer; bounded for the producer.

    The bound only throttles the reader (``wait_for_room``); ``put`` itself
    never blocks, so the reader can always hand over what it has parsed.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[tuple[int, object, int]] = deque()
        self._bytes = 0
        self._messages = 0
        self._unbounded = False
        self._ended = False

    def put(self, kind: int, value: object, size: int = 0) -> None:
        with self._cond:
            self._items.append((kind, value, size))
            self._bytes += size
            if kind == _MESSAGE:
                self._messages += 1
            self._cond.notify_all()

    def wait_for_room(self) -> None:
        """Block while the consumer is behind (never once the connection is closing)."""
        with self._cond:
            while not (self._unbounded or self._ended) and (
                    self._bytes >= INBOX_MAX_BYTES or self._messages >= INBOX_MAX_MESSAGES):
                self._cond.wait()

    def unbound(self) -> None:
        """Closing: the reader must reach the close frame whatever is queued."""
        with self._cond:
            self._unbounded = True
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> _Item:
        """The next item, ``(_END, None)`` once empty and ended; ``TimeoutError``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._ended:
                    return _END, None
                if deadline is None:
                    self._cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("no message arrived within the timeout")
                    self._cond.wait(left)
            kind, value, size = self._items.popleft()
            self._bytes -= size
            if kind == _MESSAGE:
                self._messages -= 1
            # Only the reader waits on room, and only when this pop may have made some.
            self._cond.notify_all()
            return kind, value


class ClientWebSocket:
    """A client WebSocket connection, as :func:`connect` returns it.

    Thread-safe: any thread may ``send``, ``ping`` or ``close`` while another
    blocks in ``recv``. ``send`` blocks only while the socket's kernel buffer
    is full; ``recv`` blocks until a message arrives, the connection closes or
    its ``timeout`` passes. Pings are answered and the server's close frame
    is echoed by a background reader thread.

    ``protocol`` is the subprotocol the server chose ("" if none),
    ``response_headers`` the headers of its 101 response, ``extensions`` the
    extensions it accepted. ``close_code`` and ``close_reason`` are None while
    the connection is open: after a close the server started they are its
    code and reason, after ``close()`` our own (as the server's ``close``
    handler reports them), and 1006 "" when the TCP connection ended
    without a closing handshake.
    """

    def __init__(self, sock: socket.socket, *, url: str, protocol: str, response_headers: Headers,
                 extension: Extension | None, extensions: str, trailing: bytes,
                 max_payload_length: int, inbox: _Inbox | None = None) -> None:
        """Internal: use :func:`connect`."""
        self.url = url
        self.protocol = protocol
        self.response_headers = response_headers
        self.extensions = extensions
        self._sock = sock
        self._max_payload = max_payload_length
        if extension is not None:
            extension = bounded_deflate(extension, max_payload_length)
        self._deflate = extension
        self._proto = FrameProtocol(client=True, extensions=[extension] if extension else [])
        self._inbox = inbox if inbox is not None else _Inbox()
        # Guards the socket's write side, the compressor and _close_sent:
        # nothing may follow our close frame on the wire.
        self._send_lock = threading.Lock()
        self._close_sent = False
        self._write_failed = False
        self._sending = 0  # bytes handed to sendall() and not yet written
        # Guards the connection state and the close bookkeeping.
        self._state_lock = threading.Lock()
        self._state = ReadyState.OPEN
        self._local_close: tuple[int, str] | None = None
        self._close_received = False
        self._failed = False
        self._terminated = False
        self._remote: tuple[int, str] = (1005, "")
        self._fail_close: tuple[int, str] = (1006, "")
        self._final: tuple[int, str] | None = None
        self._clean = False
        self._pings: list[tuple[bytes, threading.Event]] = []
        self._watchdog: threading.Timer | None = None
        self._done = threading.Event()
        # Reader-owned: the message being reassembled.
        self._parts: list[str | bytes] = []
        self._size = 0
        self._stop_reading = False
        self._reader = threading.Thread(target=self._read_loop, args=(trailing,),
                                        name=f"syncws-reader-{next(_reader_ids)}", daemon=True)
        self._reader.start()

    # -- public API --------------------------------------------------------

    @property
    def ready_state(self) -> ReadyState:
        """OPEN, then CLOSING once a close frame went either way, then CLOSED."""
        return self._state

    @property
    def close_code(self) -> int | None:
        """The code the connection closed with; None until it is closed."""
        return self._final[0] if self._final else None

    @property
    def close_reason(self) -> str | None:
        """The close reason; None until the connection is closed."""
        return self._final[1] if self._final else None

    def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send a text (``str``) or binary (bytes-like) message.

        Thread-safe; blocks only while the kernel's send buffer is full.
        Raises ``ConnectionClosed`` once the connection is closing or closed
        and ``TypeError`` for any other type.
        """
        opcode, payload = _frames.message_payload(message)
        self._write_message(opcode, payload)

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Blocks until one arrives. Raises ``TimeoutError`` when ``timeout``
        seconds pass first, ``PayloadTooBig`` (once) when the server sent a
        message over ``max_payload_length``, and ``ConnectionClosed`` when the
        connection is closed and every message that arrived before the close
        has been received. Thread-safe: each message goes to one caller.
        """
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError(f"timeout must be >= 0 seconds or None, not {timeout!r}")
        while True:
            kind, value = self._inbox.get(timeout)
            if kind == _MESSAGE:
                assert isinstance(value, (str, bytes))
                return value
            if kind == _TOO_BIG:
                raise PayloadTooBig(str(value))
            if kind == _END:
                code, reason = self._final or (1006, "")
                raise ConnectionClosed(code, reason)

    def __iter__(self) -> Iterator[str | bytes]:
        """Messages until the connection closes. Blocks between messages.

        Ends quietly on a 1000 or 1001 close (or after our own ``close()``);
        raises ``ConnectionClosed`` for any other close.
        """
        while True:
            try:
                yield self.recv()
            except ConnectionClosed as exc:
                if exc.code in _CLEAN_CODES:
                    return
                raise

    def ping(self, data: str | bytes = b"") -> threading.Event:
        """Send a ping; the returned Event is set when the server's pong arrives.

        Thread-safe; blocks only while the kernel's send buffer is full.
        ``ValueError`` for more than 125 bytes, ``ConnectionClosed`` once closing.
        """
        payload = _frames.control_payload(data, "ping")
        answered = threading.Event()
        with self._state_lock:
            self._pings.append((payload, answered))
        if not self._write_frame(OP_PING, payload):
            with self._state_lock:
                self._pings = [(p, e) for p, e in self._pings if e is not answered]
            raise self._closed_error()
        return answered

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and wait for the closing handshake.

        Blocks until the server answered and the TCP connection ended, at
        most about ``CLOSE_TIMEOUT`` (5 s) before the connection is dropped.
        Messages that arrived before the close can still be received; later
        ones are discarded. Only 1000-1003, 1007-1013 and 3000-4999 may be
        sent and the reason must fit in 123 UTF-8 bytes (``ValueError``).
        Thread-safe; a second call just waits for the first to finish.
        """
        payload = _frames.close_payload(code, reason)
        self._start_close(code, reason, payload)
        if threading.current_thread() is self._reader:
            return
        if not self._done.wait(CLOSE_TIMEOUT):
            logger.debug("syncws client: no closing handshake from %s; dropping", self.url)
            self._abort()
            self._done.wait(CLOSE_TIMEOUT)

    def __enter__(self) -> ClientWebSocket:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ClientWebSocket {self.url} {self._state.name}>"

    # -- internals shared with WebSocket ------------------------------------

    @property
    def _buffered_amount(self) -> int:
        return self._sending

    def _closed_error(self) -> ConnectionClosed:
        code, reason = self._final or self._local_close or (1006, "")
        return ConnectionClosed(code, reason)

    def _start_close(self, code: int | None, reason: str, payload: bytes, *,
                     wait: bool = True) -> bool:
        """Send our close frame unless a close is already under way.

        ``code`` None means a close frame without a status (``payload`` is
        empty): the connection then ends with whatever the server echoes
        (1005 for an empty close frame), or 1006 without an answer.
        Never waits for the peer's answer. The write itself may wait behind
        a send to a peer that stopped reading, at most until the watchdog
        drops the connection; with ``wait=False`` it happens on a short-lived
        thread instead, and only the state changes before this returns.
        """
        with self._state_lock:
            if self._state is not ReadyState.OPEN:
                return False
            self._state = ReadyState.CLOSING
            self._local_close = None if code is None else (code, reason)
        self._inbox.unbound()
        self._arm_watchdog()
        if wait:
            self._write_frame(OP_CLOSE, payload, closing=True)
        else:
            threading.Thread(target=self._write_frame, args=(OP_CLOSE, payload),
                             kwargs={"closing": True}, name=f"{self._reader.name}-close",
                             daemon=True).start()
        return True

    def _arm_watchdog(self) -> None:
        """Drop the connection ``CLOSE_TIMEOUT`` after a close began, whatever the peer does.

        Dropping it also frees a writer stuck on a peer that stopped reading.
        """
        timer = threading.Timer(CLOSE_TIMEOUT, self._abort)
        timer.daemon = True
        with self._state_lock:
            if self._done.is_set() or self._watchdog is not None:
                return
            self._watchdog = timer
        timer.start()

    def _terminate(self) -> bool:
        """Drop the TCP connection without a closing handshake (Bun's ``terminate()``).

        The connection ends with 1006, not clean and not failed; messages not
        yet parsed are discarded. False (and nothing done) once a close began.
        Never blocks.
        """
        with self._state_lock:
            if self._state is not ReadyState.OPEN:
                return False
            self._state = ReadyState.CLOSING
            self._terminated = True
        self._stop_reading = True
        self._inbox.unbound()
        self._abort()
        return True

    def _abort(self) -> None:
        """Shut the socket down; the reader then finishes the connection."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    # -- writing (any thread) -----------------------------------------------

    def _write_message(self, opcode: int, payload: bytes) -> None:
        with self._send_lock:
            if self._close_sent or self._write_failed:
                raise self._closed_error()
            rsv1 = False
            if self._deflate is not None and payload:
                # Under the lock: the compression context must follow wire order.
                rsv, payload = self._deflate.frame_outbound(
                    self._proto, Opcode(opcode), RsvBits(False, False, False), payload, True)
                rsv1 = rsv.rsv1
            frame = encode_masked_frame(opcode, payload, secrets.token_bytes(4), rsv1=rsv1)
            if not self._sendall(frame):
                raise self._closed_error()

    def _write_frame(self, opcode: int, payload: bytes, *, closing: bool = False) -> bool:
        """Write a control frame; False if the connection can no longer take it."""
        with self._send_lock:
            if self._close_sent or self._write_failed:
                return False
            if closing:
                self._close_sent = True
            return self._sendall(encode_masked_frame(opcode, payload, secrets.token_bytes(4)))

    def _sendall(self, frame: bytes) -> bool:
        # Caller holds _send_lock.
        self._sending += len(frame)
        try:
            self._sock.sendall(frame)
            return True
        except OSError as exc:
            logger.debug("syncws client: write to %s failed: %r", self.url, exc)
            self._write_failed = True
            self._abort()
            return False
        finally:
            self._sending -= len(frame)

    # -- reading (reader thread) --------------------------------------------

    def _read_loop(self, trailing: bytes) -> None:
        try:
            if trailing:
                self._feed(trailing)
            while not self._stop_reading:
                self._inbox.wait_for_room()
                data = self._sock.recv(_READ_SIZE)
                if not data:
                    break
                self._feed(data)
        except OSError as exc:
            # Includes ssl.SSLError, and the error after the watchdog shut the socket down.
            logger.debug("syncws client: read from %s ended: %r", self.url, exc)
        except Exception:
            logger.exception("syncws client: reader for %s failed", self.url)
        finally:
            self._finish()

    def _feed(self, data: bytes) -> None:
        if self._close_received or self._stop_reading:
            return  # after the close frame only the TCP end matters
        proto = self._proto
        proto.receive_bytes(data)
        try:
            for frame in proto.received_frames():
                opcode = frame.opcode
                if opcode is Opcode.TEXT or opcode is Opcode.BINARY or \
                        opcode is Opcode.CONTINUATION:
                    if not self._on_data(frame.payload, frame.message_finished):  # type: ignore[arg-type]
                        return
                elif opcode is Opcode.PING:
                    self._write_frame(OP_PONG, frame.payload)  # type: ignore[arg-type]
                elif opcode is Opcode.PONG:
                    self._on_pong(frame.payload)  # type: ignore[arg-type]
                elif opcode is Opcode.CLOSE:
                    code, reason = cast("tuple[int, str]", frame.payload)
                    self._on_remote_close(int(code), str(reason))
                    return
            if self._size + _frames.unread_payload(proto) > self._max_payload:
                self._too_big("")  # announced by the frame header: no need to wait for it
        except ParseFailed as exc:
            if exc.code == 1009:
                # Inflating passed the budget: the same report as an oversized message.
                self._too_big(" once inflated")
                return
            self._fail(int(exc.code), str(exc))

    def _too_big(self, detail: str) -> None:
        self._parts = []
        if self._terminated:
            self._stop_reading = True  # dropped by terminate(): no error to report
            return
        self._inbox.put(_TOO_BIG, f"the server sent a message over max_payload_length "
                                  f"({self._max_payload} bytes){detail}")
        self._fail(1009, "Message too big")

    def _on_data(self, payload: str | bytes, finished: bool) -> bool:
        if isinstance(payload, str) and not payload.isascii():
            size = len(payload.encode("utf-8"))
        else:
            size = len(payload)
        total = self._size + size
        if total > self._max_payload:
            self._too_big("")
            return False
        if not finished:
            _frames.add_fragment(self._parts, payload)
            self._size = total
            return True
        payload = _frames.last_fragment(self._parts, payload)
        self._size = 0
        # After our close frame data may be discarded (RFC 6455 1.4); after terminate, too.
        if not self._close_sent and not self._terminated:
            self._inbox.put(_MESSAGE, payload, total)
        return True

    def _on_pong(self, payload: bytes) -> None:
        with self._state_lock:
            for index, (data, _) in enumerate(self._pings):
                if data == payload:
                    # A pong acknowledges every ping before it too (RFC 6455 5.5.3).
                    answered, self._pings = self._pings[:index + 1], self._pings[index + 1:]
                    break
            else:
                return
        for _, event in answered:
            event.set()

    def _on_remote_close(self, code: int, reason: str) -> None:
        with self._state_lock:
            self._close_received = True
            self._remote = (code, reason)
            if self._state is ReadyState.OPEN:
                self._state = ReadyState.CLOSING
        self._inbox.unbound()
        echo = _frames.close_echo(code, reason)
        # RFC 6455 7.1.1: the server closes TCP first; wait for that, within reason
        # (a deadline, not a read timeout: a trickle of bytes must not reset it).
        self._arm_watchdog()
        self._write_frame(OP_CLOSE, echo, closing=True)

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): our close frame, then TCP close."""
        logger.debug("syncws client: failing %s: %d %s", self.url, code, reason)
        with self._state_lock:
            if self._terminated:
                self._stop_reading = True  # already dropped: nothing to tell the server
                return
            self._failed = True
            if self._state is ReadyState.OPEN:
                self._state = ReadyState.CLOSING
            self._fail_close = (code, reason)
        self._inbox.unbound()
        self._arm_watchdog()
        if not _frames.is_sendable_close_code(code):
            code = 1002
        self._write_frame(OP_CLOSE, _frames.close_payload(code, _frames.truncate_reason(reason)),
                          closing=True)
        self._stop_reading = True

    def _finish(self) -> None:
        """The reader is done: settle the close code, release the socket, wake everyone."""
        self._abort()
        with self._send_lock:
            self._write_failed = True
            self._sock.close()
        with self._state_lock:
            if self._terminated:
                final = (1006, "")
            elif self._failed:
                final = self._fail_close
            elif self._local_close is not None:
                final = self._local_close
            elif self._close_received:
                final = self._remote
            else:
                final = (1006, "")
            self._clean = self._close_received and self._close_sent and \
                not self._failed and not self._terminated
            self._final = final
            self._state = ReadyState.CLOSED
            watchdog = self._watchdog
        if watchdog is not None:
            watchdog.cancel()
        logger.debug("syncws client: %s closed: %d %s (clean: %s)", self.url, final[0],
                     final[1], self._clean)
        self._inbox.end()
        self._done.set()



def _check_options(timeout: object, max_payload_length: object, per_message_deflate: object,
                   ssl: object, target: Target) -> None:
    if timeout is not None and (isinstance(timeout, bool) or
                                not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    if isinstance(max_payload_length, bool) or not isinstance(max_payload_length, int):
        raise TypeError(f"max_payload_length must be an int, not "
                        f"{type(max_payload_length).__name__}")
    if max_payload_length <= 0:
        raise ValueError(f"max_payload_length must be positive, not {max_payload_length}")
    if not isinstance(per_message_deflate, bool):
        raise TypeError(f"per_message_deflate must be a bool, not "
                        f"{type(per_message_deflate).__name__}")
    if ssl is not None:
        if not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext, not {type(ssl).__name__}")
        if not target.secure:
            raise ValueError("ssl is only for wss:// URLs")


def connect(url: str, *, headers: HeaderArg | None = None,
            subprotocols: list[str] | tuple[str, ...] | None = None,
            timeout: float | None = 10, per_message_deflate: bool = False,
            ssl: ssl_module.SSLContext | None = None,
            max_payload_length: int = DEFAULT_MAX_PAYLOAD_LENGTH) -> ClientWebSocket:
    """Open a WebSocket connection to ``url`` (``ws://`` or ``wss://``). Blocks.

    ``headers`` (a dict or (name, value) pairs) go into the opening request,
    e.g. ``{"Authorization": "Bearer token"}``; ``subprotocols`` are offered
    and the server's choice is ``ws.protocol``. ``timeout`` bounds the TCP
    connect, the TLS handshake and the HTTP handshake together.
    ``per_message_deflate=True`` offers compression; when the server accepts,
    every non-empty message is sent compressed. For ``wss://`` the server's
    certificate is verified with ``ssl.create_default_context()`` unless
    ``ssl`` gives another context. A message over ``max_payload_length``
    bytes closes the connection with 1009.

    Raises ``ValueError`` for a bad URL or argument, ``OSError`` (such as
    ``ConnectionRefusedError``) when the server cannot be reached,
    ``ssl.SSLCertVerificationError`` (unchanged) for a certificate that does
    not verify, ``TimeoutError`` when ``timeout`` passes, and
    ``HandshakeError`` (``.status``, ``.body``) when the server refuses.
    Safe to call from any thread.
    """
    return _connect(url, headers=headers, subprotocols=subprotocols, timeout=timeout,
                    per_message_deflate=per_message_deflate, ssl=ssl,
                    max_payload_length=max_payload_length)


def _connect(url: str, *, headers: object, subprotocols: object, timeout: float | None,
             per_message_deflate: bool, ssl: ssl_module.SSLContext | None,
             max_payload_length: int, inbox: _Inbox | None = None,
             argument: str = "subprotocols",
             on_socket: Callable[[socket.socket], None] | None = None) -> ClientWebSocket:
    target = parse_url(url)
    extra = normalize_headers(headers)
    offered = normalize_subprotocols(subprotocols, argument)
    _check_options(timeout, max_payload_length, per_message_deflate, ssl, target)
    result = open_connection(target, headers=extra, subprotocols=offered, timeout=timeout,
                             deflate=per_message_deflate, ssl=ssl, on_socket=on_socket)
    logger.debug("syncws client: connected to %s (protocol %r, extensions %r)", url,
                 result.protocol, result.extensions_header)
    return ClientWebSocket(result.sock, url=url, protocol=result.protocol,
                           response_headers=result.headers, extension=result.extension,
                           extensions=result.extensions_header, trailing=result.trailing,
                           max_payload_length=max_payload_length, inbox=inbox)


def _shut_down(sock: socket.socket | None) -> None:
    """Wake whatever blocks on ``sock`` (a handshake under way): any thread."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


# -- the Bun/browser-style event API ------------------------------------------

EventType = Literal["open", "message", "close", "error"]
_EVENT_TYPES: tuple[str, ...] = ("open", "message", "close", "error")


@dataclass(frozen=True)
class Event:
    """An event without details ("open"); ``target`` is the WebSocket."""

    type: str
    target: WebSocket = field(repr=False, compare=False)


@dataclass(frozen=True)
class MessageEvent(Event):
    """A "message" event: ``data`` is ``str`` for text, ``bytes`` for binary."""

    data: str | bytes


@dataclass(frozen=True)
class CloseEvent(Event):
    """The "close" event: ``was_clean`` is False when there was no closing handshake."""

    code: int
    reason: str
    was_clean: bool


@dataclass(frozen=True)
class ErrorEvent(Event):
    """An "error" event; ``error`` is the exception behind it."""

    error: BaseException
    message: str


Listener = Callable[[Any], object]


class WebSocket:
    """A WebSocket client in the style of the browser's and Bun's ``WebSocket``.

    Construction returns at once; connecting, and every event, happen on one
    background (non-daemon) thread per connection, named ``syncws-client-N``,
    which keeps the process alive until the connection is closed, as a Bun
    script stays alive. Listeners run on that thread, one at a time and in
    order: "open", then "message"s, then "close"; "error" comes before the
    "close" of a failed connection, which then has code 1006 (as in the
    browser; the "error" says what went wrong). Events of a type nobody
    listens to yet are held and delivered once the first listener for that
    type is added, so adding listeners right after the constructor never
    misses "open". Held messages are bounded (``INBOX_MAX_BYTES``,
    ``INBOX_MAX_MESSAGES``): past that, as in a browser where no listener
    hears them, messages are dropped, with one warning in the log.

    As in Bun, there are also ``ping``/``pong`` (control frames) and
    ``terminate`` (drop the connection: "close" 1006, not clean, no "error").

    Every method is thread-safe and may be called from a listener. ``send``,
    ``ping`` and ``pong`` block only while the kernel's send buffer is full;
    ``close`` and ``terminate`` never block.
    """

    CONNECTING: Final = ReadyState.CONNECTING
    OPEN: Final = ReadyState.OPEN
    CLOSING: Final = ReadyState.CLOSING
    CLOSED: Final = ReadyState.CLOSED

    def __init__(self, url: str, headers: HeaderArg | None = None,
                 protocols: str | list[str] | tuple[str, ...] | None = None, *,
                 ssl: ssl_module.SSLContext | None = None,
                 max_payload_length: int = DEFAULT_MAX_PAYLOAD_LENGTH) -> None:
        """Start connecting to ``url``; ``ValueError`` at once for a bad URL or argument.

        ``ssl`` and ``max_payload_length`` are as for :func:`connect` (Bun's
        ``tls`` option is an ``ssl.SSLContext`` here): a ``wss://`` server
        with a private CA needs ``ssl.create_default_context(cafile=...)``.
        """
        target = parse_url(url)
        self._headers = normalize_headers(headers)
        self._protocols = normalize_subprotocols(protocols, "protocols")
        _check_options(None, max_payload_length, False, ssl, target)
        self._ssl = ssl
        self._max_payload_length = max_payload_length
        self.url: str = target.url
        self._lock = threading.Lock()
        self._listeners: dict[str, list[Listener]] = {t: [] for t in _EVENT_TYPES}
        self._seen: set[str] = set()
        self._held: dict[str, list[Event]] = {t: [] for t in _EVENT_TYPES}
        self._held_message_bytes = 0
        self._dropping_logged = False
        self._state = ReadyState.CONNECTING
        self._conn: ClientWebSocket | None = None
        self._close_while_connecting = False
        # The socket of the handshake under way, so that close() can abandon it.
        self._connecting_sock: socket.socket | None = None
        self._inbox = _Inbox()
        self._thread_name = f"syncws-client-{next(_client_ids)}"
        self._dispatching = True
        self._thread = threading.Thread(target=self._run, name=self._thread_name)
        self._thread.start()

    # -- public API --------------------------------------------------------

    @property
    def ready_state(self) -> ReadyState:
        """CONNECTING, OPEN, CLOSING (a close frame went either way, or ``terminate()``),
        CLOSED (close delivered)."""
        with self._lock:
            state, conn = self._state, self._conn
        if state is ReadyState.OPEN and conn is not None and \
                conn.ready_state is not ReadyState.OPEN:
            return ReadyState.CLOSING
        return state

    @property
    def protocol(self) -> str:
        """The subprotocol the server chose; "" before "open" or when none."""
        conn = self._conn
        return conn.protocol if conn is not None else ""

    @property
    def extensions(self) -> str:
        """The extensions the server accepted; "" before "open" or when none."""
        conn = self._conn
        return conn.extensions if conn is not None else ""

    @property
    def buffered_amount(self) -> int:
        """Bytes handed to ``send`` and not yet taken by the kernel."""
        conn = self._conn
        return conn._buffered_amount if conn is not None else 0

    @overload
    def add_event_listener(self, type: Literal["open"],
                           listener: Callable[[Event], object]) -> None: ...
    @overload
    def add_event_listener(self, type: Literal["message"],
                           listener: Callable[[MessageEvent], object]) -> None: ...
    @overload
    def add_event_listener(self, type: Literal["close"],
                           listener: Callable[[CloseEvent], object]) -> None: ...
    @overload
    def add_event_listener(self, type: Literal["error"],
                           listener: Callable[[ErrorEvent], object]) -> None: ...

    def add_event_listener(self, type: EventType, listener: Callable[[Any], object]) -> None:
        """Call ``listener(event)`` for each event of ``type``. Thread-safe; never blocks.

        ``type`` is "open" (an ``Event``), "message" (``MessageEvent``),
        "close" (``CloseEvent``) or "error" (``ErrorEvent``). Adding the same
        listener twice has no effect (as in the browser).
        """
        if type not in _EVENT_TYPES:
            raise ValueError(f"type must be one of {', '.join(_EVENT_TYPES)}, not {type!r}")
        if not callable(listener):
            raise TypeError("listener must be callable")
        with self._lock:
            if listener not in self._listeners[type]:
                self._listeners[type].append(listener)
            first = type not in self._seen
            self._seen.add(type)
            flush = first and bool(self._held[type])
            start_thread = flush and not self._dispatching
            if start_thread:
                self._dispatching = True
        if start_thread:
            # The connection's thread is gone; a short-lived one delivers what was held.
            threading.Thread(target=self._drain_held, name=self._thread_name).start()
        elif flush:
            self._inbox.put(_WAKE, None)

    def remove_event_listener(self, type: EventType, listener: Callable[[Any], object]) -> None:
        """Stop calling ``listener`` for ``type``; unknown listeners are ignored. Thread-safe."""
        with self._lock:
            listeners = self._listeners.get(type)
            if listeners is not None and listener in listeners:
                listeners.remove(listener)

    def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Send a text (``str``) or binary (bytes-like) message.

        ``InvalidStateError`` while CONNECTING; after a close it is silently
        dropped (as in Bun). Thread-safe; blocks only while the kernel's send
        buffer is full.
        """
        opcode, payload = _frames.message_payload(data, "data")
        conn = self._conn_to_write()
        if conn is not None:
            with contextlib.suppress(ConnectionClosed):
                conn._write_message(opcode, payload)

    def ping(self, data: str | bytes | bytearray | memoryview = b"") -> None:
        """Send a ping with ``data`` (str as UTF-8, or bytes-like; at most 125 bytes).

        The server answers with a pong. ``ValueError`` past 125 bytes,
        ``TypeError`` for other types, ``InvalidStateError`` while CONNECTING;
        after a close it does nothing (as ``send``). Thread-safe.
        """
        self._write_control(OP_PING, _frames.control_payload(data, "ping"))

    def pong(self, data: str | bytes | bytearray | memoryview = b"") -> None:
        """Send an unsolicited pong with ``data``; the same rules as :meth:`ping`.

        Pings from the server are answered automatically: this is not needed for them.
        """
        self._write_control(OP_PONG, _frames.control_payload(data, "pong"))

    def close(self, code: int | None = None, reason: str = "") -> None:
        """Start the closing handshake; "close" follows on the event thread.

        Never blocks. Without ``code`` (as in browsers and Bun) the close
        frame carries no status, so the server's close handler sees 1005,
        and "close" reports what the server echoes (1005 for an empty close
        frame); a ``reason`` without ``code`` sends 1000. ``ValueError`` for
        a code other than 1000-1003, 1007-1013, 3000-4999 or a reason over
        123 UTF-8 bytes. While CONNECTING, the connection is abandoned:
        "error", then "close" 1006. A second call does nothing.
        """
        if code is None and reason:
            code = 1000  # the WHATWG rule: a reason needs a status code
        payload = b"" if code is None else _frames.close_payload(code, reason)
        conn = self._begin_closing()
        if conn is not None:
            conn._start_close(code, reason, payload, wait=False)

    def terminate(self) -> None:
        """Drop the TCP connection at once, without a closing handshake (as in Bun).

        While OPEN, ``ready_state`` becomes CLOSING and the event thread then
        delivers "close" with 1006, "" and ``was_clean`` False, and no
        "error"; the server sees 1006. Messages not yet delivered may be lost.
        While CONNECTING it is ``close()``. Once a close began it does
        nothing. Never blocks.
        """
        conn = self._begin_closing()
        if conn is not None:
            conn._terminate()

    def _begin_closing(self) -> ClientWebSocket | None:
        """OPEN -> CLOSING for close() and terminate(): the connection to act on, or None.

        While CONNECTING the connection is abandoned instead (the event thread
        then gives "error" and "close" 1006); once a close began, None.
        """
        with self._lock:
            state, conn = self._state, self._conn
            if state is ReadyState.CONNECTING:
                self._close_while_connecting = True
                self._state = ReadyState.CLOSING
                _shut_down(self._connecting_sock)  # the event thread then reports at once
                return None
            if state is not ReadyState.OPEN or conn is None or \
                    conn.ready_state is not ReadyState.OPEN:
                return None
            self._state = ReadyState.CLOSING
        return conn

    def _write_control(self, opcode: int, payload: bytes) -> None:
        conn = self._conn_to_write()
        if conn is not None:
            conn._write_frame(opcode, payload)

    def _conn_to_write(self) -> ClientWebSocket | None:
        """The connection to write to; None once a close began, InvalidStateError before open."""
        with self._lock:
            state, conn = self._state, self._conn
        if state is ReadyState.CONNECTING:
            raise InvalidStateError("the WebSocket is still connecting: wait for 'open'")
        return conn if state is ReadyState.OPEN else None

    def __repr__(self) -> str:
        return f"<WebSocket {self.url} {self.ready_state.name}>"

    # -- the event thread ---------------------------------------------------

    def _run(self) -> None:
        try:
            conn = _connect(self.url, headers=self._headers, subprotocols=self._protocols,
                            timeout=10, per_message_deflate=False, ssl=self._ssl,
                            max_payload_length=self._max_payload_length,
                            inbox=self._inbox, argument="protocols",
                            on_socket=self._connecting)
        except Exception as exc:
            logger.debug("syncws client: connecting to %s failed: %r", self.url, exc)
            if self._close_while_connecting:
                exc = ConnectionAbortedError("closed before the connection opened")
            self._fail_connect(exc)
            return
        with self._lock:
            self._connecting_sock = None
            self._conn = conn
            abandoned = self._close_while_connecting
            if not abandoned:
                self._state = ReadyState.OPEN
        if abandoned:
            conn._abort()
            conn._done.wait()
            self._fail_connect(ConnectionAbortedError("closed before the connection opened"))
            return
        self._emit(Event("open", self))
        reported = False
        while True:
            kind, value = self._inbox.get()
            if kind == _MESSAGE:
                assert isinstance(value, (str, bytes))
                self._emit(MessageEvent("message", self, value))
            elif kind == _TOO_BIG:
                error = PayloadTooBig(str(value))
                self._emit(ErrorEvent("error", self, error, str(error)))
                reported = True
            elif kind == _WAKE:
                self._deliver_held()
            else:
                break
        code, reason = conn._final or (1006, "")
        if conn._close_received and not conn._failed and not conn._terminated:
            # As in the browser: the code and reason of the close frame received
            # (RFC 6455 7.1.5), also when ours went first.
            code, reason = conn._remote
        if conn._failed:
            # We failed the connection (a protocol error, a message too big): as
            # in the browser and Bun, "error" says why, then "close" gives 1006.
            if not reported:
                self._emit(ErrorEvent("error", self, ConnectionClosed(code, reason), reason))
            code, reason = 1006, ""
        with self._lock:
            self._state = ReadyState.CLOSED
        self._emit(CloseEvent("close", self, code, reason, conn._clean))
        self._drain_held()

    def _connecting(self, sock: socket.socket) -> None:
        with self._lock:
            self._connecting_sock = sock
            if self._close_while_connecting:
                _shut_down(sock)

    def _fail_connect(self, exc: BaseException) -> None:
        with self._lock:
            self._state = ReadyState.CLOSED
        self._emit(ErrorEvent("error", self, exc, str(exc) or type(exc).__name__))
        self._emit(CloseEvent("close", self, 1006, "", False))
        self._drain_held()

    def _emit(self, event: Event) -> None:
        with self._lock:
            if event.type not in self._seen:
                if isinstance(event, MessageEvent) and not self._room_to_hold(event):
                    return
                self._held[event.type].append(event)
                return
            batch = [*self._held[event.type], event]
            self._held[event.type] = []
            if event.type == "message":
                self._held_message_bytes = 0
            listeners = list(self._listeners[event.type])
        self._call(listeners, batch)

    def _room_to_hold(self, event: MessageEvent) -> bool:
        """Count ``event`` in the held messages, or say there is no room (lock held)."""
        held = len(self._held["message"])
        data = event.data
        size = len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
        if held and (held >= INBOX_MAX_MESSAGES or
                     self._held_message_bytes + size > INBOX_MAX_BYTES):
            if not self._dropping_logged:
                self._dropping_logged = True
                logger.warning("syncws client: no 'message' listener on %s: messages past "
                               "the first %d bytes are dropped", self.url, INBOX_MAX_BYTES)
            return False
        self._held_message_bytes += size
        return True

    def _deliver_held(self) -> None:
        with self._lock:
            ready = [(list(self._listeners[t]), self._held[t]) for t in _EVENT_TYPES
                     if t in self._seen and self._held[t]]
            for t in _EVENT_TYPES:
                if t in self._seen:
                    self._held[t] = []
            if "message" in self._seen:
                self._held_message_bytes = 0
        for listeners, batch in ready:
            self._call(listeners, batch)

    def _drain_held(self) -> None:
        """Deliver held events until none can be; then this thread may end."""
        while True:
            with self._lock:
                if not any(self._held[t] for t in self._seen):
                    self._dispatching = False
                    return
            self._deliver_held()

    def _call(self, listeners: list[Listener], events: list[Event]) -> None:
        for event in events:
            for listener in listeners:
                try:
                    listener(event)
                except Exception:
                    # As in the browser: report it and go on with the next listener.
                    logger.exception("syncws client: exception in a %r listener for %s",
                                     event.type, self.url)

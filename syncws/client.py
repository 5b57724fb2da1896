"""The blocking WebSocket client: ``connect()`` and :class:`ClientWebSocket`.

``connect(url)`` returns a :class:`ClientWebSocket` for scripts and tests::

    with syncws.connect("ws://localhost:3000") as ws:
        ws.send("hello")
        print(ws.recv(timeout=5))

The event API of Bun's docs (``syncws.WebSocket``) lives in
:mod:`syncws.event_client` and runs on this connection underneath.

Threads: every connection has one daemon reader thread that parses frames,
answers pings and echoes the server's close (the event client runs that loop
on a thread of its own instead); received messages wait in a bounded inbox,
and the reader stops reading the socket while it is full, so a fast server
cannot fill the client's memory. Writes go straight to the socket under a
lock, from whichever thread calls ``send``.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import selectors
import socket
import ssl as ssl_module
import threading
import time
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import Final, cast

from wsproto.extensions import Extension
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed, RsvBits

from . import _frames
from ._client_handshake import (
    Cancel,
    HeaderArg,
    Target,
    bounded_deflate,
    normalize_headers,
    normalize_subprotocols,
    open_connection,
    parse_url,
    shut_down,
)
from ._frames import OP_CLOSE, OP_PING, OP_PONG, encode_masked_frame
from ._http import Headers
from .exceptions import ConnectionClosed, PayloadTooBig
from .types import ReadyState

__all__ = ["ClientWebSocket", "connect"]

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
                 max_payload_length: int, inbox: _Inbox | None = None,
                 closer: _Closer | None = None, start_reader: bool = True) -> None:
        """Internal: use :func:`connect`.

        The event client passes a ``closer`` and ``start_reader=False`` (it
        then calls ``_run_reader``): it starts no thread after its constructor.
        """
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
        self._closer = closer
        self._done = threading.Event()
        # Reader-owned: the message being reassembled.
        self._parts: list[str | bytes] = []
        self._size = 0
        self._stop_reading = False
        self._trailing = trailing
        self._reader: threading.Thread | None = None
        if start_reader:
            self._reader = threading.Thread(target=self._read_loop,
                                            name=f"syncws-reader-{next(_reader_ids)}",
                                            daemon=True)
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

    def _start_close(self, code: int | None, reason: str, payload: bytes) -> bool:
        """Send our close frame unless a close is already under way.

        ``code`` None means a close frame without a status (``payload`` is
        empty): the connection then ends with whatever the server echoes
        (1005 for an empty close frame), or 1006 without an answer.
        Never waits for the peer's answer. The write itself may wait behind
        a send to a peer that stopped reading, at most until the watchdog
        drops the connection; with a closer, the closer's thread writes it
        instead, and only the state changes before this returns.
        """
        with self._state_lock:
            if self._state is not ReadyState.OPEN:
                return False
            self._state = ReadyState.CLOSING
            self._local_close = None if code is None else (code, reason)
        self._inbox.unbound()
        if self._closer is not None:
            self._closer.arm(self, payload)
        else:
            self._arm_watchdog()
            self._write_frame(OP_CLOSE, payload, closing=True)
        return True

    def _arm_watchdog(self) -> None:
        """Drop the connection ``CLOSE_TIMEOUT`` after a close began, whatever the peer does.

        Dropping it also frees a writer stuck on a peer that stopped reading.
        """
        if self._closer is not None:
            self._closer.arm(self, None)
            return
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
        shut_down(self._sock)

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

    def _write_close_by(self, payload: bytes, deadline: float) -> None:
        """Our close frame, unless ``deadline`` passes first (the closer's thread).

        That thread must stay free to drop the connection at the deadline, so
        it waits for the lock and for room in the socket's buffer only so long.
        """
        if not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return
        try:
            if self._close_sent or self._write_failed:
                return
            self._close_sent = True
            if _wait_writable(self._sock, deadline):
                self._sendall(encode_masked_frame(OP_CLOSE, payload, secrets.token_bytes(4)))
        finally:
            self._send_lock.release()

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

    def _run_reader(self) -> None:
        """Read the connection on the calling thread until it ends (instead of a reader thread)."""
        self._reader = threading.current_thread()
        self._read_loop()

    def _read_loop(self) -> None:
        try:
            trailing, self._trailing = self._trailing, b""
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
        if self._closer is not None:
            self._closer.end()
        logger.debug("syncws client: %s closed: %d %s (clean: %s)", self.url, final[0],
                     final[1], self._clean)
        self._inbox.end()
        self._done.set()


def _wait_writable(sock: socket.socket, deadline: float) -> bool:
    """Whether ``sock`` can take a small write before ``deadline``."""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        return bool(selector.select(max(0.0, deadline - time.monotonic())))


class _Closer:
    """Closing work for the event client, on a thread that waits from the start.

    The event client starts no thread once constructed (Python 3.12.0 and
    3.12.1 refuse new threads once the main thread has ended, which is how a
    Bun-style script runs), so this thread does what the blocking client
    starts threads for: it writes ``close()``'s frame off the caller's
    thread, and drops the connection ``CLOSE_TIMEOUT`` after a close began.
    """

    def __init__(self, name: str) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._conn: ClientWebSocket | None = None
        self._frame: bytes | None = None
        self._deadline = 0.0
        self._ended = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def arm(self, conn: ClientWebSocket, frame: bytes | None) -> None:
        """A close began; ``frame`` is our close frame's payload to write, if any.

        Only the first call counts: a later one comes from the reader, which
        writes its own close frame (an echo, or a failure's).
        """
        with self._cond:
            if self._conn is None and not self._ended:
                self._conn, self._frame = conn, frame
                self._deadline = time.monotonic() + CLOSE_TIMEOUT
                self._cond.notify_all()

    def end(self) -> None:
        """The connection is over (or never opened): the thread may finish."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def _run(self) -> None:
        with self._cond:
            while self._conn is None and not self._ended:
                self._cond.wait()
            conn, frame, deadline = self._conn, self._frame, self._deadline
        if conn is None:
            return
        if frame is not None:
            conn._write_close_by(frame, deadline)
        if not conn._done.wait(max(0.0, deadline - time.monotonic())):
            logger.debug("syncws client: no closing handshake from %s; dropping", conn.url)
            conn._abort()


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
    every non-empty message is sent compressed (unless the server asks for
    an 8-bit window, which zlib cannot compress with: then they go plain,
    and only the server's are compressed). For ``wss://`` the server's
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
             argument: str = "subprotocols", cancel: Cancel | None = None,
             closer: _Closer | None = None, start_reader: bool = True) -> ClientWebSocket:
    target = parse_url(url)
    extra = normalize_headers(headers)
    offered = normalize_subprotocols(subprotocols, argument)
    _check_options(timeout, max_payload_length, per_message_deflate, ssl, target)
    result = open_connection(target, headers=extra, subprotocols=offered, timeout=timeout,
                             deflate=per_message_deflate, ssl=ssl, cancel=cancel)
    logger.debug("syncws client: connected to %s (protocol %r, extensions %r)", url,
                 result.protocol, result.extensions_header)
    return ClientWebSocket(result.sock, url=url, protocol=result.protocol,
                           response_headers=result.headers, extension=result.extension,
                           extensions=result.extensions_header, trailing=result.trailing,
                           max_payload_length=max_payload_length, inbox=inbox,
                           closer=closer, start_reader=start_reader)


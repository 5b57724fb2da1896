"""What every accepted socket has: its outbound queue and the write path.

``SocketConnection`` is owned by the loop thread, except the fields marked
as guarded by ``lock``, which other threads may append to. Subclasses speak
HTTP (``_http_conn``) or WebSocket (``_ws_conn``) over it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import sys
from typing import TYPE_CHECKING

from ._buffer import OutboundBuffer
from ._loop import READ, WRITE, EventLoop
from ._tls import WOULD_BLOCK

# How much one TLS write may join together (TLS sockets cannot sendmsg).
TLS_WRITE_SIZE = 256 * 1024

# How long a connection that we are closing may take to send us its last
# bytes (so the kernel does not answer them with a reset that eats our reply).
LINGER_SECONDS = 2.0

if TYPE_CHECKING:
    import threading

    from ._timers import TimerSlot

if sys.platform == "linux":
    import fcntl
    import termios

logger = logging.getLogger("syncws")


def unsent_bytes(sock: socket.socket) -> int | None:
    """Bytes the kernel holds for ``sock`` not yet sent (Linux); None elsewhere."""
    if sys.platform != "linux":
        return None
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
    except OSError:
        return None
    return int.from_bytes(answer, sys.byteorder, signed=True)


class SocketConnection:
    """One accepted socket: the loop writes ``out`` to it, one write per turn."""

    __slots__ = ("closed", "flush_queued", "interest", "lock", "loop", "out", "peer",
                 "sock", "timer_at", "timer_slot", "tls", "write_blocked")

    def __init__(self, sock: socket.socket, loop: EventLoop, peer: tuple[str, int],
                 lock: threading.Lock) -> None:
        # Owned by the loop thread.
        self.sock = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.loop = loop
        self.peer = peer
        self.interest = 0
        self.closed = False
        self.write_blocked = False
        self.timer_at: float | None = None
        self.timer_slot: TimerSlot | None = None
        # Guarded by self.lock: any thread appends, the loop thread writes out.
        self.lock = lock
        self.out = OutboundBuffer()
        self.flush_queued = False

    # -- interest (loop thread) ---------------------------------------------

    def set_interest(self, events: int) -> None:
        """Watch the socket for ``events`` (READ | WRITE, or 0 for nothing)."""
        if events == self.interest or self.closed:
            return
        if self.interest == 0:
            self.loop.register(self.sock, events, self)
        elif events == 0:
            self.loop.unregister(self.sock)
        else:
            self.loop.modify(self.sock, events, self)
        self.interest = events

    def want_read(self, reading: bool) -> None:
        self.set_interest((self.interest & WRITE) | (READ if reading else 0))

    # -- writing ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data`` and have it written this turn. Loop thread."""
        with self.lock:
            self.out.append(data)
            queued = self.flush_queued
            self.flush_queued = True
        if not queued:
            self.loop.request_flush(self)

    def flush(self) -> None:
        """Write as much of ``out`` as the kernel takes, in one system call."""
        if self.closed:
            return
        out = self.out
        with self.lock:
            self.flush_queued = False
            chunks = out.peek() if out.size and not self.write_blocked else None
        if chunks is None:
            if not self.write_blocked:
                self.on_flushed()
            return
        try:
            sent = self.sock.send(chunks[0]) if len(chunks) == 1 else self.send_chunks(chunks)
        except WOULD_BLOCK:
            sent = 0
        except OSError as exc:
            self.connection_lost(exc)
            return
        with self.lock:
            if sent:
                out.consume(sent)
            remaining = out.size
        self.wrote(sent, remaining)
        if remaining:
            if not self.write_blocked:
                self.write_blocked = True
                self.set_interest(self.interest | WRITE)
        else:
            self.on_flushed()

    def send_chunks(self, chunks: list[bytes | bytearray | memoryview]) -> int:
        """Write several queued chunks in one call (``flush`` sends a single one itself)."""
        if self.tls:
            # TLS sockets have no sendmsg(): join up to a bounded size instead.
            size = count = 0
            while count < len(chunks) and size < TLS_WRITE_SIZE:
                size += len(chunks[count])
                count += 1
            return self.sock.send(b"".join(chunks[:count]))
        return self.sock.sendmsg(chunks)

    def read(self) -> memoryview | None:
        """Read what the socket has into the loop's buffer (loop thread).

        Returns the bytes read (empty at end of stream), or None when there
        was nothing to read or the connection failed (``connection_lost``
        has then been called).
        """
        if self.closed:
            return None
        try:
            n = self.sock.recv_into(self.loop.read_buffer)
        except WOULD_BLOCK:
            return None
        except OSError as exc:
            self.connection_lost(exc)
            return None
        if self.tls and self.sock.pending():  # type: ignore[attr-defined]
            # Decrypted bytes wait inside OpenSSL, where select() cannot see them.
            self.loop.call_soon_threadsafe(self.on_readable)
        return self.loop.read_view[:n]

    def half_close(self) -> bool:
        """Send FIN after what was written, and read on (to discard) until the peer's.

        Closing a socket with unread bytes makes the kernel send a reset, and
        a reset can destroy our last words (a 4xx response, a close frame)
        before the peer reads them. False if the socket is already gone.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        self.want_read(True)
        return True

    def on_writable(self) -> None:
        if self.write_blocked:
            self.write_blocked = False
            self.set_interest(self.interest & ~WRITE)
        self.flush()

    # -- hooks --------------------------------------------------------------

    def wrote(self, sent: int, remaining: int) -> None:
        """Called after each write with what went out and what is left."""

    def on_flushed(self) -> None:
        """Called when ``out`` is empty after a flush."""

    def connection_lost(self, exc: BaseException | None) -> None:
        """The socket failed or the peer went away."""
        self.close_socket()

    def on_readable(self) -> None:
        raise NotImplementedError

    def on_timer(self, now: float) -> None:
        """A deadline armed with ``loop.timers.arm(self, when)`` has come."""

    # -- closing ------------------------------------------------------------

    def close_socket(self) -> None:
        """Forget the socket and everything queued for it. Loop thread."""
        if self.closed:
            return
        if self.interest:
            self.loop.unregister(self.sock)
            self.interest = 0
        self.closed = True
        self.loop.timers.cancel(self)
        with contextlib.suppress(OSError):
            self.sock.close()
        with self.lock:
            self.out.clear()

"""One HTTP/1.1 connection on h11, until it is upgraded or closed.

Owned by the loop thread. A complete request goes to ``fetch`` on a worker;
meanwhile the socket is not read (h11 serves one request at a time), and the
loop carries on with everything else. The answer comes back through the
loop's door as ``finish_response`` or ``finish_upgrade``.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import h11

from ._connection import LINGER_SECONDS, SocketConnection, unsent_bytes
from ._http import Headers, Request, Response
from ._loop import EventLoop

if TYPE_CHECKING:
    from .server import Server

logger = logging.getLogger("syncws")


def plain_response(status: int, message: str = "",
                   extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete ``Connection: close`` response, for answers outside h11's flow."""
    body = (message or HTTPStatus(status).phrase).encode("utf-8")
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            "Content-Type: text/plain;charset=utf-8",
            f"Content-Length: {len(body)}", "Connection: close",
            *(f"{name}: {value}" for name, value in extra)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class HttpConnection(SocketConnection):
    """The loop-side state of an accepted socket before any upgrade."""

    __slots__ = ("body", "body_size", "closing", "deadline", "h11", "in_fetch", "kernel_unsent",
                 "lingering", "request", "server", "stall_deadline")

    def __init__(self, sock: socket.socket, loop: EventLoop, peer: tuple[str, int],
                 server: Server[Any]) -> None:
        super().__init__(sock, loop, peer, threading.Lock())
        self.server = server
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=server._max_header_bytes)
        self.request: h11.Request | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.in_fetch = False
        self.closing = False
        self.lingering = False
        # While a response waits for the client to read it: when to give up
        # if no byte of it has gone out by then (moves on with every write).
        self.stall_deadline: float | None = None
        self.kernel_unsent: int | None = None
        self.deadline = loop.now + server._request_timeout
        loop.timers.arm(self, self.deadline)
        self.want_read(True)

    # -- reading --------------------------------------------------------------

    def on_readable(self) -> None:
        data = self.read()
        if data is None:
            return
        if self.lingering:
            if not data:
                self.close_socket()
            return
        self.h11.receive_data(bytes(data))
        self.process()

    def process(self) -> None:
        """Turn buffered bytes into h11 events until a request is complete."""
        conn = self.h11
        while not self.in_fetch and not self.closing and not self.closed:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                if status == 431 and self.request_line_too_long(conn.trailing_data[0]):
                    status = 414
                self.reject(status, str(exc))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.start_request(event)
            elif isinstance(event, h11.Data):
                self.body_size += len(event.data)
                if self.body_size > self.server._max_request_body_size:
                    self.reject(413, "Request body too large")
                    return
                self.body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.dispatch()
            elif isinstance(event, h11.ConnectionClosed):
                # The client half-closed: what it asked for still goes out whole
                # (RFC 9112 9.6), then the connection closes.
                self.close_after_flush()
                return

    def request_line_too_long(self, head: bytes) -> bool:
        """Whether the request line alone passes the head limit: 414, not 431 (RFC 9110 15.5.15)."""
        line_end = head.find(b"\n")  # (h11 also takes a bare LF as a line end)
        return (len(head) if line_end == -1 else line_end) > self.server._max_header_bytes

    def start_request(self, event: h11.Request) -> None:
        if not event.http_version.startswith(b"1."):
            # RFC 9110 15.6.6; a later 1.x minor version is served as 1.1 (2.5).
            self.reject(505, "HTTP version not supported")
            return
        if event.method == b"CONNECT":
            # No tunnels here; and a 2xx to CONNECT would switch h11 into one.
            self.reject(405, "CONNECT is not supported")
            return
        self.request = event
        self.body = []
        self.body_size = 0
        length = 0
        # h11 bounds only an incomplete head; one that arrived whole is measured here.
        head_size = len(event.target)
        chunked = False
        for name, value in event.headers:
            head_size += len(name) + len(value) + 4
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"host" and not _AUTHORITY.fullmatch(value):
                self.reject(400, "Invalid Host header")  # RFC 9112 3.2
                return
        if head_size > self.server._max_header_bytes:
            if self.request_line_too_long(event.target):
                self.reject(414, "URI too long")
            else:
                self.reject(431, "Request header fields too large")
            return
        if chunked and any(name == b"content-length" for name, _ in event.headers):
            # Both framings: the classic request-smuggling shape (RFC 9112 6.1).
            self.reject(400, "Both Content-Length and Transfer-Encoding")
            return
        if length > self.server._max_request_body_size:
            self.reject(413, "Request body too large")
            return
        if self.h11.they_are_waiting_for_100_continue:
            self.write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[],
                                                               reason=b"Continue")))

    def dispatch(self) -> None:
        """The request is complete: hand it to ``fetch`` on a worker."""
        event = self.request
        assert event is not None
        # raw_items(): the names as the client spelled them (Headers matches any case).
        headers = Headers([(name.decode("latin-1"), value.decode("latin-1"))
                           for name, value in event.headers.raw_items()])
        try:
            request = Request(event.method.decode("ascii"), event.target.decode("latin-1"),
                              headers, b"".join(self.body), scheme=self.server._http_scheme,
                              peer=self.peer, http_version=event.http_version.decode("ascii"))
        except ValueError:  # urllib's verdict on an absolute-form target: "http://[/"
            self.reject(400, "Invalid request target")
            return
        self.body = []
        self.in_fetch = True
        self.want_read(False)
        self.server._dispatch_fetch(self, request)

    # -- answering (loop thread, through the door) ------------------------------

    def finish_response(self, request: Request, response: Response) -> None:
        """Write ``response`` to ``request``, then read the next request."""
        self.server._request_done()
        if self.closed:
            return
        conn = self.h11
        status = response.status
        headers = [(name, value) for name, value in response.headers
                   if name.lower() not in ("content-length", "transfer-encoding")]
        has_body = status >= 200 and status not in (204, 304)  # RFC 9110 6.4.1
        length = response_length(response, request.method, has_body)
        if length is not None:
            headers.append(("Content-Length", length))
        if self.server._closing_all:
            # stop(close_active_connections=True) came while fetch ran: the
            # answer goes out, then the connection closes (h11 sees to it).
            headers.append(("Connection", "close"))
        headers.append(("Date", http_date(time.time())))
        try:
            try:
                phrase = HTTPStatus(status).phrase.encode("ascii")
            except ValueError:
                phrase = b""
            data = conn.send(h11.Response(
                status_code=status, reason=phrase,
                headers=[(n.encode("ascii"), v.encode("latin-1")) for n, v in headers]))
            assert data is not None
            if response.body and has_body and request.method != "HEAD":
                data += conn.send(h11.Data(data=response.body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
        except Exception as exc:  # what Response let through and h11 refused
            logger.error("syncws: could not send the response to %s %s: %r", request.method,
                         request.target, exc)
            self.write(plain_response(500, "Internal Server Error"))
            self.in_fetch = False
            self.close_after_flush()
            return
        logger.debug("%s %s %s %d %d", self.peer[0], request.method, request.target,
                     response.status, len(response.body))
        self.write(data)
        self.in_fetch = False
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            # The next request is read once this response is out (on_flushed):
            # a client that pipelines requests without reading the answers must
            # not make us queue answers without end.
            conn.start_next_cycle()
            self.request = None
        else:
            self.close_after_flush()

    def finish_upgrade(self, request: Request) -> None:
        """Write the 101 and hand the socket over to a WebSocket connection."""
        self.server._request_done()
        if self.closed:
            return
        if self.server._closing_all:
            # stop(close_active_connections=True) came while fetch ran.
            self.reject(503, "Server is shutting down")
            return
        trailing, _ = self.h11.trailing_data
        # The socket now belongs to the WebSocket connection; this object lets go.
        # The timer heap may keep it until its deadline, so drop the parser now.
        self.closed = True
        del self.h11
        self.request = None
        self.server._upgraded(self, request, bytes(trailing))

    def reject(self, status: int, message: str) -> None:
        """Answer an unusable request with ``status`` and close."""
        logger.debug("%s rejected: %d %s", self.peer[0], status, message)
        self.write(plain_response(status, message))
        self.close_after_flush()

    def close_after_flush(self) -> None:
        self.closing = True
        self.want_read(False)
        self.loop.request_flush(self)

    # -- hooks --------------------------------------------------------------

    def wrote(self, sent: int, remaining: int) -> None:
        if remaining and (sent or self.stall_deadline is None):
            self.stall_deadline = self.loop.now + self.server._request_timeout
            self.kernel_unsent = unsent_bytes(self.sock)
            self.loop.timers.arm(self, self.stall_deadline)

    def response_moved(self) -> bool:
        """Whether the client took any of our bytes since the last look.

        The kernel's send buffer can hold megabytes: a slow client may read
        for a long time before we can write again, so count its progress there.
        """
        unsent = unsent_bytes(self.sock)
        moved = unsent is not None and self.kernel_unsent is not None and \
            unsent < self.kernel_unsent
        self.kernel_unsent = unsent
        return moved

    def on_flushed(self) -> None:
        self.stall_deadline = None
        if self.closing:
            if not self.lingering:
                # Half-close, then read and discard what the client still sends,
                # so our answer is not destroyed by a reset.
                self.lingering = True
                if not self.half_close():
                    self.close_socket()
                    return
                self.loop.timers.arm(self, self.loop.now + LINGER_SECONDS)
        elif not self.in_fetch:
            # The response is out: the wait for the next request starts now
            # (however long a slow client took to read it), and a pipelined
            # request may already wait in h11.
            self.deadline = self.loop.now + self.server._request_timeout
            self.loop.timers.arm(self, self.deadline)
            self.want_read(True)
            self.process()

    def on_timer(self, now: float) -> None:
        if self.closed:
            return
        if self.lingering:
            self.close_socket()
        elif self.stall_deadline is not None:
            if now >= self.stall_deadline:
                if not self.response_moved():
                    logger.debug("%s dropped: it stopped reading our response", self.peer[0])
                    self.close_socket()
                    return
                self.stall_deadline = now + self.server._request_timeout
            self.loop.timers.arm(self, self.stall_deadline)
        elif not self.in_fetch and not self.closing:
            if now >= self.deadline:
                logger.debug("%s dropped: no complete request within %ss", self.peer[0],
                             self.server._request_timeout)
                self.close_socket()
            else:
                self.loop.timers.arm(self, self.deadline)

    def close_socket(self) -> None:
        if not self.closed:
            super().close_socket()
            self.server._http_finished(self)


def response_length(response: Response, method: str, has_body: bool) -> str | None:
    """The Content-Length to send, or None for none (RFC 9110 8.6).

    None for 1xx, 204 and 304 (a 304 keeps the one its ``fetch`` gave, the
    GET's); a HEAD response with an empty body keeps its ``fetch``'s too (a
    WSGI app answers HEAD with the GET's headers and no body); otherwise the
    body's length.
    """
    given = [value for name, value in response.headers if name.lower() == "content-length"]
    if not has_body:
        keep = given and response.status == 304 and _is_ascii_digits(given[-1])
        return given[-1] if keep else None
    if method == "HEAD" and not response.body and given and _is_ascii_digits(given[-1]):
        return given[-1]
    return str(len(response.body))


# What a Host header may hold: an authority (RFC 3986 3.2), nothing that
# would move the path, the query or the user part of the URL.
_AUTHORITY = re.compile(rb"[A-Za-z0-9\-._~%!$&'()*+,;=:\[\]]*")

_date_cache: tuple[int, str] = (0, "")


def http_date(now: float) -> str:
    """The Date header's value (RFC 9110 6.6.1), computed once per second."""
    global _date_cache
    second, text = _date_cache
    if int(now) != second:
        text = formatdate(now, usegmt=True)
        _date_cache = (int(now), text)
    return text


def _is_ascii_digits(text: str) -> bool:
    # str.isdigit() also takes "²" and other digits that are no HTTP length.
    return text.isascii() and text.isdigit()

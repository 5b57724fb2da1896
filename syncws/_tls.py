"""TLS for the server: building the context, and the handshake inside the loop.

The handshake of an accepted socket runs non-blocking on the loop thread, one
step per readiness event, so a slow or silent TLS client costs one
registered socket and never holds up anyone else. It is dropped when the
request timeout passes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._loop import READ, WRITE, EventLoop

if TYPE_CHECKING:
    from ._timers import TimerSlot
    from .server import Server

logger = logging.getLogger("syncws")

# What a non-blocking read or write may raise when it merely has to wait.
WOULD_BLOCK: tuple[type[BaseException], ...] = (
    BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

_TLS_KEYS = {"certfile", "keyfile", "password", "ca_certs"}


def server_context(tls: object) -> ssl.SSLContext:
    """An SSLContext from ``serve(tls=...)``: a context (checked), or a dict of files.

    The dict: ``certfile`` (the chain, PEM), ``keyfile`` and ``password``
    (optional), ``ca_certs`` (optional: then only clients with a certificate
    these CAs signed get in).

    >>> server_context({"certfile": "cert.pem", "keyfile": "key.pem"})  # doctest: +SKIP
    """
    if isinstance(tls, ssl.SSLContext):
        check_serves(tls)
        return tls
    if not isinstance(tls, Mapping):
        raise TypeError("tls must be an ssl.SSLContext or a dict with certfile and keyfile")
    unknown = set(tls) - _TLS_KEYS
    if unknown:
        raise TypeError(f"unknown tls key(s) {sorted(unknown)}; known: {sorted(_TLS_KEYS)}")
    certfile = tls.get("certfile")
    if not isinstance(certfile, (str, os.PathLike)):
        raise TypeError("tls needs 'certfile' (the certificate chain, PEM)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, tls.get("keyfile"), tls.get("password"))
    if tls.get("ca_certs"):
        # Why else name CAs on a server: only clients with a certificate they
        # signed get in (mutual TLS). Anything finer: pass an SSLContext.
        context.load_verify_locations(tls["ca_certs"])
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def check_serves(context: ssl.SSLContext) -> None:
    """``ValueError`` unless ``context`` can complete a handshake as a server.

    Run once at ``serve()``, in memory: a client context
    (``ssl.create_default_context()``) or one without a certificate would
    otherwise fail every connection, one traceback or alert at a time.
    """
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        server = context.wrap_bio(to_server, to_client, server_side=True)
    except (ValueError, ssl.SSLError) as exc:
        raise ValueError(f"tls: this SSLContext cannot serve ({exc}); build it with "
                         "ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)") from None
    if context.verify_mode != ssl.CERT_NONE or context.sni_callback is not None:
        # It wants a client certificate, which a trial client would not have, or
        # picks its certificate by server name, which a trial client cannot know.
        return
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    client = client_context.wrap_bio(to_client, to_server)
    done: set[ssl.SSLObject] = set()
    try:
        for _ in range(8):  # a TLS 1.2 or 1.3 handshake takes 2-4 flights
            for side in (client, server):
                if side not in done:
                    with contextlib.suppress(ssl.SSLWantReadError):
                        side.do_handshake()
                        done.add(side)
            if len(done) == 2:
                return
    except ssl.SSLError as exc:
        raise ValueError(f"tls: this SSLContext cannot complete a TLS handshake as a server "
                         f"({exc.reason or exc}); is a certificate loaded "
                         "(load_cert_chain)?") from None


class TlsHandshake:
    """An accepted socket whose TLS handshake is still running (loop thread)."""

    __slots__ = ("closed", "deadline", "in_fetch", "loop", "peer", "server", "sock",
                 "timer_at", "timer_slot")

    def __init__(self, sock: ssl.SSLSocket, loop: EventLoop, peer: tuple[str, int],
                 server: Server[Any]) -> None:
        self.sock = sock
        self.loop = loop
        self.peer = peer
        self.server = server
        self.closed = False
        self.in_fetch = False  # read by Server.stop like an HTTP connection's
        self.timer_at: float | None = None
        self.timer_slot: TimerSlot | None = None
        self.deadline = loop.now + server._request_timeout
        loop.register(sock, READ, self)
        loop.timers.arm(self, self.deadline)

    def on_readable(self) -> None:
        self.step()

    def on_writable(self) -> None:
        self.step()

    def step(self) -> None:
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.loop.modify(self.sock, READ, self)
        except ssl.SSLWantWriteError:
            self.loop.modify(self.sock, WRITE, self)
        except (ssl.SSLError, OSError) as exc:
            logger.debug("%s TLS handshake failed: %s", self.peer[0], exc)
            self.close_socket()
        else:
            self.loop.unregister(self.sock)
            self.closed = True
            self.loop.timers.cancel(self)
            self.server._tls_ready(self, self.sock)

    def on_timer(self, now: float) -> None:
        if not self.closed:
            logger.debug("%s dropped: no TLS handshake within %ss", self.peer[0],
                         self.server._request_timeout)
            self.close_socket()

    def close_socket(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.unregister(self.sock)
        self.loop.timers.cancel(self)
        with contextlib.suppress(OSError):
            self.sock.close()
        self.server._http_finished(self)


def wrap_accepted(context: ssl.SSLContext, sock: socket.socket) -> ssl.SSLSocket:
    """Wrap an accepted, non-blocking socket; the handshake is done later, in steps."""
    return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)

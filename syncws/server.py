"""``serve()`` and ``Server``: the public face of the server side."""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic

from . import _frames
from ._cork import CORKS, Part, queue_part
from ._deflate import MIN_COMPRESS_SIZE, DeflateExtension, make_compressor, negotiate
from ._frames import encode_frame
from ._handshake import build_101, make_decision, upgrade_problem
from ._http import HeaderItems, Request, Response
from ._http_conn import HttpConnection, plain_response
from ._loop import READ, EventLoop
from ._options import (
    WebSocketConfig,
    check_bool,
    check_plain_callable,
    check_positive_int,
    check_seconds,
    parse_websocket,
)
from ._pubsub import TopicRegistry, check_topic
from ._tls import TlsHandshake, server_context, wrap_accepted
from ._workers import WorkerPool
from ._ws_conn import ACCEPTED, BACKPRESSURE, DROPPED, WsConnection, send_result
from .redis_bridge import RedisBridge
from .types import DataT as T
from .types import SocketAddress
from .websocket import ServerWebSocket, check_compress

if TYPE_CHECKING:
    from ._timers import TimerSlot

__all__ = ["Server", "WebSocketHandler", "serve"]

logger = logging.getLogger("syncws")


Fetch = Callable[[Request, "Server[T]"], "Response | None"]

ACCEPTS_PER_TURN = 64
EMFILE_PAUSE = 0.1
SATURATION_WARNING_AFTER = 1.0


class WebSocketHandler(Generic[T]):
    """Base class for handlers written as a class, typed by ``ws.data``'s type.

    Define any of ``open(ws)``, ``message(ws, msg)`` (required),
    ``close(ws, code, reason)``, ``drain(ws)``, ``ping(ws, data)``,
    ``pong(ws, data)``, ``error(ws, exc)`` and override option attributes::

        class Chat(syncws.WebSocketHandler[User]):
            idle_timeout = 60

            def message(self, ws: syncws.ServerWebSocket[User], msg: str | bytes) -> None:
                ws.send(f"{ws.data.name}: {msg}")
    """

    idle_timeout: float = 120.0
    max_payload_length: int = 16 * 1024 * 1024
    backpressure_limit: int = 1024 * 1024
    close_on_backpressure_limit: bool = False
    send_pings: bool = True
    publish_to_self: bool = False
    per_message_deflate: bool | Mapping[str, Any] = False


class _Listener:
    """The listening socket, registered with the loop."""

    __slots__ = ("server", "sock", "timer_at", "timer_slot")

    def __init__(self, server: Server[Any], sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.timer_at: float | None = None
        self.timer_slot: TimerSlot | None = None

    def on_readable(self) -> None:
        self.server._accept()

    def on_writable(self) -> None:  # pragma: no cover - never asked for
        pass

    def on_timer(self, now: float) -> None:
        # The pause after EMFILE is over: accept again.
        self.server._resume_accepting()


# bind() errors that are about the address asked for.
_LISTEN_ERRNOS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


class Server(Generic[T]):
    """A running syncws server, as returned by ``serve()``.

    Every method is thread-safe. The server runs on its own threads (one
    I/O loop, ``workers`` handler threads); it keeps the process alive until
    ``stop()``. Use it as a context manager to stop it on exit.
    """

    def __init__(self, fetch: Fetch[T] | None, websocket: object, *, hostname: str, port: int,
                 tls: object, workers: int | None, reuse_port: bool,
                 max_connections: int | None, max_request_body_size: int,
                 request_timeout: float, bridge: RedisBridge | None = None) -> None:
        if fetch is not None:
            check_plain_callable(fetch, "fetch", "req, server")
        self._tls_context = None if tls is None else server_context(tls)
        if workers is None:
            workers = min(32, (os.cpu_count() or 1) + 4)
        check_positive_int("workers", workers)
        if max_connections is not None:
            check_positive_int("max_connections", max_connections)
        check_seconds("request_timeout", request_timeout)
        if not 0 < request_timeout < math.inf:
            raise ValueError(f"request_timeout must be a finite number of seconds > 0, "
                             f"not {request_timeout!r}")
        check_bool("reuse_port", reuse_port)
        if not isinstance(hostname, str):
            raise TypeError(f"hostname must be a str, not {type(hostname).__name__}")
        if not isinstance(port, int) or isinstance(port, bool):
            raise TypeError(f"port must be an int, not {type(port).__name__}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {port}")
        if not isinstance(max_request_body_size, int) or isinstance(max_request_body_size, bool):
            raise TypeError(f"max_request_body_size must be an int, "
                            f"not {type(max_request_body_size).__name__}")
        if max_request_body_size < 0:
            raise ValueError(f"max_request_body_size must be >= 0, not {max_request_body_size}")
        if bridge is not None:
            if not isinstance(bridge, RedisBridge):
                raise TypeError(f"bridge must be a syncws.RedisBridge, not {type(bridge).__name__}")
            bridge._check_unused()
        self._fetch = fetch
        self._ws_config: WebSocketConfig | None = (
            None if websocket is None else parse_websocket(websocket))
        self._max_connections = max_connections
        self._max_request_body_size = max_request_body_size
        self._max_header_bytes = 32 * 1024
        self._request_timeout = float(request_timeout)
        self._http_scheme = "http" if self._tls_context is None else "https"
        self._bridge = bridge
        self._registry: TopicRegistry[WsConnection] = TopicRegistry(
            None if bridge is None else bridge._topic_changed)

        family = socket.AF_INET6 if ":" in hostname else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((hostname, port))
            # The kernel caps it at net.core.somaxconn: a connection storm waits in
            # the queue rather than in SYN retries (1 s, then 3 s).
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if exc.errno not in _LISTEN_ERRNOS:
                raise
            # The bare error does not say which address: the port came from config.
            hint = " (is another server running on it?)" if exc.errno == errno.EADDRINUSE else ""
            host = f"[{hostname}]" if ":" in hostname else hostname
            raise type(exc)(exc.errno, f"{exc.strerror}: cannot listen on {host}:{port}"
                                       f"{hint}") from None
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._hostname = hostname
        self._port: int = sock.getsockname()[1]

        # Owned by the loop thread.
        self._loop = EventLoop()
        self._listener: _Listener | None = _Listener(self, sock)
        self._http_conns: set[HttpConnection | TlsHandshake] = set()
        self._ws_conns: set[WsConnection] = set()
        self._saturated_since: float | None = None
        self._housekeeper = _Housekeeper(self)
        # Guarded by self._lock.
        self._lock = threading.Lock()
        self._all_closed = threading.Condition(self._lock)
        self._open_websockets = 0
        self._pending_close_handlers = 0
        self._pending_requests = 0
        self._connections = 0
        self._stopped = threading.Event()
        self._listener_closed = threading.Event()
        # stop(close_active_connections=True) ran (loop thread): a fetch still
        # running then gets its connection closed once it answers.
        self._closing_all = False
        self._counters = {"messages_in": 0, "bytes_in": 0, "messages_out": 0, "bytes_out": 0,
                          "messages_dropped": 0, "messages_published": 0}

        self._pool = WorkerPool(workers)
        self._loop.before_wait = self._pool.start_runners
        if bridge is not None:
            try:
                bridge._start(self._deliver_local, self._has_subscribers)
            except BaseException:
                self._pool.shutdown(wait=False)
                sock.close()
                raise
        self._loop.register(sock, READ, self._listener)
        self._loop.start()
        self._loop.call_soon_threadsafe(self._housekeeping)

    # -- facts ----------------------------------------------------------------

    @property
    def hostname(self) -> str:
        """The address the server listens on, as given to ``serve()``."""
        return self._hostname

    @property
    def port(self) -> int:
        """The port the server listens on: the free one picked for ``port=0``."""
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port/`` (``ws`` clients connect to the same place)."""
        host = self.hostname
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1" if host != "::" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"{self._http_scheme}://{host}:{self.port}/"

    @property
    def pending_websockets(self) -> int:
        """How many WebSocket connections are open."""
        return self._open_websockets

    @property
    def pending_requests(self) -> int:
        """How many HTTP requests are being handled by ``fetch`` now."""
        return self._pending_requests

    def request_ip(self, req: Request) -> SocketAddress | None:
        """The address ``req`` came from, as Bun's ``server.requestIP``."""
        peer = req._peer
        if peer is None:
            return None
        return SocketAddress(peer[0], peer[1], "IPv6" if ":" in peer[0] else "IPv4")

    def stats(self) -> dict[str, int]:
        """A snapshot of the server's counters, for operators. Thread-safe."""
        with self._lock:
            snapshot: dict[str, int] = dict(self._counters)
            snapshot["open_websockets"] = self._open_websockets
            snapshot["connections"] = self._connections
            snapshot["pending_requests"] = self._pending_requests
        snapshot["paused_websockets"] = sum(
            1 for c in list(self._ws_conns) if c.backlog_paused or c.user_paused)
        snapshot["workers"] = self._pool.size
        snapshot["workers_busy"] = self._pool.busy
        snapshot["worker_backlog"] = self._pool.backlog
        if self._bridge is not None:
            snapshot.update(self._bridge._stats())
        return snapshot

    # -- upgrade ----------------------------------------------------------------

    def upgrade(self, req: Request, headers: HeaderItems | None = None,
                data: T | None = None) -> bool:
        """Accept ``req`` as a WebSocket; call it from ``fetch`` and return None.

        Only records the decision: the 101 goes out when ``fetch`` returns,
        then ``open`` runs. Returns False for a request that is not a valid
        WebSocket upgrade and for a second call on the same request.
        ``headers`` go into the 101 (``Set-Cookie`` ...); a
        ``Sec-WebSocket-Protocol`` entry picks one of the client's
        subprotocols (``ValueError`` otherwise). ``data`` becomes ``ws.data``.
        """
        if self._ws_config is None:
            raise TypeError('this server has no websocket handlers: pass websocket={...}')
        if not isinstance(req, Request):
            raise TypeError(f"upgrade expects a syncws.Request, not {type(req).__name__}")
        if req._upgrade_claimed or \
                upgrade_problem(req.method, req.headers, req._http_version) is not None:
            return False
        decision = make_decision(req.headers, headers, data)
        req._upgrade_claimed = True
        req._upgrade = decision
        return True

    # -- pub/sub ----------------------------------------------------------------

    def publish(self, topic: str, message: str | bytes | bytearray | memoryview,
                compress: bool = False) -> int:
        """Send ``message`` to every subscriber of ``topic``.

        Thread-safe; never blocks: the frame is encoded once and queued for
        each subscriber. Returns the payload length, -1 if a subscriber is
        now over its backpressure limit, 0 if it reached nobody or was
        dropped for one (as Bun's ``server.publish``). With a ``bridge`` the
        message also goes to the other processes; the result is still this
        process's delivery.
        """
        return self._publish(topic, message, compress, None)

    def _publish(self, topic: str, message: object, compress: bool,
                 exclude: WsConnection | None) -> int:
        check_topic(topic)
        check_compress(compress)
        opcode, payload = _frames.message_payload(message)
        result = self._deliver_local(topic, opcode, payload, compress, exclude)
        if self._bridge is not None:
            self._bridge._publish(topic, opcode, payload, compress)
        return result

    def _has_subscribers(self, topic: str) -> bool:
        return self._registry.count(topic) > 0

    def _deliver_local(self, topic: str, opcode: int, payload: bytes, compress: bool,
                       exclude: WsConnection | None = None) -> int:
        """Queue one message for this process's subscribers of ``topic`` (no bridge)."""
        subscribers = self._registry.subscribers(topic)
        if not subscribers or (len(subscribers) == 1 and subscribers[0] is exclude):
            return 0
        self._counters["messages_published"] += 1
        frame = encode_frame(opcode, payload)
        deflate_it = compress and len(payload) >= MIN_COMPRESS_SIZE
        # Without context takeover one compressed frame serves every
        # subscriber with the same parameters.
        shared_frames: dict[tuple[int, int, int], bytes] = {}
        # A publish from inside ws.cork() joins the cork: it keeps its place
        # among that socket's sends.
        corks = CORKS.corks
        worst = ACCEPTED
        dropped = 0
        for conn in subscribers:
            if conn is exclude:
                continue
            deflate = conn.deflate if deflate_it else None
            if deflate is None and not corks:
                result = conn.enqueue(frame)  # the common case: the same bytes for all
            else:
                part: Part
                if deflate is None:
                    part = frame
                elif deflate.shared:
                    shared = shared_frames.get(deflate.key)
                    if shared is None:
                        shared = shared_frames[deflate.key] = deflate.frame(opcode, payload)
                    part = shared
                else:
                    part = (opcode, payload)
                result = queue_part(conn, part, corks)
            if result != ACCEPTED:
                # Worst wins, as in Bun: dropped over backpressure over accepted.
                if result == DROPPED:
                    dropped += 1
                    worst = DROPPED
                elif worst == ACCEPTED:
                    worst = BACKPRESSURE
        reached = len(subscribers) - dropped - (exclude is not None and exclude in subscribers)
        self._counters["messages_out"] += reached
        return send_result(worst, len(payload))

    def subscriber_count(self, topic: str) -> int:
        """How many sockets of this process are subscribed to ``topic`` (0 if none).

        With a bridge, subscribers in other processes are not counted.
        """
        check_topic(topic)
        return self._registry.count(topic)

    # -- lifecycle ----------------------------------------------------------------

    def stop(self, close_active_connections: bool = False, timeout: float = 5.0) -> None:
        """Stop accepting connections; open ones go on unless told otherwise.

        With ``close_active_connections=True`` every WebSocket is closed with
        1001 "Server closed" and idle HTTP connections are dropped; a request
        still in ``fetch`` gets its answer with ``Connection: close`` (an
        upgrade then gets 503). The call returns once the close handlers
        and those fetches ran or ``timeout`` passed (at once when called from
        a handler, which would otherwise wait on itself).
        """
        check_bool("close_active_connections", close_active_connections)
        check_seconds("timeout", timeout)
        if not 0 <= timeout < math.inf:  # NaN fails this too
            raise ValueError(f"timeout must be a finite number of seconds >= 0, not {timeout!r}")
        self._stopped.set()
        self._loop.call_soon_threadsafe(partial(self._stop_in_loop, close_active_connections))
        if self._loop.in_loop_thread():
            return
        deadline = time.monotonic() + timeout
        self._listener_closed.wait(timeout)
        if not close_active_connections or self._pool.is_worker_thread():
            return
        with self._lock:
            self._all_closed.wait_for(
                lambda: self._open_websockets == 0 and self._pending_close_handlers == 0
                and self._pending_requests == 0, timeout)
        if self._bridge is not None:
            # Let it flush what the close handlers published ("... left").
            self._maybe_stop_bridge()
            self._bridge._join(max(0.1, deadline - time.monotonic()))

    def serve_forever(self) -> None:
        """Block until ``stop()`` is called; Ctrl-C and SIGTERM stop gracefully.

        On a signal it calls ``stop(close_active_connections=True)``; a plain
        ``stop()`` from elsewhere makes it return with connections still open.
        """
        previous = None
        if threading.current_thread() is threading.main_thread():
            def on_sigterm(signum: int, frame: object) -> None:
                raise KeyboardInterrupt
            previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            self.stop(close_active_connections=True)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def __enter__(self) -> Server[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop(close_active_connections=True)

    def __repr__(self) -> str:
        return f"<syncws.Server {self.url}>"

    # -- loop thread --------------------------------------------------------------

    def _stop_in_loop(self, close_active: bool) -> None:
        listener = self._listener
        if listener is not None:
            self._listener = None
            self._loop.unregister(listener.sock)
            listener.sock.close()
        self._listener_closed.set()
        if close_active:
            self._closing_all = True
            for conn in list(self._ws_conns):
                conn.request_close(1001, "Server closed")
            for http in list(self._http_conns):
                if not http.in_fetch:
                    http.close_socket()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._listener is None and not self._ws_conns and not self._http_conns:
            with self._lock:
                self._all_closed.notify_all()
            self._loop.stop()
            # Queued close handlers run first; then the workers end.
            self._pool.shutdown(wait=False)
            self._maybe_stop_bridge()

    def _maybe_stop_bridge(self) -> None:
        """Once the server is stopped and nothing can publish any more, end the bridge."""
        if self._bridge is None or not self._listener_closed.is_set():
            return
        with self._lock:
            idle = self._open_websockets == 0 and self._pending_close_handlers == 0
        if idle:
            self._bridge._signal_stop()

    def _accept(self) -> None:
        listener = self._listener
        if listener is None:
            return
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, addr = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: the listener would stay readable and
                    # the loop would spin; stop accepting for a moment.
                    logger.warning("syncws: cannot accept (%s); pausing accepts", exc)
                    self._loop.unregister(listener.sock)
                    self._loop.timers.arm(listener, self._loop.now + EMFILE_PAUSE)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            if self._max_connections is not None and self._connections >= \
                    self._max_connections:
                if self._tls_context is None:  # (a TLS client would read it as garbage)
                    with contextlib.suppress(OSError):
                        sock.send(plain_response(503, "Too many connections"))
                sock.close()
                continue
            try:
                sock.setblocking(False)
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._tls_context is not None:
                    # A peer already gone (a port scan's connect and reset) fails
                    # the wrap, which then leaves its socket to the GC: look first.
                    sock.getpeername()
                    sock = wrap_accepted(self._tls_context, sock)
            except OSError as exc:
                logger.debug("%s dropped on accept: %s", addr[0], exc)
                sock.close()
                continue
            with self._lock:
                self._connections += 1
            if isinstance(sock, ssl.SSLSocket):
                self._http_conns.add(TlsHandshake(sock, self._loop, addr[:2], self))
            else:
                self._http_conns.add(HttpConnection(sock, self._loop, addr[:2], self))

    def _tls_ready(self, handshake: TlsHandshake, sock: ssl.SSLSocket) -> None:
        """The TLS handshake is done: speak HTTP over the wrapped socket."""
        self._http_conns.discard(handshake)
        self._http_conns.add(HttpConnection(sock, self._loop, handshake.peer, self))

    def _resume_accepting(self) -> None:
        listener = self._listener
        if listener is not None:
            self._loop.register(listener.sock, READ, listener)

    def _housekeeping(self) -> None:
        """Once a second: warn when every worker has been busy for a while."""
        pool = self._pool
        if pool.busy >= pool.size and pool.backlog:
            now = self._loop.now
            if self._saturated_since is None:
                self._saturated_since = now
            elif now - self._saturated_since >= SATURATION_WARNING_AFTER:
                logger.warning("syncws: all %d workers busy for %.1fs, %d tasks waiting; "
                               "handlers that block hold up others", pool.size,
                               now - self._saturated_since, pool.backlog)
                self._saturated_since = now
        else:
            self._saturated_since = None
        if self._loop._running:
            self._loop.timers.arm(self._housekeeper, self._loop.now + 1.0)

    def _http_finished(self, conn: HttpConnection | TlsHandshake) -> None:
        self._http_conns.discard(conn)
        with self._lock:
            self._connections -= 1
        if self._listener is None:
            self._maybe_finish()

    def _upgraded(self, http: HttpConnection, req: Request, trailing: bytes) -> None:
        """Turn ``http``'s socket into a WebSocket: write the 101, queue ``open``."""
        decision = req._upgrade
        assert decision is not None and self._ws_config is not None
        self._http_conns.discard(http)
        self._loop.timers.cancel(http)  # its request deadline is over
        deflate_config = self._ws_config.deflate
        try:
            agreement = None if deflate_config is None else negotiate(
                req.headers.get_all("sec-websocket-extensions"), deflate_config)
        except Exception:
            # negotiate() never raises on what a client sends; if a bug made it, the
            # connection still opens (plain), rather than leak its socket and slot.
            logger.exception("syncws: permessage-deflate negotiation failed")
            agreement = None
        conn = WsConnection(http.sock, self._loop, http.peer, http.lock, self,
                            decision.subprotocol, extensions=[] if agreement is None else [
                                DeflateExtension(agreement, self._ws_config.max_payload_length)])
        if agreement is not None and deflate_config is not None:
            conn.deflate = make_compressor(agreement, deflate_config)
        # Take over what the HTTP side had queued and its registration.
        conn.out = http.out
        conn.interest = http.interest
        if conn.interest:
            self._loop.modify(conn.sock, conn.interest, conn)
        conn.ws = ServerWebSocket(conn, self, decision.data)
        self._ws_conns.add(conn)
        with self._lock:
            self._open_websockets += 1
            self._pending_close_handlers += 1
        conn.start(build_101(decision, None if agreement is None else agreement.response),
                   trailing)

    def _ws_finished(self, conn: WsConnection) -> None:
        """``conn``'s socket is closed; its close handler is queued next."""
        self._ws_conns.discard(conn)
        with self._lock:
            self._open_websockets -= 1
            self._connections -= 1
            if self._pending_close_handlers == 0 and self._open_websockets == 0:
                self._all_closed.notify_all()
        if self._listener is None:
            self._maybe_finish()

    # -- worker threads -------------------------------------------------------------

    def _dispatch_fetch(self, conn: HttpConnection, req: Request) -> None:
        with self._lock:
            self._pending_requests += 1
        self._pool.submit_after_turn(self._run_fetch, conn, req)

    def _run_fetch(self, conn: HttpConnection, req: Request) -> None:
        try:
            if self._fetch is None:
                result: object = self._default_fetch(req)
            else:
                result = self._fetch(req, self)
        except BaseException:  # sys.exit() in fetch must not take a worker down with it
            logger.exception("syncws: fetch raised for %s %s", req.method, req.target)
            req._upgrade = None
            result = Response("Internal Server Error", status=500)
        if req._upgrade is not None:
            if result is not None:
                logger.warning("syncws: fetch returned %r after upgrading %s; ignored",
                               result, req.target)
            conn.loop.call_soon_threadsafe(partial(conn.finish_upgrade, req))
            return
        if result is None:
            logger.error("syncws: fetch returned None without upgrading %s %s",
                         req.method, req.target)
            result = Response("Internal Server Error", status=500)
        elif not isinstance(result, Response):
            logger.error("syncws: fetch returned %r, not a syncws.Response", result)
            result = Response("Internal Server Error", status=500)
        conn.loop.call_soon_threadsafe(partial(conn.finish_response, req, result))

    def _default_fetch(self, req: Request) -> Response | None:
        if self._ws_config is not None and self.upgrade(req):
            return None
        # (No problem with the upgrade: this server takes no WebSocket at all.)
        status, message = upgrade_problem(req.method, req.headers, req._http_version) or (
            426, "Upgrade Required")
        # A 426 names the protocol to upgrade to (RFC 9110 15.5.22), and Upgrade
        # goes with Connection: upgrade (7.8); the version is for RFC 6455 4.4.
        headers = {"Upgrade": "websocket", "Connection": "Upgrade",
                   "Sec-WebSocket-Version": "13"} if status == 426 else None
        return Response(message, status=status, headers=headers)

    def _request_done(self) -> None:
        with self._lock:
            self._pending_requests -= 1
            if self._pending_requests == 0:
                self._all_closed.notify_all()

    def _close_handler_done(self, conn: WsConnection) -> None:
        with self._lock:
            self._pending_close_handlers -= 1
            if self._pending_close_handlers == 0 and self._open_websockets == 0:
                self._all_closed.notify_all()
        if self._bridge is not None:
            self._maybe_stop_bridge()

    # Counters: written from the loop thread (in) and from senders (out, dropped);
    # they are operator figures, so a rare lost update is acceptable.
    def _count_in(self, nbytes: int, messages: int) -> None:
        counters = self._counters
        counters["bytes_in"] += nbytes
        counters["messages_in"] += messages

    def _count_dropped(self) -> None:
        self._counters["messages_dropped"] += 1


class _Housekeeper:
    __slots__ = ("server", "timer_at", "timer_slot")

    def __init__(self, server: Server[Any]) -> None:
        self.server = server
        self.timer_at: float | None = None
        self.timer_slot: TimerSlot | None = None

    def on_timer(self, now: float) -> None:
        self.server._housekeeping()


def serve(fetch: Fetch[T] | None = None,
          websocket: WebSocketHandler[T] | Mapping[str, Any] | None = None, *,
          hostname: str = "0.0.0.0", port: int = 3000,
          tls: object = None, workers: int | None = None, reuse_port: bool = False,
          max_connections: int | None = None, max_request_body_size: int = 128 * 1024 * 1024,
          request_timeout: float = 10.0, bridge: RedisBridge | None = None) -> Server[T]:
    """Start a server and return it once it listens, as Bun's ``Bun.serve``.

    ``fetch(req, server)`` runs on a worker for every HTTP request and either
    calls ``server.upgrade(req, ...)`` and returns None, or returns a
    ``Response``. ``websocket`` holds the handlers and options, as a mapping
    or a ``WebSocketHandler`` object::

        server = syncws.serve(
            fetch=lambda req, server: None if server.upgrade(req)
                  else syncws.Response("Not a WebSocket request", status=400),
            websocket={"message": lambda ws, msg: ws.send(f"Echo: {msg}")},
            port=3000,
        )
        server.serve_forever()

    ``tls`` serves ``wss://`` and ``https://``: an ``ssl.SSLContext``, or
    ``{"certfile": ..., "keyfile": ...}`` (also ``password``, and ``ca_certs``
    to let in only clients with a certificate those CAs signed).
    ``reuse_port=True`` lets several processes listen on one port (the
    kernel spreads connections); ``bridge=syncws.RedisBridge(url)`` carries
    publishes to the subscribers of the other processes and machines.
    """
    return Server(fetch, websocket, hostname=hostname, port=port, tls=tls, workers=workers,
                  reuse_port=reuse_port, max_connections=max_connections,
                  max_request_body_size=max_request_body_size,
                  request_timeout=request_timeout, bridge=bridge)

"""The Bun/browser-style WebSocket client: :class:`WebSocket` and its events.

::

    ws = syncws.WebSocket("ws://localhost:3000", headers={"Authorization": "Bearer token"})
    ws.add_event_listener("open", lambda event: ws.send("Hello"))
    ws.add_event_listener("message", lambda event: print(event.data))

Per connection, a daemon thread connects and then reads (the blocking
client's read loop, :mod:`syncws.client`), another waits to finish a closing
handshake, and one non-daemon thread turns what is received into events and
calls the listeners. All three start in the constructor.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import ssl as ssl_module
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar, overload

from . import _frames
from ._client_handshake import (
    Cancel,
    HeaderArg,
    normalize_headers,
    normalize_subprotocols,
    parse_url,
)
from ._frames import OP_PING, OP_PONG
from .client import (
    _MESSAGE,
    _TOO_BIG,
    _WAKE,
    DEFAULT_MAX_PAYLOAD_LENGTH,
    INBOX_MAX_BYTES,
    INBOX_MAX_MESSAGES,
    ClientWebSocket,
    _check_options,
    _Closer,
    _connect,
    _Inbox,
)
from .exceptions import ConnectionClosed, InvalidStateError, PayloadTooBig
from .types import ReadyState

__all__ = ["CloseEvent", "ErrorEvent", "Event", "MessageEvent", "WebSocket"]

logger = logging.getLogger("syncws")

_client_ids = itertools.count(1)

EventType = Literal["open", "message", "close", "error"]
_EVENT_TYPES: tuple[str, ...] = ("open", "message", "close", "error")
_HANDLER_NAMES = frozenset("on" + t for t in _EVENT_TYPES)

# How long after the constructor, or after a type's first listener, an event
# held for a type nobody listens to yet holds back the events after it (see
# WebSocket): long enough for a burst of add_event_listener calls, even on a
# thread the GIL keeps waiting; short, since a script that never listens to
# "open" waits that long for its first messages.
HOLD_BACK: Final = 0.05


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

E = TypeVar("E", bound=Event)


class _EventHandler(Generic[E]):
    """``ws.onmessage = fn``: the browser's event handler attributes.

    Setting one adds a listener for its type (as ``add_event_listener``, held
    events included); setting another function replaces it in that place,
    and None removes it. Reading it gives the function, or None. Thread-safe;
    never blocks.
    """

    def __init__(self, type: EventType) -> None:
        self.type: EventType = type

    @overload
    def __get__(self, ws: None, owner: type[WebSocket]) -> _EventHandler[E]: ...
    @overload
    def __get__(self, ws: WebSocket, owner: type[WebSocket]) -> Callable[[E], object] | None: ...

    def __get__(self, ws: WebSocket | None, owner: type[WebSocket]
                ) -> _EventHandler[E] | Callable[[E], object] | None:
        if ws is None:
            return self
        return ws._handlers.get(self.type)

    def __set__(self, ws: WebSocket, handler: Callable[[E], object] | None) -> None:
        ws._set_handler(self.type, handler)


class WebSocket:
    """A WebSocket client in the style of the browser's and Bun's ``WebSocket``.

    Construction returns at once; connecting happens in the background, and
    every event on one (non-daemon) thread per connection, named
    ``syncws-client-N``, which keeps the process alive until the connection
    is closed, as a Bun script stays alive. Listeners run on that thread, one at a time and in
    order: "open", then "message"s, then "close"; "error" comes before the
    "close" of a failed connection, which then has code 1006 (as in the
    browser; the "error" says what went wrong).

    Events of a type that has never had a listener are held and delivered
    once the first listener for that type is added, so adding listeners
    right after the constructor never misses "open". Such a held event also
    holds back the events after it until ``HOLD_BACK`` (0.05 s) has passed
    since the constructor or the last first listener of a type, whichever
    is later; then the events held back go out to their listeners and the
    held ones wait on for theirs. So listeners added one after another
    without such a pause, as right after the constructor and in any order,
    get every event in the order it happened ("error" before "close" even
    with the "close" listener added first), and a type nobody ever listens
    to delays the others by at most ``HOLD_BACK``, once. A listener
    added after such a pause still gets its held events, but after events
    that happened later. Held messages are bounded (``INBOX_MAX_BYTES``,
    ``INBOX_MAX_MESSAGES``): past that, as in a browser where no listener
    hears them, messages are dropped, with one warning in the log.

    ``ws.onmessage = fn`` (and ``onopen``, ``onclose``, ``onerror``) works as
    in the browser: one more listener, replaced in place when set again,
    removed by None. Another spelling of these (``on_message``, ``onMessage``)
    raises ``AttributeError`` rather than be silently ignored.

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

    #: ``ws.onopen = lambda event: ws.send("hi")``, as in the browser and Bun.
    onopen: _EventHandler[Event] = _EventHandler("open")
    #: ``ws.onmessage = lambda event: print(event.data)``.
    onmessage: _EventHandler[MessageEvent] = _EventHandler("message")
    #: ``ws.onclose = lambda event: print(event.code, event.reason)``.
    onclose: _EventHandler[CloseEvent] = _EventHandler("close")
    #: ``ws.onerror = lambda event: print(event.message)``.
    onerror: _EventHandler[ErrorEvent] = _EventHandler("error")

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
        # Notified when a type gets its first listener: held events may go.
        self._listened = threading.Condition(self._lock)
        self._listeners: dict[str, list[Listener]] = {t: [] for t in _EVENT_TYPES}
        self._seen: set[str] = set()  # the types that ever had a listener
        # ws.onmessage and kin: the function set, and the listener that calls it
        # (made on first use: a client that never sets one holds no cycle).
        self._handlers: dict[str, Listener] = {}
        self._handler_callers: dict[str, Listener] = {}
        self._handler_lock = threading.Lock()  # one setter at a time: add, then remove
        # Undelivered events in the order they happened: those of a type not
        # in _seen, and those held back behind them (see the class docstring).
        self._held: deque[Event] = deque()
        # time.monotonic(): until then held events hold back (listeners may follow).
        self._hold_until = time.monotonic() + HOLD_BACK
        self._held_messages = 0
        self._held_message_bytes = 0
        self._dropping_logged = False
        self._state = ReadyState.CONNECTING
        self._conn: ClientWebSocket | None = None
        self._close_while_connecting = False
        self._cancel = Cancel()  # close() abandons the opening handshake with it
        self._inbox = _Inbox()
        self._thread_name = f"syncws-client-{next(_client_ids)}"
        self._dispatching = True
        # Every thread the connection needs starts now: Python 3.12.0 and 3.12.1
        # refuse to start one once the main thread has ended, and a Bun-style
        # script ends it right after adding its listeners.
        self._connected = threading.Event()
        self._connect_error: BaseException | None = None
        self._closer = _Closer(f"{self._thread_name}-closer")
        reader = threading.Thread(target=self._connect_and_read,
                                  name=f"{self._thread_name}-reader", daemon=True)
        self._thread = threading.Thread(target=self._run, name=self._thread_name)
        self._closer.thread.start()
        self._thread.start()
        # Last: each start waits for its thread to run, time in which a
        # connect to a local server could complete (ready_state is then
        # OPEN before the constructor even returned).
        reader.start()

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
            if type in self._seen:
                return
            self._seen.add(type)
            if type == "message":
                self._held_messages = self._held_message_bytes = 0  # no longer bounded
            # More first listeners may follow at once: give them time too.
            self._hold_until = time.monotonic() + HOLD_BACK
            if not any(event.type == type for event in self._held):
                return
            self._listened.notify_all()
            start_thread = not self._dispatching
            self._dispatching = True
        if start_thread:
            # The connection's thread is gone; a short-lived one delivers what was held.
            threading.Thread(target=self._drain_held, name=self._thread_name).start()
        else:
            self._inbox.put(_WAKE, None)

    def remove_event_listener(self, type: EventType, listener: Callable[[Any], object]) -> None:
        """Stop calling ``listener`` for ``type``; unknown listeners are ignored. Thread-safe."""
        with self._lock:
            listeners = self._listeners.get(type)
            if listeners is not None and listener in listeners:
                listeners.remove(listener)

    if not TYPE_CHECKING:  # (a type checker already refuses unknown attributes)
        def __setattr__(self, name, value):
            # Your own attributes are fine; a handler name that is not one of
            # the four (on_message, onMessage: websocket-client's, JS's) would
            # be silently ignored, so it is an error.
            guess = "on" + name[2:].lstrip("_").lower() if name[:2].lower() == "on" else ""
            if guess in _HANDLER_NAMES and name != guess:
                raise AttributeError(
                    f"'WebSocket' has no attribute {name!r}: did you mean {guess!r}?")
            object.__setattr__(self, name, value)

    def _set_handler(self, type: EventType, handler: Listener | None) -> None:
        if handler is not None and not callable(handler):
            raise TypeError(f"on{type} must be callable or None, not {handler!r}")
        with self._handler_lock:
            had = type in self._handlers
            if handler is None:
                self._handlers.pop(type, None)
                if had:
                    self.remove_event_listener(type, self._handler_callers[type])
            else:
                self._handlers[type] = handler
                if not had:
                    caller = self._handler_callers.setdefault(
                        type, partial(self._call_handler, type))
                    self.add_event_listener(type, caller)

    def _call_handler(self, type: str, event: Event) -> None:
        handler = self._handlers.get(type)
        if handler is not None:
            handler(event)

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
            conn._start_close(code, reason, payload)

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
                self._cancel.cancel()  # the event thread then reports at once
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

    def _connect_and_read(self) -> None:
        """The reader thread: connect, then read until the connection ends."""
        try:
            conn = _connect(self.url, headers=self._headers, subprotocols=self._protocols,
                            timeout=10, per_message_deflate=False, ssl=self._ssl,
                            max_payload_length=self._max_payload_length,
                            inbox=self._inbox, argument="protocols", cancel=self._cancel,
                            closer=self._closer, start_reader=False)
        except BaseException as exc:  # whatever it is, the event thread must hear of it
            logger.debug("syncws client: connecting to %s failed: %r", self.url, exc)
            self._connect_error = exc
            self._closer.end()
            self._connected.set()
            return
        with self._lock:
            self._conn = conn
            if self._close_while_connecting:
                self._connect_error = ConnectionAbortedError("closed before the connection opened")
                conn._abort()
            else:
                self._state = ReadyState.OPEN
        self._connected.set()
        conn._run_reader()

    def _run(self) -> None:
        """The event thread: "open" (or the connect's "error"), then what the reader receives."""
        self._connected.wait()
        conn, error = self._conn, self._connect_error
        if error is not None:
            if conn is not None:
                conn._done.wait()  # abandoned just after the handshake: let it end first
            if self._close_while_connecting:
                error = ConnectionAbortedError("closed before the connection opened")
            self._fail_connect(error)
            return
        assert conn is not None
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
        # As in the browser (RFC 6455 7.1.5): the code and reason of the close
        # frame received, also when ours went first; 1006 when none came, even
        # after our own close() (the blocking client's close_code differs).
        code, reason = 1006, ""
        if conn._failed:
            # We failed the connection (a protocol error, a message too big): as
            # in the browser and Bun, "error" says why, then "close" gives 1006.
            if not reported:
                failed_code, why = conn._final or (1006, "")
                self._emit(ErrorEvent("error", self, ConnectionClosed(failed_code, why), why))
        elif conn._close_received and not conn._terminated:
            code, reason = conn._remote
        with self._lock:
            self._state = ReadyState.CLOSED
        self._emit(CloseEvent("close", self, code, reason, conn._clean))
        self._drain_held()

    def _fail_connect(self, exc: BaseException) -> None:
        with self._lock:
            self._state = ReadyState.CLOSED
        self._emit(ErrorEvent("error", self, exc, str(exc) or type(exc).__name__))
        self._emit(CloseEvent("close", self, 1006, "", False))
        self._drain_held()

    def _emit(self, event: Event) -> None:
        listeners: list[Listener] | None = None
        with self._lock:
            if event.type not in self._seen:
                # Held for a first listener; holding it releases nothing held before.
                if not isinstance(event, MessageEvent) or self._room_to_hold(event):
                    self._held.append(event)
                return
            if self._held:
                self._held.append(event)  # it goes after what happened before it
            else:
                listeners = list(self._listeners[event.type])
        if listeners is None:
            self._deliver_held()
        else:
            self._call([(event, listeners)])

    def _room_to_hold(self, event: MessageEvent) -> bool:
        """Count ``event`` in the held messages, or say there is no room (lock held)."""
        held = self._held_messages
        data = event.data
        size = len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
        if held and (held >= INBOX_MAX_MESSAGES or
                     self._held_message_bytes + size > INBOX_MAX_BYTES):
            if not self._dropping_logged:
                self._dropping_logged = True
                logger.warning("syncws client: no 'message' listener on %s: messages past "
                               "the first %d bytes are dropped", self.url, INBOX_MAX_BYTES)
            return False
        self._held_messages += 1
        self._held_message_bytes += size
        return True

    def _deliver_held(self, *, last: bool = False) -> None:
        """Deliver the held events that have listeners, in order, waiting out ``HOLD_BACK``.

        Returns once no held event has a listener. With ``last`` (this thread
        then ends) it first waits out ``HOLD_BACK`` for listeners still being
        added, so that a burst of them needs no new thread, and from then on
        add_event_listener starts one for what it releases.
        """
        while True:
            with self._lock:
                batch = self._take_ready()
                if not batch:
                    left = self._hold_until - time.monotonic()
                    if left > 0 and ((last and self._held) or
                                     any(event.type in self._seen for event in self._held)):
                        self._listened.wait(left)
                        continue
                    if last:
                        self._dispatching = False
                    return
            self._call(batch)

    def _take_ready(self) -> list[tuple[Event, list[Listener]]]:
        """Take the held events that may go now, with their listeners (lock held)."""
        if not self._held:
            return []
        holding = time.monotonic() < self._hold_until
        ready: list[tuple[Event, list[Listener]]] = []
        kept: deque[Event] = deque()
        for event in self._held:
            # While holding, an event without a listener holds back all after it.
            if event.type in self._seen and not (holding and kept):
                ready.append((event, list(self._listeners[event.type])))
            else:
                kept.append(event)
        if ready:
            self._held = kept
        return ready

    def _drain_held(self) -> None:
        """Deliver held events until none can be; then this thread may end."""
        self._deliver_held(last=True)

    def _call(self, batch: list[tuple[Event, list[Listener]]]) -> None:
        for event, listeners in batch:
            for listener in listeners:
                try:
                    listener(event)
                except Exception:
                    # As in the browser: report it and go on with the next listener.
                    logger.exception("syncws client: exception in a %r listener for %s",
                                     event.type, self.url)

"""One WebSocket connection, as the loop thread sees it.

Owned by the loop thread: the socket, the wsproto frame parser, the message
being reassembled, the closing handshake and the idle clock.
Guarded by ``lock`` (any thread): the outbound buffer, ``state``, the
backpressure flag, and the inbox of events waiting for the handlers.

Handlers never run here: events go to ``inbox`` and one worker task at a
time drains it (``_dispatch.run_events``), so a connection's handlers run in
order and never concurrently, while different connections run in parallel.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from functools import partial
from typing import TYPE_CHECKING, Any

from wsproto.extensions import Extension
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from . import _frames
from ._connection import LINGER_SECONDS, SocketConnection, unsent_bytes
from ._dispatch import (
    CLOSE,
    DRAIN,
    EVENT_COST,
    MESSAGE,
    OPEN,
    PING,
    PONG,
    InboxEvent,
    run_events,
)
from ._fastpath import parse_simple_frames
from ._frames import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    add_fragment,
    encode_frame,
    last_fragment,
    unread_payload,
    wire_frame_size,
)
from ._loop import READ, EventLoop
from .types import ReadyState

if TYPE_CHECKING:
    from ._deflate import Compressor
    from ._options import WebSocketConfig
    from .server import Server

logger = logging.getLogger("syncws")

# Stop reading a socket once this many message bytes wait for its handler;
# the worker starts it again below _dispatch.INBOUND_LOW_WATER.
INBOUND_HIGH_WATER = 1024 * 1024

CLOSE_HANDSHAKE_TIMEOUT = 5.0

# Parsing work one connection may do per loop turn, in lean-parser frames
# (~2 us each; wsproto takes ~10 times longer a frame): past it the rest waits
# for the next turn and nothing more is read meanwhile, so a peer that floods
# tiny frames cannot hold up every other connection for long.
PARSE_BUDGET = 512
WSPROTO_FRAME_COST = 8

# send/enqueue results, mapped to Bun's numbers by send_result().
ACCEPTED, BACKPRESSURE, DROPPED = 1, -1, 0


def send_result(status: int, payload_len: int) -> int:
    """Bun's number for an enqueue status: the payload length, -1 or 0."""
    return payload_len if status == ACCEPTED else status


class WsConnection(SocketConnection):
    """The loop-side state of one upgraded socket."""

    __slots__ = (
        "acked_mark", "backlog_paused", "backpressured", "bytes_sent", "close_code",
        "close_deadline", "close_reason", "closed_by_us", "config", "deferred_pong", "deflate",
        "dispatching", "finalize_when_flushed", "finalized", "frag_parts", "frag_size", "held",
        "held_for_backlog", "inbox", "inbox_bytes", "last_recv", "linger", "local_close_sent",
        "parse_pending", "pending_fail", "ping_sent", "proto", "protocol", "server", "state",
        "user_paused", "ws",
    )

    def __init__(self, sock: socket.socket, loop: EventLoop, peer: tuple[str, int],
                 lock: threading.Lock, server: Server[Any], protocol: str,
                 extensions: list[Extension]) -> None:
        super().__init__(sock, loop, peer, lock)
        self.server = server
        self.config: WebSocketConfig = server._ws_config  # type: ignore[assignment]
        self.protocol = protocol
        self.ws: Any = None  # the public ServerWebSocket, set by the server
        # permessage-deflate's compressor when negotiated, set by the server.
        self.deflate: Compressor | None = None
        # Owned by the loop thread.
        self.proto = FrameProtocol(client=False, extensions=extensions)
        self.frag_parts: list[Any] = []
        self.frag_size = 0
        # Bytes read but not parsed yet: the start of a frame, what a parse
        # budget left for the next turn (parse_pending), or what waits for
        # the handlers to work off their backlog (held_for_backlog).
        self.held: bytearray | None = None
        self.parse_pending = False
        self.held_for_backlog = False
        self.last_recv = loop.now
        self.ping_sent = False
        # For the idle clock: bytes written to the kernel, and how many of
        # them the peer had acknowledged when our last ping went out.
        self.bytes_sent = 0
        self.acked_mark: int | None = None
        self.local_close_sent = False
        self.close_deadline: float | None = None
        self.close_code = 1006
        self.close_reason = ""
        self.finalized = False
        self.finalize_when_flushed = False
        # We failed the connection while the peer may still be sending: once our
        # close frame is out, half-close and discard its bytes until its FIN.
        self.linger = False
        # A protocol error waiting for the handlers of earlier messages (fail()).
        self.pending_fail: tuple[int, str] | None = None
        # Guarded by self.lock.
        self.state = ReadyState.OPEN
        self.backpressured = False
        # A list, swapped out whole by the worker (an idle deque costs 760 bytes).
        self.inbox: list[InboxEvent] = []
        self.inbox_bytes = 0
        # The latest ping's payload, when its pong waits for room (answer_ping).
        self.deferred_pong: bytes | None = None
        self.dispatching = False
        self.backlog_paused = False
        self.user_paused = False
        # Set by a close we began (ws.close(), terminate(), a failed handler):
        # events still queued get no handler, only the close handler runs.
        self.closed_by_us = False

    # -- outbound, any thread ------------------------------------------------

    def enqueue(self, frame: bytes, payload: bytes | None = None, flush: bool = True) -> int:
        """Queue an encoded frame; ACCEPTED, BACKPRESSURE or DROPPED (as Bun).

        ``payload``: the frame's payload, queued as its own chunk behind
        ``frame`` (then just the header), so a big one is not copied.
        ``flush=False`` (inside a cork): queue it, but leave the write to
        ``flush_corked`` at the cork's end.
        """
        limit = self.config.backpressure_limit
        with self.lock:
            if self.state is not ReadyState.OPEN:
                return DROPPED
            if self.out.size > limit:
                self.backpressured = True
                result = DROPPED
                queued = True
            else:
                if payload is not None:
                    self.out.append(frame)
                    frame = payload
                result, queued = self._append_locked(frame, flush)
        if result is DROPPED:
            self.dropped()
        if not queued:
            self.loop.request_flush(self)
        return result

    def _append_locked(self, data: bytes, flush: bool) -> tuple[int, bool]:
        """Append to ``out``, ``self.lock`` held.

        Returns (ACCEPTED or BACKPRESSURE, whether no flush request is needed:
        one is queued already, or ``flush`` is False).
        """
        out = self.out
        out.append(data)
        result = ACCEPTED
        if out.size > self.config.backpressure_limit:
            self.backpressured = True
            result = BACKPRESSURE
        if not flush:
            return result, True
        queued = self.flush_queued
        self.flush_queued = True
        return result, queued

    def flush_corked(self) -> None:
        """A cork ended: have the loop write what it queued, in one write. Any thread."""
        with self.lock:
            if self.flush_queued or not self.out:
                return
            self.flush_queued = True
        self.loop.request_flush(self)

    def dropped(self) -> None:
        """A send found the buffer over the limit: count it, and close if so configured."""
        self.server._count_dropped()
        if self.config.close_on_backpressure_limit:
            self.loop.call_soon_threadsafe(partial(self.finalize, 1006, "backpressure limit"))

    def enqueue_message(self, opcode: int, payload: bytes) -> int:
        """Queue one message compressed with ``self.deflate``; as ``enqueue``."""
        return self.enqueue_parts([(opcode, payload)])

    def enqueue_parts(self, parts: list[bytes | tuple[int, bytes]], flush: bool = True) -> int:
        """Queue encoded frames and ``(opcode, payload)`` messages to compress, as one write.

        With a per-connection deflate context, its lock is held from the
        acceptance check to the append: the context takes messages in in
        wire order and never takes in one that is then dropped (the peer's
        inflater would lose track). ``self.lock`` is only held briefly, so
        the loop thread never waits on zlib.
        """
        deflate = self.deflate
        if deflate is None or deflate.shared:
            # No history to keep in step: compress outside every lock.
            return self.enqueue(b"".join(
                part if isinstance(part, bytes) else
                deflate.frame(*part) if deflate is not None else encode_frame(*part)
                for part in parts), flush=flush)
        limit = self.config.backpressure_limit
        with deflate.lock:
            with self.lock:
                if self.state is not ReadyState.OPEN:
                    return DROPPED
                over = self.out.size > limit
                if over:
                    self.backpressured = True
            if not over:
                data = b"".join(part if isinstance(part, bytes) else deflate.frame(*part)
                                for part in parts)
                with self.lock:
                    if self.state is not ReadyState.OPEN:
                        return DROPPED  # closing: no data frame may follow the close
                    result, queued = self._append_locked(data, flush)
        if over:
            self.dropped()
            return DROPPED
        if not queued:
            self.loop.request_flush(self)
        return result

    def begin_closing(self) -> bool:
        """OPEN -> CLOSING (any thread); False if the connection was no longer open.

        The socket leaves its topics at once: in Bun the close handler runs
        inside ``close()``, and a closing socket must not count as a
        subscriber nor make a publish report a drop.
        """
        with self.lock:
            if self.state is not ReadyState.OPEN:
                return False
            self.state = ReadyState.CLOSING
        self.server._registry.unsubscribe_all(self)
        return True

    def request_close(self, code: int, reason: str) -> None:
        """Start the closing handshake (any thread; returns at once).

        Messages already received but not yet handled are dropped, as in Bun,
        where the close handler runs inside ``close()``: only it runs now.
        """
        if self.begin_closing():
            self.closed_by_us = True
            self.loop.call_soon_threadsafe(partial(self.start_close, code, reason))

    def request_terminate(self) -> None:
        """Drop the TCP connection without a closing handshake (any thread).

        Only an open connection: once closing, the handshake under way keeps
        its code and reason (and its own deadline), as in Bun.
        """
        if self.begin_closing():
            self.closed_by_us = True
            self.loop.call_soon_threadsafe(partial(self.finalize, 1006, ""))

    def set_user_paused(self, paused: bool) -> None:
        """ws.pause() / ws.resume(): stop or restart reading and delivering.

        As in Bun, a pause once the close has begun does nothing; a resume
        then still lets out what an earlier pause held back.
        """
        with self.lock:
            if self.user_paused == paused or self.state is ReadyState.CLOSED or (
                    paused and self.state is not ReadyState.OPEN):
                return
            self.user_paused = paused
            restart = not paused and bool(self.inbox) and not self.dispatching
            if restart:
                self.dispatching = True
        if restart:
            self.server._pool.schedule(run_events, self)
        # Also wakes the loop, whose next turn starts a runner for the events.
        self.loop.call_soon_threadsafe(self.update_reading)

    # -- inbound, loop thread -------------------------------------------------

    def start(self, response: bytes, trailing: bytes) -> None:
        """Begin: write the 101 ``response``, deliver ``open``, then what came behind it."""
        self.write(response)  # queued first: what open() sends goes out behind it
        # Queued before the write, which may find the peer gone: then close follows open.
        self.deliver([(OPEN, None, 0)])
        # Written now: open() may terminate() before the loop's next flush.
        self.flush()
        if self.finalized:
            return
        self.want_read(True)
        self.arm_timer()
        if trailing:
            self.feed(trailing)

    def on_readable(self) -> None:
        data = self.read()
        if data is None:
            return
        if not data:
            self.connection_lost(None)
            return
        if self.linger:
            return  # the connection has failed: what the peer still sends is discarded
        self.last_recv = self.loop.now
        self.ping_sent = False
        self.feed(data)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Parse ``data`` and hand complete messages to the handlers.

        The lean parser takes the simple frames; wsproto gets the others one
        frame at a time, so that the lean parser takes over again right after.
        At most ``PARSE_BUDGET`` of work per call: the rest is held, nothing
        more is read, and the loop's next turn goes on (``resume_parsing``).
        Parsing also stops once the messages waiting for the handlers pass
        ``INBOUND_HIGH_WATER``: compressed bytes inflate up to a thousandfold,
        so one read could otherwise queue hundreds of megabytes. The rest
        is held until the handlers have worked the backlog off.
        """
        nread = len(data)
        held = self.held
        if held is not None:
            # Bytes held back from earlier reads: wsproto has not seen them.
            held += data
            data = held
            self.held = None
        max_payload = self.config.max_payload_length
        if self.fast_path_ok():
            pos, messages, wait = parse_simple_frames(data, max_payload, 0, PARSE_BUDGET)
            if pos == len(data):
                # The common case: only simple frames, wsproto sees nothing.
                counters = self.server._counters
                counters["bytes_in"] += nread
                counters["messages_in"] += len(messages)
                if messages:
                    self.deliver([(MESSAGE, payload, n) for payload, n in messages])
                return
            events: list[InboxEvent] = [(MESSAGE, payload, n) for payload, n in messages]
            budget = PARSE_BUDGET - len(messages)
        else:
            pos, wait, events, budget = 0, False, [], PARSE_BUDGET
        failure: tuple[int, str] | None = None
        ended = False  # the peer's close frame came: what follows it is not read
        # Message bytes the backlog may still take (no limit once our close
        # frame is out: messages are then dropped, and the peer's close is due).
        room = None if self.local_close_sent else INBOUND_HIGH_WATER - self.inbox_bytes
        taken = sum(event[2] for event in events)
        backlogged = False
        while not wait and pos < len(data) and budget > 0:
            if room is not None and taken > room:
                backlogged = True
                break
            if self.fast_path_ok():
                pos, messages, wait = parse_simple_frames(data, max_payload, pos, budget)
                events += [(MESSAGE, payload, n) for payload, n in messages]
                taken += sum(n for _, n in messages)
                budget -= len(messages)
                if wait or pos == len(data) or budget <= 0:
                    break
            size = self.wsproto_share(data, pos)
            if size is None:
                wait = True  # a header cut short: wsproto gets whole headers only
                break
            budget -= WSPROTO_FRAME_COST
            first = len(events)
            failure, ended = self.feed_wsproto(data[pos:pos + size], events)
            taken += sum(event[2] for event in events[first:])
            pos += size
            if failure is not None or ended:
                break
        if not ended and failure is None and pos < len(data):
            if isinstance(data, bytearray):  # our held buffer: no copy per read
                del data[:pos]
                self.held = data
            else:  # a view of the loop's read buffer, reused next read
                self.held = bytearray(data[pos:])
            if backlogged:
                # Nothing more is read either; update_reading parses the rest
                # first once the backlog is worked off.
                self.held_for_backlog = True
                self.want_read(False)
            elif not wait:
                # The budget ran out: the rest waits for the loop's next turn.
                self.parse_pending = True
                self.want_read(False)
                self.loop.call_next_turn(self.resume_parsing)
        self.server._count_in(nread, sum(1 for e in events if e[0] == MESSAGE))
        if events:
            self.deliver(events)
        if failure is not None:
            self.fail(*failure)
        elif backlogged:
            with self.lock:
                # Over the mark, deliver() paused reading, and the worker that
                # works the backlog off calls update_reading; unless it has
                # already done so meanwhile.
                drained = not self.backlog_paused
            if drained:
                self.update_reading()

    def wsproto_share(self, data: bytes | bytearray | memoryview, pos: int) -> int | None:
        """How much of ``data[pos:]`` to give wsproto: up to the end of its frame.

        The rest of the frame it is reading, or the whole next frame (all
        that arrived of it); None while that frame's header is cut short.
        """
        decoder = self.proto._frame_decoder
        header = decoder.header
        if header is None:
            size = wire_frame_size(data, pos)
            if size is None:
                return None
        else:  # (a control frame's payload waits in wsproto's buffer until whole)
            size = header.payload_len - decoder.payload_consumed - len(decoder.buffer)
        return min(size, len(data) - pos)

    def feed_wsproto(self, data: bytes | bytearray | memoryview,
                     events: list[InboxEvent]) -> tuple[tuple[int, str] | None, bool]:
        """Give ``data`` to wsproto and queue what it makes of it on ``events``.

        Returns (the failure to close with, or None; whether the peer's close
        frame came).
        """
        config = self.config
        proto = self.proto
        try:
            proto.receive_bytes(data)  # type: ignore[arg-type]
            for frame in proto.received_frames():
                opcode = frame.opcode
                # str for text, bytes for binary and pings, (code, reason) for a close.
                payload: Any = frame.payload
                if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                    if opcode is Opcode.BINARY or payload.isascii():
                        size = len(payload)
                    else:
                        size = len(payload.encode("utf-8"))
                    total = self.frag_size + size
                    if total > config.max_payload_length:
                        return (1009, "Message too big"), False
                    if frame.message_finished:
                        payload = last_fragment(self.frag_parts, payload)
                        self.frag_size = 0
                        if not self.local_close_sent:
                            events.append((MESSAGE, payload, total))
                    else:
                        add_fragment(self.frag_parts, payload)
                        self.frag_size = total
                elif opcode is Opcode.PING:
                    if not self.local_close_sent:
                        # No frame may follow our close frame (RFC 6455 5.5.1).
                        self.answer_ping(payload)
                    if config.ping is not None and not self.local_close_sent:
                        events.append((PING, payload, 0))
                elif opcode is Opcode.PONG:
                    if config.pong is not None and not self.local_close_sent:
                        events.append((PONG, payload, 0))
                elif opcode is Opcode.CLOSE:
                    code, reason = payload
                    self.remote_close(int(code), reason)
                    return None, True
        except ParseFailed as exc:
            # The deflate extension reports an inflated size over the limit as
            # "error in extension": say what it is, as for a plain message.
            return (1009, "Message too big") if exc.code == 1009 else (int(exc.code), str(exc)), \
                False
        if self.frag_size + unread_payload(proto) > config.max_payload_length:
            return (1009, "Message too big"), False
        return None, False

    def resume_parsing(self) -> None:
        """The loop's next turn after ``feed`` ran out of budget: go on with what is held."""
        self.parse_pending = False
        if self.closed or self.held is None:
            return
        self.feed(b"")
        if not self.parse_pending:
            self.update_reading()

    def answer_ping(self, payload: bytes) -> None:
        """Queue the pong, unless the peer is not reading what we send.

        Then only the latest ping is answered, once the buffer is back under
        the limit (RFC 6455 5.5.3 allows it): a peer that pings without
        reading cannot grow our buffer.
        """
        # out.size without the lock: a send racing this read only moves the
        # moment the pong goes out, never whether it does.
        if self.out.size > self.config.backpressure_limit:
            self.deferred_pong = payload
        else:
            self.write(encode_frame(OP_PONG, payload))

    def fast_path_ok(self) -> bool:
        """Whether wsproto sits at a frame boundary with nothing in progress.

        Only then may the lean parser take the next frames; compressed
        connections always go through wsproto and its extension.
        """
        proto = self.proto
        decoder = proto._frame_decoder
        return (not self.frag_parts and not self.local_close_sent and not proto.extensions
                and decoder.header is None and not decoder.buffer.buffer
                and proto._message_decoder.opcode is None)

    def deliver(self, events: list[InboxEvent]) -> None:
        """Append events to the inbox and make sure one worker drains it."""
        nbytes = EVENT_COST * len(events)
        for event in events:  # (usually one or two: cheaper than sum() of a generator)
            nbytes += event[2]
        with self.lock:
            self.inbox.extend(events)
            self.inbox_bytes += nbytes
            # A pause holds back what we read, not drain: "pause on -1, resume
            # in drain" must work.
            start = not self.dispatching and (
                not self.user_paused or any(event[0] == DRAIN for event in events))
            if start:
                self.dispatching = True
            over = self.inbox_bytes > INBOUND_HIGH_WATER and not self.backlog_paused
            if over:
                self.backlog_paused = True
        if start:
            self.server._pool.schedule(run_events, self)
        if over:
            self.update_reading()

    def update_reading(self) -> None:
        """Read while neither the inbox backlog nor ws.pause() says stop."""
        if self.closed or self.finalize_when_flushed:
            return  # (the closing handshake is over: nothing more to read)
        if self.pending_fail is not None:
            # Called back by run_events each time it clears backlog_paused.
            with self.lock:
                busy = self.dispatching and not self.user_paused
                if busy:
                    self.backlog_paused = True
            if not busy:
                self._fail_now(*self.pending_fail)
            return
        with self.lock:
            # Once our close frame is out, read on whatever holds delivery back:
            # the peer's answer must be seen, and later data is dropped unread.
            paused = (self.backlog_paused or self.user_paused) and not self.local_close_sent
        # Held bytes to parse first (resume_parsing reads again after them).
        paused = paused or self.parse_pending
        if not paused and self.held_for_backlog:
            self.held_for_backlog = False
            self.parse_pending = True
            self.loop.call_next_turn(self.resume_parsing)
            paused = True
        if not paused and not self.interest & READ:
            # Reading again: the quiet time was ours, not the peer's.
            self.last_recv = self.loop.now
        self.want_read(not paused)

    # -- timers, loop thread --------------------------------------------------

    def arm_timer(self) -> None:
        if self.close_deadline is not None:
            # Closing: the idle clock no longer matters.
            self.loop.timers.arm(self, self.close_deadline)
            return
        deadlines = []
        idle = self.config.idle_timeout
        if idle > 0:
            if self.config.send_pings and not self.ping_sent:
                deadlines.append(self.last_recv + idle / 2)
            else:
                deadlines.append(self.last_recv + idle)
        if deadlines:
            self.loop.timers.arm(self, min(deadlines))

    def on_timer(self, now: float) -> None:
        if self.closed:
            return
        if self.close_deadline is not None and now >= self.close_deadline:
            if self.pending_fail is not None and not self.local_close_sent:
                # The handlers had their time: fail now, close frame and all.
                self._fail_now(*self.pending_fail)
            else:
                self.finalize(self.close_code, self.close_reason)
            return
        idle = self.config.idle_timeout
        if idle > 0 and not self.local_close_sent:
            if not self.interest & READ:
                # The idle clock is frozen while we are the ones not reading
                # (paused, or resumed but not reading again yet); but a peer
                # gone meanwhile would then hold its socket for good. (Whole
                # frames held for the backlog are still to be delivered: the
                # read after them sees the peer gone.)
                if not (self.held_for_backlog or self.parse_pending) and self.peer_gone():
                    self.connection_lost(None)
                    return
                self.last_recv = now
            quiet = now - self.last_recv
            if quiet >= idle:
                if not (self.config.send_pings and self.peer_took_data()):
                    self.finalize(1006, "idle timeout")
                    return
                # Our ping may still sit behind data the peer is reading: a
                # peer that reads is alive. Ping again, give it a full period.
                self.last_recv = now
                self.ping_sent = False
            if self.config.send_pings and not self.ping_sent and quiet >= idle / 2:
                self.ping_sent = True
                # Only data queued ahead of the ping can excuse a late pong: the
                # peer's kernel acknowledges the ping itself whether or not anyone reads.
                unsent = unsent_bytes(self.sock)
                self.acked_mark = None if unsent is None or not (unsent or self.out) else \
                    self.bytes_sent - unsent
                self.write(encode_frame(OP_PING, b""))
        self.arm_timer()

    def peer_gone(self) -> bool:
        """Whether the peer of a socket we are not reading reset or closed it.

        Peeks at the TCP stream (under TLS too) and takes nothing: unread
        data means the peer may still be there.
        """
        try:
            return socket.socket.recv(self.sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    def peer_took_data(self) -> bool:
        """Whether the peer took any of the data queued ahead of our last ping (Linux)."""
        if self.acked_mark is None:
            return False
        unsent = unsent_bytes(self.sock)
        return unsent is not None and self.bytes_sent - unsent > self.acked_mark

    # -- outbound hooks, loop thread -----------------------------------------

    def wrote(self, sent: int, remaining: int) -> None:
        self.bytes_sent += sent
        self.server._counters["bytes_out"] += sent
        if (self.backpressured or self.deferred_pong is not None) and \
                remaining <= self.config.backpressure_limit:
            if self.backpressured:
                self.check_drain()
            pong = self.deferred_pong
            if pong is not None and not self.local_close_sent:
                self.deferred_pong = None
                self.write(encode_frame(OP_PONG, pong))

    def on_flushed(self) -> None:
        if self.backpressured:
            self.check_drain()
        if self.finalize_when_flushed:
            if not self.linger:
                self.finalize(self.close_code, self.close_reason)
            elif self.state is not ReadyState.CLOSED:  # (not lingering yet: end_session below)
                # The close frame is out: the peer reads it, then our FIN, and
                # answers with its own, which ends the connection (on_readable).
                if not self.half_close():
                    self.finalize(self.close_code, self.close_reason)
                    return
                self.close_deadline = self.loop.now + LINGER_SECONDS
                self.arm_timer()
                # The handshake is over for the application: close runs now.
                self.end_session(self.close_code, self.close_reason)

    def check_drain(self) -> None:
        with self.lock:
            if not self.backpressured or self.out.size > self.config.backpressure_limit:
                return
            self.backpressured = False
            open_ = self.state is ReadyState.OPEN
        if open_ and self.config.drain is not None:
            self.deliver([(DRAIN, None, 0)])

    # -- closing, loop thread -------------------------------------------------

    def start_close(self, code: int, reason: str) -> None:
        """Send our close frame and wait (at most 5 s) for the peer's."""
        if self.closed or self.local_close_sent:
            return
        self.local_close_sent = True
        self.close_code, self.close_reason = code, reason
        self.close_deadline = self.loop.now + CLOSE_HANDSHAKE_TIMEOUT
        self._write_close(code, reason)
        self.arm_timer()
        self.update_reading()  # a paused socket must still hear the peer's close

    def _write_close(self, code: int, reason: str) -> None:
        payload = _frames.close_payload(code, _frames.truncate_reason(reason))
        # Bypass enqueue(): the state is CLOSING and the close frame must go out
        # behind everything queued, whatever the backpressure limit says.
        self.write(encode_frame(OP_CLOSE, payload))

    def remote_close(self, code: int, reason: str) -> None:
        """The peer's close frame arrived."""
        self.begin_closing()
        if self.local_close_sent:
            # Our close was answered: the handshake is complete.
            self.flush_then_finalize()
            return
        self.local_close_sent = True
        self.close_code, self.close_reason = code, reason
        self.write(encode_frame(OP_CLOSE, _frames.close_echo(code, reason)))
        self.flush_then_finalize()

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): close frame, then TCP close.

        Messages that arrived before the bad frame are still handled first, so
        what their handlers send goes out before the close frame (Autobahn's
        strict behaviour, e.g. cases 3.2, 4.1.3, 5.15). Nothing more is read
        meanwhile; the handlers get CLOSE_HANDSHAKE_TIMEOUT to finish.
        """
        if self.pending_fail is None and not self.local_close_sent:
            with self.lock:
                busy = (self.dispatching or bool(self.inbox)) and not self.user_paused
                if busy:
                    # run_events calls update_reading when it clears this flag
                    # after a batch; update_reading then fails for real.
                    self.backlog_paused = True
            if busy:
                self.pending_fail = (code, reason)
                self.want_read(False)
                self.close_deadline = self.loop.now + CLOSE_HANDSHAKE_TIMEOUT
                self.arm_timer()
                return
        self._fail_now(code, reason)

    def _fail_now(self, code: int, reason: str) -> None:
        self.begin_closing()
        if not self.local_close_sent:
            self.local_close_sent = True
            self.close_code, self.close_reason = code, reason
            self._write_close(code, reason)
        # A peer in the middle of a big message would get a reset, not our close
        # frame, if we closed with its bytes unread (RFC 6455 7.1.1).
        self.linger = True
        self.flush_then_finalize()

    def flush_then_finalize(self) -> None:
        # A peer that stops reading cannot hold the socket open: what is still
        # queued gets CLOSE_HANDSHAKE_TIMEOUT to go out.
        self.close_deadline = self.loop.now + CLOSE_HANDSHAKE_TIMEOUT
        self.arm_timer()
        self.finalize_when_flushed = True
        self.want_read(False)
        self.loop.request_flush(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.local_close_sent:
            self.finalize(self.close_code, self.close_reason)
        else:
            self.finalize(1006, "")

    def finalize(self, code: int, reason: str) -> None:
        """The connection is over: close the socket and queue the close handler.

        Also how a connection is aborted (terminate, idle timeout, backpressure
        limit): the TCP connection closes at once, without a closing handshake.
        """
        if self.finalized:
            return
        self.finalized = True
        self.end_session(code, reason)
        if not self.closed:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self.close_socket()
        # The compression state is most of a connection's memory (~130 KB with
        # context takeover), and user code may hold its ServerWebSocket for long.
        self.deflate = None
        if self.proto.extensions:
            self.proto = FrameProtocol(client=False, extensions=[])
        # Last: the close handler is queued before the server may wind down its pool.
        self.server._ws_finished(self)

    def end_session(self, code: int, reason: str) -> None:
        """The WebSocket is over for the application: queue the close handler, once.

        Nothing is sent or handled after it, though the socket may still
        linger a moment (``on_flushed``) before ``finalize`` closes it.
        """
        with self.lock:
            if self.state is ReadyState.CLOSED:
                return
            # With the buffer emptied, in one step: no send may queue behind that.
            self.state = ReadyState.CLOSED
            self.out.clear()
            # Whatever was queued can no longer be read: let delivery go on.
            self.user_paused = False
        self.frag_parts = []
        self.held = None
        # Unsubscribed before the close handler can run.
        self.server._registry.unsubscribe_all(self)
        self.deliver([(CLOSE, (code, reason), 0)])


"""The I/O loop: one thread, one selector, every socket.

Rules of this file:
- Only the loop thread touches a socket, a wsproto object or an h11 object.
- Other threads reach the loop through one door: ``call_soon_threadsafe``
  and ``request_flush`` append to a deque and wake the loop through its
  ``Waker``, only when it waits and no wakeup is pending, so a burst of sends
  from many threads costs one wakeup, not one per send.
- Each loop turn: hand the work readied last turn to the worker pool
  (``before_wait``), wait for I/O or the next deadline, handle ready
  sockets, run the door's calls, fire due timers, then flush every
  connection that has new outbound data (one write per socket per turn).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ._timers import TimerQueue, TimerSlot

logger = logging.getLogger("syncws")

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE

READ_BUFFER_SIZE = 256 * 1024

# How soon to look again while a stalled ready queue may need another worker.
STALL_POLL = 0.001


class LoopClient(Protocol):
    """What the loop calls on the objects it has registered."""

    timer_at: float | None
    timer_slot: TimerSlot | None

    def on_readable(self) -> None: ...
    def on_writable(self) -> None: ...
    def on_timer(self, now: float) -> None: ...


class Flushable(Protocol):
    def flush(self) -> None: ...


class Waker:
    """Makes a thread blocked in ``select()`` return: one readable descriptor.

    An eventfd on Linux (a write and a read cost ~1 us there, a socketpair's
    ~4 us), a socketpair elsewhere. ``wake`` never blocks and ignores a full
    or closed descriptor: a wakeup is pending then anyway, or nobody waits.
    ``wake`` and ``close`` may race (another thread wakes the loop as it
    ends): after ``close`` a wake writes nothing.
    """

    def __init__(self) -> None:
        self._sockets: tuple[socket.socket, socket.socket] | None = None
        # Without it a wake could write to the number close() just freed, by
        # then another file's or socket's. Wakes are rare (only a waiting loop
        # gets one), so the lock costs next to nothing.
        self._lock = threading.Lock()
        self._closed = False
        if hasattr(os, "eventfd"):
            self._fd = self._write_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - not Linux
            receiver, sender = self._sockets = socket.socketpair()
            receiver.setblocking(False)
            sender.setblocking(False)
            self._fd, self._write_fd = receiver.fileno(), sender.fileno()

    def fileno(self) -> int:
        """The descriptor to watch for reading."""
        return self._fd

    def wake(self) -> None:
        """Make the descriptor readable; nothing once closed. Any thread."""
        with self._lock, contextlib.suppress(OSError):
            if not self._closed:
                os.write(self._write_fd, _ONE)

    def drain(self) -> None:
        """Make the descriptor unreadable again (every wakeup so far is consumed)."""
        with contextlib.suppress(OSError):
            # eventfd: one read resets the counter. Socketpair: a short read means empty.
            while len(self._read()) == 4096:
                pass

    def _read(self) -> bytes:
        return os.read(self._fd, 4096 if self._sockets is not None else 8)

    def close(self) -> None:
        """Close the descriptors; later wakes do nothing. A second call does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._sockets is not None:
                for sock in self._sockets:
                    sock.close()
            else:
                os.close(self._fd)


# What wake() writes: an eventfd adds this 8-byte counter value.
_ONE = (1).to_bytes(8, sys.byteorder)


class EventLoop:
    """A ``selectors`` loop with a thread-safe door and a deadline queue."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.waker = Waker()
        self.selector.register(self.waker, READ, None)
        # The door: other threads append, the loop thread pops.
        self._calls: deque[Callable[[], None]] = deque()
        self._flushes: deque[Flushable] = deque()
        self._wake_pending = False
        # Loop thread only: calls for the next turn, after its reads.
        self._next_turn: list[Callable[[], None]] = []
        # True while the loop thread is in (or about to enter) select().
        self._selecting = True
        # Owned by the loop thread.
        self.timers = TimerQueue()
        self.now = time.monotonic()
        self.read_buffer = bytearray(READ_BUFFER_SIZE)
        self.read_view = memoryview(self.read_buffer)
        self._running = False
        # Called each turn before waiting (the worker pool's start_runners);
        # True asks to look again within STALL_POLL.
        self.before_wait: Callable[[float], bool] | None = None
        self._thread_id: int | None = None
        self.thread: threading.Thread | None = None

    # -- the door ---------------------------------------------------------

    def in_loop_thread(self) -> bool:
        """Whether the caller is the loop thread."""
        return threading.get_ident() == self._thread_id

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the loop thread soon. Any thread; never blocks."""
        self._calls.append(fn)
        if threading.get_ident() != self._thread_id:
            self._wake()

    def request_flush(self, conn: Flushable) -> None:
        """Have the loop write ``conn``'s outbound data this turn. Any thread."""
        self._flushes.append(conn)
        if threading.get_ident() != self._thread_id:
            self._wake()

    def call_next_turn(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the loop's next turn, after that turn's reads (loop thread only).

        Unlike ``call_soon_threadsafe``, whose calls run this turn, it lets
        every other socket have its turn first: how a long job is cut up.
        """
        self._next_turn.append(fn)

    def _wake(self) -> None:
        # A busy loop checks the door before it next waits (run_once sets
        # _selecting first, then looks), so only a waiting loop needs a wakeup.
        if self._selecting and not self._wake_pending:
            self._wake_pending = True
            self.waker.wake()

    def _drain_wakeups(self) -> None:
        # Empty the waker first, then clear the flag, and only then (later in
        # this turn) empty the door. Clearing first would let a sender set the
        # flag and write a wakeup that the drain below swallows: the flag would
        # stay set with nothing left to wake select(), and no sender would
        # ever wake us again.
        self.waker.drain()
        self._wake_pending = False

    # -- registration (loop thread) ----------------------------------------

    def register(self, sock: socket.socket, events: int, client: LoopClient) -> None:
        self.selector.register(sock, events, client)

    def modify(self, sock: socket.socket, events: int, client: LoopClient) -> None:
        self.selector.modify(sock, events, client)

    def unregister(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)

    # -- running ------------------------------------------------------------

    def start(self, name: str = "syncws-loop") -> None:
        """Run the loop on a new (non-daemon) thread."""
        self._running = True
        self.thread = threading.Thread(target=self._run, name=name, daemon=False)
        self.thread.start()

    def stop(self) -> None:
        """End the loop after its current turn. Any thread."""
        self._running = False
        self.call_soon_threadsafe(lambda: None)

    def _run(self) -> None:
        self._thread_id = threading.get_ident()
        try:
            while self._running:
                self.run_once()
        except BaseException:
            logger.exception("syncws: the I/O loop crashed")
            raise
        finally:
            self.selector.close()
            self.waker.close()

    def run_once(self) -> None:
        """One turn of the loop (the loop thread only)."""
        timeout: float | None
        # Order matters: announce the wait, then look at the door. A sender that
        # saw _selecting False appended before this look, so we see its item.
        self._selecting = True
        # Every turn, busy or not: work readied this turn must get a runner,
        # and a stalled ready queue another one, even while the loop never waits.
        stalled = self.before_wait is not None and self.before_wait(self.now)
        next_turn = self._next_turn
        if next_turn:
            self._next_turn = []
        if self._calls or self._flushes or next_turn:
            timeout = 0
        else:
            deadline = self.timers.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if stalled:
                timeout = STALL_POLL if timeout is None else min(timeout, STALL_POLL)
        ready = self.selector.select(timeout)
        self._selecting = False
        self.now = time.monotonic()
        for key, mask in ready:
            client = key.data
            if client is None:
                self._drain_wakeups()
                continue
            try:
                if mask & READ:
                    client.on_readable()
                if mask & WRITE:
                    client.on_writable()
            except Exception:
                logger.exception("syncws: error while handling a socket")
        for fn in next_turn:
            try:
                fn()
            except Exception:
                logger.exception("syncws: error in a loop callback")
        # Only what was queued before this point: a worker that keeps calling
        # in (or keeps sending, below) must not keep the loop from its reads.
        calls = self._calls
        for _ in range(len(calls)):
            try:
                calls.popleft()()
            except Exception:
                logger.exception("syncws: error in a loop callback")
        for target in self.timers.pop_due(self.now):
            try:
                target.on_timer(self.now)
            except Exception:
                logger.exception("syncws: error in a timer")
        flushes = self._flushes
        for _ in range(len(flushes)):
            try:
                flushes.popleft().flush()
            except Exception:
                logger.exception("syncws: error while writing")

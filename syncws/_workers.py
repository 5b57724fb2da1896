"""The worker pool that runs ``fetch`` and the WebSocket handlers.

Threads are started up front and named ``syncws-worker-N``. Two ways in:

- ``submit_after_turn(fn, *args)``: a task for any idle worker, handed over
  when the loop's turn ends (``fetch`` uses it): a worker woken mid-turn
  would fight the loop for the GIL at every system call the loop still makes
  this turn (a churn of connections measured 18 futex calls per connection
  that way, 5 this way).
- ``schedule(fn, arg)``: a ready queue drained by "runners", workers that
  take items one after another. The loop calls ``start_runners`` once per
  turn, after its reads and writes: a turn that readies many connections
  then costs one thread wake-up, and the woken worker does not fight the
  loop for the GIL while the loop still has sockets to serve (every system
  call would hand the GIL over and back). A runner stuck in a blocking
  handler is backed up by another once the queue has not moved for
  ``STALL_SECONDS``, up to the pool's size, so a handler that sleeps on
  one connection never holds up the others for long.

Ordering per connection is the caller's business (a connection is scheduled
at most once at a time and drains its own event queue).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("syncws")

_STOP = None

# How long the ready queue may stand still before another runner is started.
STALL_SECONDS = 0.001


class WorkerPool:
    """A fixed set of named worker threads fed from one queue. Thread-safe."""

    def __init__(self, size: int, name: str = "syncws-worker") -> None:
        if size < 1:
            raise ValueError(f"workers must be at least 1, not {size}")
        self.size = size
        self._tasks: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        # One flag per worker, each written only by its own thread: reading
        # the sum is a snapshot that needs no lock on the hot path.
        self._busy = [False] * size
        # Guards _ready, _runners and _last_progress.
        self._ready_lock = threading.Lock()
        self._ready: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._runners = 0
        self._last_progress = 0.0
        self._idents: set[int] = set()
        # Loop thread only: tasks for start_runners to hand over.
        self._after_turn: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"{name}-{i}", daemon=False)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()
            assert thread.ident is not None
            self._idents.add(thread.ident)

    def submit_after_turn(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on some worker from the loop's next ``start_runners`` on.

        The loop thread only; never blocks.
        """
        self._after_turn.append((fn, args))

    def schedule(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Queue ``fn(arg)`` for a runner; never blocks. Items run in schedule order.

        Nothing runs until the loop's next ``start_runners``: a caller off
        the loop thread must wake the loop afterwards.
        """
        # No lock: a deque append is atomic, and only start_runners (under the
        # lock) starts runners, so a runner that just saw the queue empty and
        # stopped is replaced on the loop's next turn.
        ready = self._ready
        if not ready:
            self._last_progress = time.monotonic()
        ready.append((fn, arg))

    def start_runners(self, now: float) -> bool:
        """Hand over the turn's ``submit_after_turn`` tasks; give waiting items a runner.

        The loop thread calls it once per turn, before it waits. Starts the
        first runner, or one more when the queue has stood still for
        ``STALL_SECONDS`` and a worker is left. Returns True while items wait
        and another runner could still be started, so the loop knows to look
        again within ``STALL_SECONDS``.
        """
        if self._after_turn:
            self._hand_over_after_turn()
        if not self._ready:
            return False
        with self._ready_lock:
            runners = self._runners
            if not self._ready or runners >= self.size:
                return False
            start = runners == 0 or now - self._last_progress >= STALL_SECONDS
            if start:
                self._runners += 1
                self._last_progress = now
        if start:
            self._tasks.put((self._run_ready, ()))
        return True

    def _hand_over_after_turn(self) -> None:
        tasks, self._after_turn = self._after_turn, []
        for task in tasks:
            self._tasks.put(task)

    def _run_ready(self) -> None:
        ready = self._ready
        lock = self._ready_lock
        while True:
            with lock:
                if not ready:
                    self._runners -= 1
                    return
                fn, arg = ready.popleft()
                self._last_progress = time.monotonic()
            try:
                fn(arg)
            except BaseException:  # a worker outlives whatever a task raises
                logger.exception("syncws: a worker task failed")

    def is_worker_thread(self) -> bool:
        """Whether the calling thread is one of this pool's workers."""
        return threading.get_ident() in self._idents

    @property
    def busy(self) -> int:
        """How many workers are running a task now."""
        return sum(self._busy)

    @property
    def backlog(self) -> int:
        """How many tasks and ready items wait for a worker."""
        return self._tasks.qsize() + len(self._ready) + len(self._after_turn)

    def shutdown(self, wait: bool = True) -> None:
        """Let the workers finish the queued tasks and ready items, then end them."""
        # The loop may be gone: no later turn would start runners for them, nor
        # back up a stalled one, so each waiting item (a connection's close
        # handler, say) gets a runner of its own now, up to the pool's size.
        with self._ready_lock:
            extra = max(0, min(len(self._ready), self.size - self._runners))
            self._runners += extra
        for _ in range(extra):
            self._tasks.put((self._run_ready, ()))
        self._hand_over_after_turn()
        for _ in self._threads:
            self._tasks.put(_STOP)
        if wait and not self.is_worker_thread():
            for thread in self._threads:
                thread.join()

    def _work(self, index: int) -> None:
        busy = self._busy
        get = self._tasks.get
        while True:
            item = get()
            if item is None:
                return
            fn, args = item
            busy[index] = True
            try:
                fn(*args)
            except BaseException:  # a worker outlives whatever a task raises
                logger.exception("syncws: a worker task failed")
            finally:
                # An idle worker must not keep its last task alive: a fetch's
                # request holds the upgrade's data for the whole connection.
                del item, fn, args
                busy[index] = False

"""The worker pool that runs ``fetch`` and the WebSocket handlers.

Threads are started up front and named ``syncws-worker-N``. Tasks are plain
callables; ordering per connection is the caller's business (a connection
submits one task at a time that drains its own event queue).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("syncws")

_STOP = None


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
        self._idents: set[int] = set()
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"{name}-{i}", daemon=False)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()
            assert thread.ident is not None
            self._idents.add(thread.ident)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on some worker; never blocks."""
        self._tasks.put((fn, args))

    def is_worker_thread(self) -> bool:
        """Whether the calling thread is one of this pool's workers."""
        return threading.get_ident() in self._idents

    @property
    def busy(self) -> int:
        """How many workers are running a task now."""
        return sum(self._busy)

    @property
    def backlog(self) -> int:
        """How many tasks wait for a worker."""
        return self._tasks.qsize()

    def shutdown(self, wait: bool = True) -> None:
        """Let the workers finish the queued tasks, then end them."""
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
            except Exception:
                logger.exception("syncws: a worker task failed")
            finally:
                busy[index] = False

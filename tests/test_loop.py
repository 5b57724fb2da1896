"""The loop's door: wakeups coalesce and are never lost."""

from __future__ import annotations

import socket
import threading
from typing import Any

from conftest import wait

from syncws._loop import EventLoop


class RecvHook:
    """Wraps the wakeup socket; calls ``hook`` before the first recv."""

    def __init__(self, sock: socket.socket, hook: Any) -> None:
        self.sock = sock
        self.hook = hook

    def recv(self, n: int) -> bytes:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return self.sock.recv(n)


def test_a_wakeup_during_the_drain_is_not_swallowed() -> None:
    loop = EventLoop()
    try:
        loop._wake()  # a wakeup is pending: one byte, flag set
        real = loop._wake_recv
        # Another thread wakes the loop while it drains the wakeup socket.
        loop._wake_recv = RecvHook(real, loop._wake)  # type: ignore[assignment]
        loop._drain_wakeups()
        loop._wake_recv = real
        # Invariant: a set flag always has a byte waiting to wake select().
        has_byte = bool(socket.socket.recv(real, 16, socket.MSG_PEEK | socket.MSG_DONTWAIT)) \
            if loop._wake_pending else True
        assert has_byte, "flag set with no byte: every later wakeup would be skipped"
    finally:
        loop.selector.close()
        loop._wake_recv.close()
        loop._wake_send.close()


def test_calls_from_many_threads_all_run_promptly() -> None:
    loop = EventLoop()
    loop.start(name="syncws-loop-test")
    try:
        done = threading.Semaphore(0)
        count = 20_000

        def call() -> None:
            done.release()

        def producer() -> None:
            for _ in range(count // 4):
                loop.call_soon_threadsafe(call)

        threads = [threading.Thread(target=producer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Without a timer or socket activity, only wakeups can run these.
        for _ in range(count):
            assert done.acquire(timeout=wait(5)), "a call was left waiting"
    finally:
        loop.stop()
        assert loop.thread is not None
        loop.thread.join(wait(5))


def test_before_wait_runs_every_turn_even_when_the_loop_never_waits() -> None:
    """A busy loop (calls always queued) must still give a stalled ready queue a runner."""
    loop = EventLoop()
    checked: list[float] = []

    def before_wait(now: float) -> bool:
        checked.append(now)
        return False

    loop.before_wait = before_wait
    try:
        for _ in range(3):
            loop._calls.append(lambda: None)  # queued: this turn does not wait
            loop.run_once()
        assert len(checked) == 3
    finally:
        loop.selector.close()
        loop._wake_recv.close()
        loop._wake_send.close()

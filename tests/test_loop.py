"""The loop's door: wakeups coalesce and are never lost."""

from __future__ import annotations

import os
import select
import socket
import threading

import pytest
from conftest import wait

from syncws._loop import EventLoop, Waker


def test_a_wakeup_during_the_drain_is_not_swallowed() -> None:
    loop = EventLoop()
    try:
        loop._wake()  # a wakeup is pending: the waker is readable, the flag set
        waker = loop.waker
        real_read = waker._read

        def read_after_another_wake() -> bytes:
            # Another thread wakes the loop while it drains the waker.
            waker._read = real_read  # type: ignore[method-assign]
            loop._wake()
            return real_read()

        waker._read = read_after_another_wake  # type: ignore[method-assign]
        loop._drain_wakeups()
        # Invariant: a set flag always has the waker readable, to wake select().
        readable = bool(select.select([waker], [], [], 0)[0])
        assert readable or not loop._wake_pending, \
            "flag set with nothing to read: every later wakeup would be skipped"
    finally:
        loop.selector.close()
        loop.waker.close()


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
        loop.waker.close()


@pytest.mark.parametrize("eventfd", [True, False], ids=["eventfd", "socketpair"])
def test_waker_wakes_select_and_drains(monkeypatch: pytest.MonkeyPatch, eventfd: bool) -> None:
    if not eventfd:
        monkeypatch.delattr(os, "eventfd", raising=False)
    elif not hasattr(os, "eventfd"):
        pytest.skip("no eventfd here")
    waker = Waker()
    try:
        assert select.select([waker], [], [], 0)[0] == []
        for _ in range(3000):  # more than one read's worth on the socketpair
            waker.wake()
        assert select.select([waker], [], [], wait(1))[0] == [waker]
        waker.drain()
        assert select.select([waker], [], [], 0)[0] == []
    finally:
        waker.close()


@pytest.mark.parametrize("eventfd", [True, False], ids=["eventfd", "socketpair"])
def test_a_wake_after_close_writes_nothing_to_a_reused_descriptor(
        monkeypatch: pytest.MonkeyPatch, eventfd: bool) -> None:
    """The loop thread closes its waker as it ends while another thread may still
    wake it: the descriptor number may already name an unrelated socket."""
    if not eventfd:
        monkeypatch.delattr(os, "eventfd", raising=False)
    elif not hasattr(os, "eventfd"):
        pytest.skip("no eventfd here")
    receiver, sender = socket.socketpair()  # first, so as not to take the number itself
    waker = Waker()
    number = waker._write_fd
    waker.close()
    try:
        os.dup2(sender.fileno(), number)  # the freed number now names another socket
        try:
            waker.wake()
            assert select.select([receiver], [], [], 0)[0] == [], \
                "the wakeup landed in the socket that reused the waker's descriptor"
        finally:
            os.close(number)
        waker.close()  # a second close does nothing (it must not close a reused number)
    finally:
        receiver.close()
        sender.close()


def test_writes_and_calls_queued_during_a_turn_wait_for_the_next_turn() -> None:
    """A worker that keeps queueing writes (a handler publishing in a loop) must not
    keep the loop in one turn: reads, timers and other sockets come in between."""
    loop = EventLoop()
    turns: list[str] = []

    class Subscriber:
        def flush(self) -> None:
            turns.append("flush")
            loop.request_flush(self)  # a publish queued more while we wrote

    def call() -> None:
        turns.append("call")
        loop.call_soon_threadsafe(call)

    try:
        loop.request_flush(Subscriber())
        loop.call_soon_threadsafe(call)
        loop.run_once()
        loop.run_once()
        assert turns == ["call", "flush", "call", "flush"]
    finally:
        loop.selector.close()
        loop.waker.close()

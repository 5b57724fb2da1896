"""The worker pool: the loop starts runners once per turn, a stalled runner gets a backup."""

from __future__ import annotations

import threading
import time

from conftest import wait, wait_for

from syncws._workers import STALL_SECONDS, WorkerPool


def test_scheduled_items_wait_for_start_runners_then_run_in_order_on_one_thread() -> None:
    pool = WorkerPool(4)
    try:
        ran: list[tuple[int, str]] = []
        done = threading.Event()

        def item(n: int) -> None:
            ran.append((n, threading.current_thread().name))
            if n == 49:
                done.set()

        for n in range(50):
            pool.schedule(item, n)
        # Nothing wakes a worker until the loop's turn says so.
        assert not done.wait(0.05) and ran == []
        assert pool.start_runners(time.monotonic())  # items wait: look again soon
        assert done.wait(wait(5))
        assert [n for n, _ in ran] == list(range(50))
        # One turn, one wake-up: a single runner took the whole burst.
        assert len({name for _, name in ran}) == 1
        wait_for(lambda: not pool.start_runners(time.monotonic()), message="queue drained")
    finally:
        pool.shutdown()


def test_tasks_submitted_after_the_turn_wait_for_it_then_each_gets_a_worker() -> None:
    pool = WorkerPool(2)
    try:
        first = threading.Event()
        both = threading.Barrier(3)  # two tasks and this test: both run at once

        def task() -> None:
            first.set()
            both.wait(wait(5))

        pool.submit_after_turn(task)
        pool.submit_after_turn(task)
        # A fetch handed over mid-turn would wake a worker to fight the loop for the GIL.
        assert not first.wait(0.05) and pool.backlog == 2
        assert not pool.start_runners(time.monotonic())  # no ready items to look at again
        both.wait(wait(5))  # each task on its own worker, not one after the other
    finally:
        pool.shutdown()


def test_shutdown_hands_over_tasks_no_loop_turn_will() -> None:
    pool = WorkerPool(1)
    done = threading.Event()
    pool.submit_after_turn(done.set)
    pool.shutdown()  # waits for the workers to end
    assert done.is_set()


def test_a_stalled_runner_gets_a_backup_only_after_the_stall_time() -> None:
    pool = WorkerPool(2)
    release = threading.Event()
    second = threading.Event()
    try:
        def block(_: object) -> None:
            release.wait(wait(10))

        def mark(_: object) -> None:
            second.set()

        pool.schedule(block, None)
        pool.schedule(mark, None)
        pool.start_runners(time.monotonic())
        # The runner has taken the blocking item once only the second one waits; it notes
        # when under the lock it took it with (reading it without the lock could see the
        # note from before, and then the stall would seem to start later than it does).
        wait_for(lambda: pool.busy == 1 and len(pool._ready) == 1,
                 message="the first item blocks its runner")
        with pool._ready_lock:
            moved = pool._last_progress  # when the runner took the blocking item
        # Within the stall time no second runner starts, however often the loop looks
        # (the clock is the loop's: the times are given, not read).
        assert pool.start_runners(moved + STALL_SECONDS / 2)
        assert not second.wait(0.05)
        # Past it, the loop's next look starts one, and the second item runs. (Not exactly
        # at it: (moved + STALL_SECONDS) - moved can round to just under STALL_SECONDS.)
        assert pool.start_runners(moved + STALL_SECONDS * 1.5)
        assert second.wait(wait(5))
    finally:
        release.set()
        pool.shutdown()


def test_shutdown_runs_items_no_loop_turn_will_start() -> None:
    pool = WorkerPool(2)
    done = threading.Event()
    pool.schedule(lambda _: done.set(), None)
    pool.shutdown()  # waits for the workers to end
    assert done.is_set()


def test_an_idle_worker_keeps_nothing_of_its_last_task_alive() -> None:
    import gc
    import weakref

    class Request:  # a fetch's request holds the upgrade's data for the whole connection
        pass

    pool = WorkerPool(1)
    try:
        request = Request()
        ref = weakref.ref(request)
        done = threading.Event()
        pool.submit_after_turn(lambda req: done.set(), request)
        pool.start_runners(time.monotonic())
        assert done.wait(wait(5))
        del request
        wait_for(lambda: pool.busy == 0, message="the worker is idle again")
        gc.collect()
        assert ref() is None
    finally:
        pool.shutdown()

"""Two small costs behind the figures in the README: thread wake-ups and masking.

    python benchmarks/micro.py [--rounds 2000]

1. Wake-ups: one thread hands a token to another and waits for it back,
   the way syncws' I/O loop hands a batch to a worker (a queue) and the
   worker wakes the loop (an eventfd the loop waits on in ``select``).
   Printed: the median round trip (two wake-ups), once with the threads free
   to run on any core and once with both pinned to one core (Linux only).
2. Masking: XOR-ing a client frame's payload with its key, in pure Python
   (``mask_payload_python``) and with python-websockets' C ``apply_mask``
   (what ``syncws[speedups]`` installs), for 64 B and 64 KiB payloads.
"""

from __future__ import annotations

import argparse
import os
import queue
import selectors
import statistics
import threading
import time
import timeit
from collections.abc import Callable
from functools import partial

from syncws._frames import mask_payload_python


def wakeup_round_trip_us(rounds: int, cpus: set[int] | None) -> float:
    """Median microseconds for loop -> worker -> loop, over ``rounds`` trips."""
    to_worker: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    wake_fd = os.eventfd(0, os.EFD_NONBLOCK)
    selector = selectors.DefaultSelector()
    selector.register(wake_fd, selectors.EVENT_READ)
    one = (1).to_bytes(8, "little")

    def worker() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        while to_worker.get() is not None:
            os.write(wake_fd, one)

    thread = threading.Thread(target=worker)
    thread.start()
    before = os.sched_getaffinity(0)
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    times = []
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            to_worker.put(1)
            selector.select()
            os.read(wake_fd, 8)
            times.append(time.perf_counter() - start)
    finally:
        to_worker.put(None)
        thread.join()
        os.sched_setaffinity(0, before)
        selector.close()
        os.close(wake_fd)
    return statistics.median(times) * 1e6


def masking_us(size: int) -> dict[str, float]:
    """Best-of microseconds per call to unmask ``size`` bytes, by implementation."""
    payload, key = os.urandom(size), os.urandom(4)
    number = 20000 if size < 1024 else 200
    found: dict[str, float] = {}
    implementations: dict[str, Callable[[bytes, bytes], bytes]] = {
        "pure Python": mask_payload_python}
    try:
        from websockets.speedups import apply_mask
    except ImportError:
        pass
    else:
        implementations["C (syncws[speedups])"] = apply_mask
    for name, fn in implementations.items():
        best = min(timeit.repeat(partial(fn, payload, key), number=number, repeat=5))
        found[name] = best / number * 1e6
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    print(f"thread wake-ups, loop -> worker -> loop (median of {args.rounds}):")
    print(f"  any core:      {wakeup_round_trip_us(args.rounds, None):7.1f} us per round trip")
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        same = wakeup_round_trip_us(args.rounds, {core})
        print(f"  one core:      {same:7.1f} us per round trip")
    print("unmasking a client payload (best of 5):")
    for size in (64, 64 * 1024):
        for name, us in masking_us(size).items():
            print(f"  {size:>6} B, {name:<22} {us:9.2f} us")


if __name__ == "__main__":
    main()

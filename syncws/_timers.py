"""Deadlines for many connections without a timer object per event. Pure.

Each target keeps at most one live entry: ``arm(target, when)`` only pushes
when ``when`` is earlier than the target's armed time, and ``pop_due`` skips
entries that were superseded. A connection therefore re-computes its next
deadline only when it fires, and recording activity costs one assignment.

``cancel(target)`` disarms a target that is gone (a closed connection).
Superseded and cancelled entries stay in the heap, holding their target, so
the heap is rebuilt without them once they outnumber the live ones: a closed
connection must not live on, with its buffers, until a deadline a minute away.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Protocol

# Stale entries tolerated before a rebuild is considered at all.
REBUILD_MIN = 64


class TimerTarget(Protocol):
    timer_at: float | None

    def on_timer(self, now: float) -> None: ...


class TimerQueue:
    """A heap of (deadline, target); time is passed in, never read here."""

    __slots__ = ("_heap", "_seq", "_stale")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerTarget]] = []
        self._seq = itertools.count()
        # How many heap entries are superseded or cancelled.
        self._stale = 0

    def arm(self, target: TimerTarget, when: float) -> None:
        """Make sure ``target`` is due no later than ``when``."""
        armed = target.timer_at
        if armed is not None:
            if armed <= when:
                return
            self._stale += 1  # the entry for ``armed`` is superseded
        target.timer_at = when
        heapq.heappush(self._heap, (when, next(self._seq), target))

    def cancel(self, target: TimerTarget) -> None:
        """Disarm ``target`` for good and let the heap drop its reference soon."""
        if target.timer_at is None:
            return
        target.timer_at = None
        self._stale += 1
        heap = self._heap
        if self._stale > REBUILD_MIN and 2 * self._stale > len(heap):
            heap[:] = [entry for entry in heap if entry[2].timer_at == entry[0]]
            heapq.heapify(heap)
            self._stale = 0

    def next_deadline(self) -> float | None:
        """The earliest armed deadline, or None."""
        heap = self._heap
        while heap and heap[0][2].timer_at != heap[0][0]:
            heapq.heappop(heap)
            self._stale -= 1
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[TimerTarget]:
        """Disarm and return every target whose deadline is ``<= now``."""
        heap = self._heap
        due: list[TimerTarget] = []
        while heap and heap[0][0] <= now:
            when, _, target = heapq.heappop(heap)
            if target.timer_at == when:
                target.timer_at = None
                due.append(target)
            else:
                self._stale -= 1
        return due

    def __len__(self) -> int:
        return len(self._heap)

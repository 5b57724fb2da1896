"""Deadlines for many connections without a timer object per event. Pure.

Each target keeps at most one live entry: ``arm(target, when)`` only pushes
when ``when`` is earlier than the target's armed time, and ``pop_due`` skips
entries that were superseded. A connection therefore re-computes its next
deadline only when it fires, and recording activity costs one assignment.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Protocol


class TimerTarget(Protocol):
    timer_at: float | None

    def on_timer(self, now: float) -> None: ...


class TimerQueue:
    """A heap of (deadline, target); time is passed in, never read here."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerTarget]] = []
        self._seq = itertools.count()

    def arm(self, target: TimerTarget, when: float) -> None:
        """Make sure ``target`` is due no later than ``when``."""
        if target.timer_at is not None and target.timer_at <= when:
            return
        target.timer_at = when
        heapq.heappush(self._heap, (when, next(self._seq), target))

    def next_deadline(self) -> float | None:
        """The earliest armed deadline, or None."""
        heap = self._heap
        while heap and heap[0][2].timer_at != heap[0][0]:
            heapq.heappop(heap)
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
        return due

    def __len__(self) -> int:
        return len(self._heap)

"""Deadlines for many connections without a timer object per event. Pure.

Each target keeps at most one live entry: ``arm(target, when)`` only pushes
when ``when`` is earlier than the target's armed time, and ``pop_due`` skips
entries that were superseded. A connection therefore re-computes its next
deadline only when it fires, and recording activity costs one assignment.

The heap holds a target through its ``TimerSlot``, which ``cancel(target)``
empties: a closed connection is let go of at once, not at a deadline a
minute away. The emptied entries themselves go when they come due, or in a
rebuild once they outnumber the live ones.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Protocol

# Stale entries tolerated before a rebuild is considered at all.
REBUILD_MIN = 64


class TimerTarget(Protocol):
    timer_at: float | None
    timer_slot: TimerSlot | None

    def on_timer(self, now: float) -> None: ...


class TimerSlot:
    """What the heap holds for one target; empty once the target is cancelled."""

    __slots__ = ("target",)

    def __init__(self, target: TimerTarget) -> None:
        self.target: TimerTarget | None = target


def _live(entry: tuple[float, int, TimerSlot]) -> bool:
    target = entry[2].target
    return target is not None and target.timer_at == entry[0]


class TimerQueue:
    """A heap of (deadline, target); time is passed in, never read here."""

    __slots__ = ("_heap", "_seq", "_stale")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerSlot]] = []
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
        slot = target.timer_slot
        if slot is None:
            slot = target.timer_slot = TimerSlot(target)
        target.timer_at = when
        heapq.heappush(self._heap, (when, next(self._seq), slot))

    def cancel(self, target: TimerTarget) -> None:
        """Disarm ``target`` for good; the heap lets go of it at once."""
        slot = target.timer_slot
        if slot is not None:
            slot.target = None  # superseded entries included
            target.timer_slot = None
        if target.timer_at is None:
            return
        target.timer_at = None
        self._stale += 1
        heap = self._heap
        if self._stale > REBUILD_MIN and 2 * self._stale > len(heap):
            heap[:] = [entry for entry in heap if _live(entry)]
            heapq.heapify(heap)
            self._stale = 0

    def next_deadline(self) -> float | None:
        """The earliest armed deadline, or None."""
        heap = self._heap
        while heap and not _live(heap[0]):
            heapq.heappop(heap)
            self._stale -= 1
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[TimerTarget]:
        """Disarm and return every target whose deadline is ``<= now``."""
        heap = self._heap
        due: list[TimerTarget] = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            target = entry[2].target
            if target is not None and target.timer_at == entry[0]:
                target.timer_at = None
                due.append(target)
            else:
                self._stale -= 1
        return due

    def __len__(self) -> int:
        return len(self._heap)

"""Pure tests of the outbound buffer and the deadline queue."""

from __future__ import annotations

from syncws._buffer import (
    COALESCE_AFTER,
    COALESCE_LIMIT,
    COALESCE_MAX,
    MAX_CHUNKS_PER_WRITE,
    OutboundBuffer,
)
from syncws._timers import TimerQueue, TimerSlot


def drain(buffer: OutboundBuffer, step: int) -> bytes:
    out = b""
    while buffer:
        data = b"".join(bytes(c) for c in buffer.peek())
        taken = min(step, len(data))
        out += data[:taken]
        buffer.consume(taken)
    return out


def test_partial_writes_keep_bytes_in_order() -> None:
    buffer = OutboundBuffer()
    expected = b""
    for i in range(1000):
        chunk = bytes([i % 251]) * (i % 37 + 1)
        buffer.append(chunk)
        expected += chunk
    assert buffer.size == len(expected)
    assert drain(buffer, 997) == expected
    assert buffer.size == 0 and buffer.peek() == []


def test_peek_is_bounded_and_empty_chunks_are_ignored() -> None:
    buffer = OutboundBuffer()
    buffer.append(b"")
    assert not buffer
    big = b"x" * (COALESCE_MAX + 1)  # too big to be copied together
    for _ in range(MAX_CHUNKS_PER_WRITE + 10):
        buffer.append(big)
    assert len(buffer.peek()) == MAX_CHUNKS_PER_WRITE
    buffer.clear()
    assert buffer.size == 0


def test_small_frames_share_chunks_and_peeked_chunks_never_change() -> None:
    buffer = OutboundBuffer()
    for i in range(10_000):
        buffer.append(bytes([0x82, 1, i % 251]))
    chunks = buffer.peek()
    # The first few frames as they came, then one object per 64 KiB, not per frame.
    assert len(chunks) == COALESCE_AFTER + 1 + (30_000 - 3 * (COALESCE_AFTER + 1)) // COALESCE_LIMIT
    before = [bytes(c) for c in chunks]
    buffer.append(b"tail")  # a send() may be using the peeked chunks right now
    assert [bytes(c) for c in chunks] == before
    expected = b"".join(bytes([0x82, 1, i % 251]) for i in range(10_000)) + b"tail"
    assert drain(buffer, 4096) == expected
    # After a partial write, new frames go behind the (handed-out) rest.
    for _ in range(COALESCE_AFTER + 1):
        buffer.append(b"ab")
    buffer.peek()
    buffer.consume(1)
    buffer.append(b"cd")
    buffer.append(b"ef")
    assert drain(buffer, 1) == b"b" + b"ab" * COALESCE_AFTER + b"cdef"


class Target:
    def __init__(self, name: str) -> None:
        self.name = name
        self.timer_at: float | None = None
        self.timer_slot: TimerSlot | None = None

    def on_timer(self, now: float) -> None:
        pass


def test_timer_queue_fires_earliest_and_skips_superseded() -> None:
    timers = TimerQueue()
    a, b = Target("a"), Target("b")
    timers.arm(a, 10.0)
    timers.arm(b, 5.0)
    timers.arm(a, 3.0)   # earlier: supersedes 10.0
    timers.arm(b, 7.0)   # later: ignored, b stays at 5.0
    assert timers.next_deadline() == 3.0
    assert timers.pop_due(2.9) == []
    assert timers.pop_due(5.0) == [a, b]
    assert a.timer_at is None and b.timer_at is None
    assert timers.pop_due(100.0) == []  # the stale 10.0 entry for a never fires
    assert timers.next_deadline() is None


def test_cancelled_targets_fire_never_and_are_let_go_of() -> None:
    import gc
    import weakref

    timers = TimerQueue()
    keep = [Target(f"live{i}") for i in range(10)]
    for i, target in enumerate(keep):
        timers.arm(target, 100.0 + i)
    gone = [Target(f"gone{i}") for i in range(200)]
    refs = [weakref.ref(target) for target in gone]
    for target in gone:
        timers.arm(target, 60.0)
        timers.arm(target, 5.0)  # supersedes: two entries per target
    for target in gone:
        timers.cancel(target)
        assert target.timer_at is None
    del gone, target
    gc.collect()
    # A closed connection must not wait in the heap for its deadline a minute away.
    assert sum(ref() is not None for ref in refs) == 0
    assert len(timers) <= 2 * 64 + len(keep)
    assert timers.pop_due(99.0) == []
    assert timers.pop_due(200.0) == keep


def test_cancel_is_a_no_op_for_a_target_not_armed() -> None:
    timers = TimerQueue()
    a = Target("a")
    timers.cancel(a)
    timers.arm(a, 1.0)
    assert timers.pop_due(1.0) == [a]
    timers.cancel(a)  # already fired
    assert timers.next_deadline() is None and len(timers) == 0

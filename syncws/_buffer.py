"""The outbound byte queue of one connection. Pure: the caller holds the lock."""

from __future__ import annotations

# sendmsg() takes at most IOV_MAX (1024 on Linux) buffers; stay well under it.
MAX_CHUNKS_PER_WRITE = 512

# Once more than COALESCE_AFTER chunks wait, small frames are copied into one
# bytearray of up to COALESCE_LIMIT bytes: queued one object each, a flood of
# tiny frames would cost ~40 bytes of memory per byte of backpressure_limit.
# (A few frames per turn, the usual case, are not worth a copy.)
COALESCE_AFTER = 32
COALESCE_MAX = 1024
COALESCE_LIMIT = 64 * 1024


class OutboundBuffer:
    """Encoded frames waiting for the socket, oldest first.

    ``size`` counts every byte queued, frame headers included, that the
    kernel has not yet accepted: it is ``ws.buffered_amount``.

    A list with a moving head instead of a deque: an empty deque costs ~760
    bytes, an empty list 56, and most connections are idle most of the time.
    """

    __slots__ = ("_chunks", "_head", "_sealed", "size")

    def __init__(self) -> None:
        self._chunks: list[bytes | bytearray | memoryview] = []
        self._head = 0
        # Chunks before this index were handed out by peek() and may be in a
        # send() outside the caller's lock: never grown in place.
        self._sealed = 0
        self.size = 0

    def __bool__(self) -> bool:
        return self.size > 0

    def append(self, chunk: bytes) -> None:
        """Queue ``chunk`` behind everything already queued."""
        size = len(chunk)
        if not size:
            return
        chunks = self._chunks
        if len(chunks) - self._head > COALESCE_AFTER and size <= COALESCE_MAX and \
                len(chunks) > self._sealed:
            last = chunks[-1]
            if len(last) + size <= COALESCE_LIMIT:
                if last.__class__ is bytearray:
                    last += chunk
                    self.size += size
                    return
                if len(last) <= COALESCE_MAX:
                    chunks[-1] = bytearray(last) + chunk
                    self.size += size
                    return
        chunks.append(chunk)
        self.size += size

    def peek(self, max_chunks: int = MAX_CHUNKS_PER_WRITE) -> list[bytes | bytearray | memoryview]:
        """The oldest chunks, to hand to one ``send``/``sendmsg`` call."""
        head = self._head
        taken = self._chunks[head:head + max_chunks]
        # Never below the last peek's mark: it covered at most these same chunks.
        self._sealed = head + len(taken)
        return taken

    def consume(self, nbytes: int) -> None:
        """Forget the first ``nbytes`` bytes: the kernel took them."""
        if nbytes == self.size:
            # The common case: the kernel took everything.
            self._chunks.clear()
            self._head = self._sealed = self.size = 0
            return
        self.size -= nbytes
        chunks = self._chunks
        head = self._head
        while nbytes:
            first = chunks[head]
            if len(first) <= nbytes:
                nbytes -= len(first)
                head += 1
            else:
                chunks[head] = memoryview(first)[nbytes:]
                nbytes = 0
        if head == len(chunks):
            chunks.clear()
            self._sealed = head = 0
        elif head > 64 and head * 2 > len(chunks):
            # Drop the consumed prefix now and then: amortised O(1) per chunk.
            del chunks[:head]
            self._sealed -= head
            head = 0
        self._head = head

    def clear(self) -> None:
        """Drop everything queued (the connection is gone)."""
        self._chunks = []
        self._head = self._sealed = 0
        self.size = 0

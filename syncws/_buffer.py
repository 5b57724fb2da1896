"""The outbound byte queue of one connection. Pure: the caller holds the lock."""

from __future__ import annotations

# sendmsg() takes at most IOV_MAX (1024 on Linux) buffers; stay well under it.
MAX_CHUNKS_PER_WRITE = 512


class OutboundBuffer:
    """Encoded frames waiting for the socket, oldest first.

    ``size`` counts every byte queued, frame headers included, that the
    kernel has not yet accepted: it is ``ws.buffered_amount``.

    A list with a moving head instead of a deque: an empty deque costs ~760
    bytes, an empty list 56, and most connections are idle most of the time.
    """

    __slots__ = ("_chunks", "_head", "size")

    def __init__(self) -> None:
        self._chunks: list[bytes | memoryview] = []
        self._head = 0
        self.size = 0

    def __bool__(self) -> bool:
        return self.size > 0

    def append(self, chunk: bytes) -> None:
        """Queue ``chunk`` behind everything already queued."""
        if chunk:
            self._chunks.append(chunk)
            self.size += len(chunk)

    def peek(self, max_chunks: int = MAX_CHUNKS_PER_WRITE) -> list[bytes | memoryview]:
        """The oldest chunks, to hand to one ``send``/``sendmsg`` call."""
        head = self._head
        return self._chunks[head:head + max_chunks]

    def consume(self, nbytes: int) -> None:
        """Forget the first ``nbytes`` bytes: the kernel took them."""
        if nbytes == self.size:
            # The common case: the kernel took everything.
            self._chunks.clear()
            self._head = self.size = 0
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
            head = 0
        elif head > 64 and head * 2 > len(chunks):
            # Drop the consumed prefix now and then: amortised O(1) per chunk.
            del chunks[:head]
            head = 0
        self._head = head

    def clear(self) -> None:
        """Drop everything queued (the connection is gone)."""
        self._chunks = []
        self._head = 0
        self.size = 0

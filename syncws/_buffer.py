"""The outbound byte queue of one connection. Pure: the caller holds the lock."""

from __future__ import annotations

from collections import deque

# sendmsg() takes at most IOV_MAX (1024 on Linux) buffers; stay well under it.
MAX_CHUNKS_PER_WRITE = 512


class OutboundBuffer:
    """Encoded frames waiting for the socket, oldest first.

    ``size`` counts every byte queued, frame headers included, that the
    kernel has not yet accepted: it is ``ws.buffered_amount``.
    """

    __slots__ = ("_chunks", "size")

    def __init__(self) -> None:
        self._chunks: deque[bytes | memoryview] = deque()
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
        chunks = self._chunks
        if len(chunks) <= max_chunks:
            return list(chunks)
        return [chunks[i] for i in range(max_chunks)]

    def consume(self, nbytes: int) -> None:
        """Forget the first ``nbytes`` bytes: the kernel took them."""
        self.size -= nbytes
        chunks = self._chunks
        while nbytes:
            head = chunks[0]
            if len(head) <= nbytes:
                nbytes -= len(head)
                chunks.popleft()
            else:
                chunks[0] = memoryview(head)[nbytes:]
                nbytes = 0

    def clear(self) -> None:
        """Drop everything queued (the connection is gone)."""
        self._chunks.clear()
        self.size = 0

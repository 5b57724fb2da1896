"""``ws.cork()``: a thread's sends to one connection written as one.

A cork holds back the write, not the frames: each send inside it is queued
on the connection at once (so it gets the same -1/0 answer as any send, keeps
its place among other threads' sends and before a close frame, and is never
dropped once accepted), but asks the loop for no write; the cork's end asks
for one. Per thread, the connections being corked, by ``id`` of their
``WsConnection``: sends and publishes that reach a corked connection from the
corking thread join its cork.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._ws_conn import WsConnection

# An encoded frame, or (opcode, payload) of a message for a per-connection
# deflate context, which compresses it as it queues it (in wire order).
Part = bytes | tuple[int, bytes]


class Cork:
    """One ``cork()`` call on one connection: whether it queued anything yet."""

    __slots__ = ("queued",)

    def __init__(self) -> None:
        self.queued = False

    def take(self, conn: WsConnection, part: Part) -> int:
        """Queue ``part`` without a write; ACCEPTED, BACKPRESSURE or DROPPED."""
        self.queued = True
        if part.__class__ is bytes:
            return conn.enqueue(part, flush=False)
        return conn.enqueue_parts([part], flush=False)

    def release(self, conn: WsConnection) -> None:
        """Have what the cork queued written, as one write."""
        if self.queued:
            conn.flush_corked()


class _CorkState(threading.local):
    # A class-level default: reading a missing thread-local attribute through
    # getattr(..., None) raises and catches AttributeError on every send.
    corks: dict[int, Cork] | None = None


CORKS = _CorkState()
"""``CORKS.corks``: the calling thread's corks by connection id (None or empty: none)."""


def start_cork(conn: WsConnection) -> bool:
    """Begin corking ``conn`` on this thread; False if it is corked already (nested)."""
    corks = CORKS.corks
    if corks is None:
        corks = CORKS.corks = {}
    if id(conn) in corks:
        return False
    corks[id(conn)] = Cork()
    return True


def end_cork(conn: WsConnection) -> None:
    """Stop corking ``conn`` on this thread and have what the cork queued written."""
    corks = CORKS.corks
    assert corks is not None
    corks.pop(id(conn)).release(conn)


def queue_part(conn: WsConnection, part: Part, corks: dict[int, Cork] | None) -> int:
    """Queue ``part`` for ``conn``, in the cork when ``corks`` (``CORKS.corks``) has one.

    Returns ACCEPTED, BACKPRESSURE or DROPPED.
    """
    if corks:
        cork = corks.get(id(conn))
        if cork is not None:
            return cork.take(conn, part)
    if part.__class__ is bytes:
        return conn.enqueue(part)
    return conn.enqueue_message(*part)

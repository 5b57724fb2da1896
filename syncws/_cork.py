"""``ws.cork()``: a thread's sends to one connection held back and written as one.

Per thread, the connections being corked (by ``id`` of their ``WsConnection``)
and what has been sent to each so far. Sends and publishes that reach a
corked connection from the corking thread join its cork, so they keep the
order they were called in; other threads' sends go straight through.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ._ws_conn import DROPPED

if TYPE_CHECKING:
    from ._ws_conn import WsConnection

# An encoded frame, or (opcode, payload) of a message for a per-connection
# deflate context: compressed at the cork's end, in wire order.
Part = bytes | tuple[int, bytes]


class Cork:
    """The parts one ``cork()`` call has taken so far, and their size."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self.size = 0

    def take(self, conn: WsConnection, part: Part) -> int:
        """Admit ``part`` against ``conn``'s limit; ACCEPTED, BACKPRESSURE or DROPPED."""
        # A message still to compress is counted at its uncompressed size.
        nbytes = len(part) if isinstance(part, bytes) else len(part[1])
        status = conn.admit(self.size, nbytes)
        if status != DROPPED:
            self.parts.append(part)
            self.size += nbytes
        return status

    def release(self, conn: WsConnection) -> None:
        """Queue what the cork took, as one write.

        Each part was admitted as it was sent (and told -1 or 0 then): it
        goes out whatever the buffer holds now.
        """
        parts = self.parts
        if not parts:
            return
        if all(isinstance(part, bytes) for part in parts):
            conn.enqueue(b"".join(parts), admitted=True)  # type: ignore[arg-type]
        else:
            conn.enqueue_parts(parts, admitted=True)


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
    """Stop corking ``conn`` on this thread and queue what the cork took."""
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

"""Running one connection's handlers on a worker, in order, in batches.

A connection has at most one ``run_events`` task in the pool at a time
(``dispatching`` under its lock says so); the task takes the whole inbox at
once, so a busy connection pays one thread hand-off per batch, not per
message.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._ws_conn import WsConnection

logger = logging.getLogger("syncws")

# Event kinds in a connection's inbox: (kind, payload, message bytes).
OPEN, MESSAGE, PING, PONG, DRAIN, CLOSE = range(6)
InboxEvent = tuple[int, Any, int]

INBOUND_LOW_WATER = 256 * 1024

# What one queued event costs beyond its payload (its tuple, the payload
# object's header, its list slot), so that a flood of empty messages, pings
# or pongs fills the inbound bound as surely as big messages do.
EVENT_COST = 128


def run_events(conn: WsConnection) -> None:
    """Drain ``conn.inbox`` on this worker until it is empty or paused."""
    config = conn.config
    ws = conn.ws
    done_bytes = 0
    while True:
        with conn.lock:
            conn.inbox_bytes -= done_bytes
            resume = conn.backlog_paused and conn.inbox_bytes <= INBOUND_LOW_WATER
            if resume:
                conn.backlog_paused = False
            batch: list[InboxEvent]
            if conn.user_paused:
                # ws.pause() holds back what was read; drain is about what we send.
                batch = [event for event in conn.inbox if event[0] == DRAIN]
                if batch:
                    conn.inbox = [event for event in conn.inbox if event[0] != DRAIN]
                else:
                    conn.dispatching = False
            elif conn.inbox:
                batch = conn.inbox
                conn.inbox = []
            else:
                conn.dispatching = False
                batch = []
        if resume:
            conn.loop.call_soon_threadsafe(conn.update_reading)
        if not batch:
            return
        done_bytes = 0
        for position, (kind, payload, nbytes) in enumerate(batch):
            if conn.user_paused and kind != DRAIN:
                # ws.pause(), from a handler of this batch or another thread: the
                # rest waits, first in line, for resume() (a close clears the pause).
                with conn.lock:
                    conn.inbox[:0] = batch[position:]
                break
            done_bytes += nbytes + EVENT_COST
            if kind == CLOSE:
                _run_close(conn, ws, payload)
                continue
            if conn.closed_by_us and kind != OPEN:
                continue  # (open always runs: close follows it, exactly once)
            try:
                if kind == MESSAGE:
                    config.message(ws, payload)
                elif kind == OPEN:
                    if config.open is not None:
                        config.open(ws)
                elif kind == DRAIN:
                    if config.drain is not None:
                        config.drain(ws)
                elif kind == PING:
                    if config.ping is not None:
                        config.ping(ws, payload)
                elif kind == PONG and config.pong is not None:
                    config.pong(ws, payload)
            except BaseException as exc:  # sys.exit() too: the worker must live on
                conn.closed_by_us = True
                _report(conn, ws, exc)
                conn.request_close(1011, "Internal error")


def _report(conn: WsConnection, ws: Any, exc: BaseException) -> None:
    error = conn.config.error
    if error is None:
        logger.error("syncws: a websocket handler raised", exc_info=exc)
        return
    try:
        error(ws, exc)
    except BaseException:
        logger.exception("syncws: the error handler raised")


def _run_close(conn: WsConnection, ws: Any, payload: tuple[int, str]) -> None:
    code, reason = payload
    try:
        if conn.config.close is not None:
            conn.config.close(ws, code, reason)
    except BaseException:
        logger.exception("syncws: the close handler raised")
    finally:
        # The ServerWebSocket and its connection point at each other: break the
        # cycle, so that both (and ws.data) go as soon as the user lets go of ws.
        conn.ws = None
        conn.server._close_handler_done(conn)

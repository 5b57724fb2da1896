"""Backpressure Handling: a producer that respects send()'s -1 and 0 and resumes on drain.

    python examples/backpressure.py         # connect to ws://127.0.0.1:3000/?count=256

Each connection gets ``count`` binary messages of 64 KiB (the first 4 bytes
number them), then a text line "done: N messages, P pauses" and a close.
``send`` returns the payload length (accepted), -1 (accepted, but the
buffer is now over ``backpressure_limit``: stop) or 0 (dropped: not queued,
send it again later). Either way the producer stops, and ``drain`` runs
once the buffer has flushed, which picks up where it left off. Memory per
connection stays near the limit however slowly the client reads.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import syncws

CHUNK = 64 * 1024


@dataclass
class Job:
    total: int
    sent: int = 0
    pauses: int = 0


def fetch(req: syncws.Request, server: syncws.Server[Job]) -> syncws.Response | None:
    try:
        count = int(req.query.get("count", "256"))
    except ValueError:
        return syncws.Response("count must be a number", status=400)
    if server.upgrade(req, data=Job(total=max(0, min(count, 100_000)))):
        return None
    return syncws.Response("Not a WebSocket request", status=400)


def produce(ws: syncws.ServerWebSocket[Job]) -> None:
    """Send until the buffer is full or the job is done.

    Runs in ``open`` and ``drain``; one connection's handlers never run at
    once, so ``ws.data`` needs no lock.
    """
    job = ws.data
    while job.sent < job.total:
        chunk = job.sent.to_bytes(4, "big") + bytes(CHUNK - 4)
        result = ws.send(chunk)
        if result == 0:  # dropped (or closing): nothing queued; drain retries this one
            job.pauses += 1
            return
        job.sent += 1
        if result == -1:  # queued, but over the limit: wait for drain
            job.pauses += 1
            return
    if job.sent == job.total and ws.ready_state == syncws.ReadyState.OPEN:
        ws.send(f"done: {job.sent} messages, {job.pauses} pauses")
        ws.close(1000, "done")


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server: syncws.Server[Job] = syncws.serve(
        fetch=fetch,
        websocket={
            "open": produce,
            "drain": produce,
            "message": lambda ws, message: None,
            "backpressure_limit": 256 * 1024,
        },
        hostname="127.0.0.1",
        port=port,
    )
    print(f"Listening on ws://127.0.0.1:{server.port}", flush=True)
    server.serve_forever()

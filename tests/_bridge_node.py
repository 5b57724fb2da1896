"""A syncws server process for test_redis_bridge and the bridge benchmark.

    python tests/_bridge_node.py --redis URL|none [--port N] [--reuse-port]

Prints one line ``PORT <port> PID <pid>`` once it listens, then serves until
SIGTERM. WebSocket ``/?sub=a,b&pub=t``: subscribes to ``a`` and ``b``, sends
``ready``, and publishes every message it receives on ``t`` with
``ws.publish`` (text stays text, binary stays binary). HTTP ``/pid`` answers
the process id, ``/stats`` the server's stats and thread names.
"""

from __future__ import annotations

import argparse
import os
import threading
from typing import Any

import syncws


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response | None:
        if req.path == "/pid":
            return syncws.Response(str(os.getpid()))
        if req.path == "/stats":
            return syncws.Response.json({
                "stats": server.stats(),
                "threads": [t.name for t in threading.enumerate()],
            })
        if server.upgrade(req, data=dict(req.query)):
            return None
        return syncws.Response("Expected WebSocket", status=400)

    def open_(ws: syncws.ServerWebSocket[dict[str, str]]) -> None:
        for topic in ws.data.get("sub", "").split(","):
            if topic:
                ws.subscribe(topic)
        ws.send("ready")

    def message(ws: syncws.ServerWebSocket[dict[str, str]], msg: str | bytes) -> None:
        ws.publish(ws.data.get("pub", "chat"), msg)

    bridge = None if args.redis == "none" else syncws.RedisBridge(args.redis)
    server: syncws.Server[dict[str, str]] = syncws.serve(
        fetch, {"open": open_, "message": message, "backpressure_limit": 64 * 1024 * 1024},
        hostname="127.0.0.1", port=args.port, reuse_port=args.reuse_port,
        workers=args.workers, bridge=bridge)
    print(f"PORT {server.port} PID {os.getpid()}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

"""Upgrade with Headers/Data: set a cookie in the 101 and attach per-connection data.

    python examples/upgrade_with_data.py    # connect to ws://127.0.0.1:3000/?user=ada
"""

from __future__ import annotations

import sys
import time
from typing import Any

import syncws


def fetch(req: syncws.Request, server: syncws.Server[dict[str, Any]]) -> None:
    user_id = req.query.get("user")
    server.upgrade(
        req,
        headers={"Set-Cookie": "session=abc123"},
        data={"user_id": user_id, "connected_at": time.time()},
    )


def on_message(ws: syncws.ServerWebSocket[dict[str, Any]], message: str | bytes) -> None:
    print(f"User {ws.data['user_id']}: {message!s}", flush=True)
    ws.send(f"{ws.data['user_id']} said {message!s}")


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server: syncws.Server[dict[str, Any]] = syncws.serve(
        fetch=fetch, websocket={"message": on_message}, hostname="127.0.0.1", port=port)
    print(f"Listening on ws://127.0.0.1:{server.port}", flush=True)
    server.serve_forever()

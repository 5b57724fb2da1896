"""Basic Server: echo every message back as "Echo: <message>".

    python examples/echo.py            # then connect to ws://127.0.0.1:3000
"""

from __future__ import annotations

import sys

import syncws


def fetch(req: syncws.Request, server: syncws.Server[None]) -> syncws.Response | None:
    if server.upgrade(req):
        return None  # upgraded: no Response needed
    return syncws.Response("Not a WebSocket request", status=400)


def on_open(ws: syncws.ServerWebSocket[None]) -> None:
    print("Connected")


def on_message(ws: syncws.ServerWebSocket[None], message: str | bytes) -> None:
    ws.send(f"Echo: {message!s}" if isinstance(message, str) else b"Echo: " + message)


def on_close(ws: syncws.ServerWebSocket[None], code: int, reason: str) -> None:
    print("Disconnected")


def on_drain(ws: syncws.ServerWebSocket[None]) -> None:
    pass  # ready to receive more data


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server: syncws.Server[None] = syncws.serve(
        fetch=fetch,
        websocket={"open": on_open, "message": on_message, "close": on_close,
                   "drain": on_drain},
        hostname="127.0.0.1",
        port=port,
    )
    print(f"Listening on ws://127.0.0.1:{server.port}", flush=True)
    server.serve_forever()

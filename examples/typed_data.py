"""Typed Data: ``ws.data`` has a declared type that mypy checks.

    python examples/typed_data.py           # connect to ws://127.0.0.1:3000/?user=ada&room=lobby
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import syncws


@dataclass
class WsData:
    user_id: str
    room: str


class Handler(syncws.WebSocketHandler[WsData]):
    def message(self, ws: syncws.ServerWebSocket[WsData], message: str | bytes) -> None:
        # ws.data is typed as WsData
        print(ws.data.user_id, flush=True)
        ws.send(f"{ws.data.user_id}@{ws.data.room}: {message!s}")


def fetch(req: syncws.Request, server: syncws.Server[WsData]) -> syncws.Response | None:
    data = WsData(user_id=req.query.get("user", "anonymous"), room=req.query.get("room", "lobby"))
    if server.upgrade(req, data=data):
        return None
    return syncws.Response("Expected WebSocket", status=400)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server = syncws.serve(fetch=fetch, websocket=Handler(), hostname="127.0.0.1", port=port)
    print(f"Listening on ws://127.0.0.1:{server.port}", flush=True)
    server.serve_forever()

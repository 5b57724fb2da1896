"""Chat Example: ?name= picks your name; joins, messages and leaves go to everyone.

    python examples/chat.py                 # connect to ws://127.0.0.1:3000/?name=ada
"""

from __future__ import annotations

import sys
from typing import TypedDict

import syncws


class User(TypedDict):
    username: str


def fetch(req: syncws.Request, server: syncws.Server[User]) -> syncws.Response | None:
    username = req.query.get("name") or "Anonymous"
    if server.upgrade(req, data={"username": username}):
        return None
    return syncws.Response("Expected WebSocket", status=400)


class Chat(syncws.WebSocketHandler[User]):
    def __init__(self) -> None:
        self.server: syncws.Server[User] | None = None

    def open(self, ws: syncws.ServerWebSocket[User]) -> None:
        ws.subscribe("chat")
        self.publish(f"{ws.data['username']} joined")

    def message(self, ws: syncws.ServerWebSocket[User], message: str | bytes) -> None:
        self.publish(f"{ws.data['username']}: {message!s}")

    def close(self, ws: syncws.ServerWebSocket[User], code: int, reason: str) -> None:
        self.publish(f"{ws.data['username']} left")

    def publish(self, text: str) -> None:
        assert self.server is not None
        self.server.publish("chat", text)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    chat = Chat()
    server = syncws.serve(fetch=fetch, websocket=chat, hostname="127.0.0.1", port=port)
    chat.server = server
    print(f"Listening on ws://127.0.0.1:{server.port}", flush=True)
    server.serve_forever()

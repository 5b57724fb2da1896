"""Pub/Sub: every socket joins "chat-room"; messages go to the others.

    python examples/pubsub.py               # connect several clients to ws://127.0.0.1:3000
"""

from __future__ import annotations

import sys
import threading

import syncws


def on_open(ws: syncws.ServerWebSocket[None]) -> None:
    ws.subscribe("chat-room")
    ws.publish("chat-room", "New user joined!")


def on_message(ws: syncws.ServerWebSocket[None], message: str | bytes) -> None:
    ws.publish("chat-room", message)  # to all subscribers except the sender


def on_close(ws: syncws.ServerWebSocket[None], code: int, reason: str) -> None:
    ws.unsubscribe("chat-room")  # already done by the server; harmless


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server: syncws.Server[None] = syncws.serve(
        websocket={"open": on_open, "message": on_message, "close": on_close},
        hostname="127.0.0.1", port=port)
    print(f"Listening on ws://127.0.0.1:{server.port}", flush=True)

    # Server-level publish, to all subscribers, from any thread.
    def announce() -> None:
        while not stopped.wait(10):
            server.publish("chat-room", "Server announcement!")

    stopped = threading.Event()
    threading.Thread(target=announce, daemon=True).start()
    server.serve_forever()
    stopped.set()

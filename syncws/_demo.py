"""The chat demo of ``python3 -m syncws demo``: one page, one WebSocket, pub/sub.

``GET /`` serves a page with a little JavaScript; it opens a WebSocket to
``/ws?name=...``; every join, message and leave is published to the "chat"
topic, so every open page sees it. ``/?name=ada`` joins at once.
"""

from __future__ import annotations

from typing import Any

from ._http import Request, Response
from .server import Server, WebSocketHandler, serve
from .websocket import ServerWebSocket

__all__ = ["PAGE", "DemoChat", "demo_fetch", "serve_demo"]

TOPIC = "chat"
MAX_NAME = 32

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>syncws chat</title>
<style>
  body { font: 16px system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
  #log { list-style: none; padding: .5rem; height: 20rem; overflow-y: auto;
         border: 1px solid #ccc; border-radius: 4px; }
  #log li.event { color: #777; font-style: italic; }
  form { display: flex; gap: .5rem; margin: .5rem 0; }
  input[type=text] { flex: 1; padding: .3rem; }
</style>
</head>
<body>
<h1>syncws chat</h1>
<p id="status">Pick a name and join.</p>
<form id="join">
  <input id="name" type="text" placeholder="Your name" maxlength="32" autocomplete="off">
  <button>Join</button>
</form>
<ul id="log"></ul>
<form id="chat">
  <input id="message" type="text" placeholder="Say something" autocomplete="off" disabled>
  <button id="send" disabled>Send</button>
</form>
<script>
"use strict";
const log = document.getElementById("log");
const status = document.getElementById("status");
const nameInput = document.getElementById("name");
const messageInput = document.getElementById("message");
const sendButton = document.getElementById("send");
let socket = null;

function add(text, event) {
  const item = document.createElement("li");
  item.textContent = text;  // text, never HTML
  if (event) item.className = "event";
  log.appendChild(item);
  log.scrollTop = log.scrollHeight;
}

function join(name) {
  if (socket) socket.close();
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("name", name);
  socket = new WebSocket(url);
  status.textContent = "Connecting as " + name + "...";
  socket.addEventListener("open", () => {
    status.textContent = "Connected as " + name + ".";
    messageInput.disabled = sendButton.disabled = false;
    messageInput.focus();
  });
  socket.addEventListener("message", (event) => add(event.data, false));
  socket.addEventListener("close", (event) => {
    status.textContent = "Disconnected (" + event.code + "). Join again?";
    messageInput.disabled = sendButton.disabled = true;
  });
}

document.getElementById("join").addEventListener("submit", (event) => {
  event.preventDefault();
  join(nameInput.value.trim() || "Anonymous");
});

document.getElementById("chat").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = messageInput.value;
  if (text && socket && socket.readyState === WebSocket.OPEN) {
    socket.send(text);
    messageInput.value = "";
  }
});

const given = new URLSearchParams(location.search).get("name");
if (given) { nameInput.value = given; join(given); }
</script>
</body>
</html>
"""


def _name(req: Request) -> str:
    name = " ".join(req.query.get("name", "").split())[:MAX_NAME]
    return name or "Anonymous"


def demo_fetch(req: Request, server: Server[str]) -> Response | None:
    """``/`` is the page, ``/ws?name=...`` the chat's WebSocket."""
    if req.path == "/ws":
        if server.upgrade(req, data=_name(req)):
            return None
        return Response("Expected a WebSocket request", status=400)
    if req.path == "/" and req.method in ("GET", "HEAD"):
        return Response(PAGE, headers={"Content-Type": "text/html;charset=utf-8",
                                       "Cache-Control": "no-store"})
    return Response("Not Found", status=404)


class DemoChat(WebSocketHandler[str]):
    """Joins, messages and leaves go to everyone on the "chat" topic.

    ``ws.publish`` with ``publish_to_self`` reaches every subscriber, the
    sender included; in ``close`` the socket is already unsubscribed, so
    "left" reaches the others.
    """

    max_payload_length = 4096
    publish_to_self = True

    def open(self, ws: ServerWebSocket[str]) -> None:
        ws.subscribe(TOPIC)
        ws.publish(TOPIC, f"{ws.data} joined")

    def message(self, ws: ServerWebSocket[str], message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        ws.publish(TOPIC, f"{ws.data}: {text}")

    def close(self, ws: ServerWebSocket[str], code: int, reason: str) -> None:
        ws.publish(TOPIC, f"{ws.data} left")


def serve_demo(hostname: str = "127.0.0.1", port: int = 3000, **kwargs: Any) -> Server[str]:
    """Start the chat demo; returns the running server (see ``serve``)."""
    return serve(fetch=demo_fetch, websocket=DemoChat(), hostname=hostname, port=port, **kwargs)

"""syncws: ``/echo`` echoes, ``/fanout`` subscribes on open and publishes to all (sender too)."""

from __future__ import annotations

import _common

import syncws

TOPIC = "fanout"


def fetch(req: syncws.Request, server: syncws.Server[str]) -> syncws.Response | None:
    if req.path in ("/echo", "/fanout") and server.upgrade(req, data=req.path):
        return None
    return syncws.Response("not found", status=404)


def on_open(ws: syncws.ServerWebSocket[str]) -> None:
    if ws.data == "/fanout":
        ws.subscribe(TOPIC)


def on_message(ws: syncws.ServerWebSocket[str], message: str | bytes) -> None:
    if ws.data == "/echo":
        ws.send(message)
    else:
        server.publish(TOPIC, message)


args = _common.parse_args(__doc__ or "")
server: syncws.Server[str] = syncws.serve(
    fetch=fetch,
    websocket={"open": on_open, "message": on_message},
    hostname=args.host,
    port=args.port,
)
_common.ready("syncws", args.host, server.port)
server.serve_forever()

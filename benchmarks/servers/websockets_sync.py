"""python-websockets' threaded server (``websockets.sync.server.serve``).

``/echo`` echoes; ``/fanout`` joins a set on open and sends each message to every
member (sender included) from the receiving thread: the sync API has no broadcast().
"""

from __future__ import annotations

import contextlib
import threading

import _common
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

clients: set[ServerConnection] = set()
clients_lock = threading.Lock()


def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else ""
    if path == "/echo":
        for message in ws:
            ws.send(message)
    elif path == "/fanout":
        with clients_lock:
            clients.add(ws)
        try:
            for message in ws:
                with clients_lock:
                    targets = list(clients)
                for client in targets:
                    with contextlib.suppress(ConnectionClosed):
                        client.send(message)
        finally:
            with clients_lock:
                clients.discard(ws)
    else:
        ws.close(1008, "unknown path")


args = _common.parse_args(__doc__ or "")
with serve(handler, args.host, args.port) as server:
    _common.ready("websockets-sync", args.host, args.port)
    server.serve_forever()

"""flask-sock on Flask's threaded development server (werkzeug, ``threaded=True``)."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import _common
from flask import Flask
from flask_sock import ConnectionClosed, Sock

app = Flask(__name__)
sock = Sock(app)
clients: set[Any] = set()
clients_lock = threading.Lock()


@sock.route("/echo")
def echo(ws: Any) -> None:
    while True:
        ws.send(ws.receive())


@sock.route("/fanout")
def fanout(ws: Any) -> None:
    with clients_lock:
        clients.add(ws)
    try:
        while True:
            message = ws.receive()
            with clients_lock:
                targets = list(clients)
            for client in targets:
                with contextlib.suppress(ConnectionClosed):
                    client.send(message)
    finally:
        with clients_lock:
            clients.discard(ws)


args = _common.parse_args(__doc__ or "")
logging.getLogger("werkzeug").setLevel(logging.ERROR)
_common.ready("flask-sock", args.host, args.port)
app.run(host=args.host, port=args.port, threaded=True)

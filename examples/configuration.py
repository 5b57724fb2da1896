"""Configuration: every WebSocket option, spelled out with its default.

    python examples/configuration.py        # then connect to ws://127.0.0.1:3000

Options live in the ``websocket`` mapping, beside the handlers, as in Bun.
This server echoes each message, compressed when the client negotiated
permessage-deflate; a message over ``max_payload_length`` closes with 1009.
"""

from __future__ import annotations

import sys

import syncws


def on_message(ws: syncws.ServerWebSocket[None], message: str | bytes) -> None:
    ws.send(message, compress=True)  # compressed only if the client agreed to deflate


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server: syncws.Server[None] = syncws.serve(
        websocket={
            "message": on_message,
            "idle_timeout": 120,  # seconds without a message before closing (0: never)
            "max_payload_length": 16 * 1024 * 1024,  # bytes per message; over it: 1009
            "backpressure_limit": 1024 * 1024,  # bytes queued before send() returns -1
            "close_on_backpressure_limit": False,  # True: close a socket over the limit
            "send_pings": True,  # ping quiet peers so live ones never time out
            "publish_to_self": False,  # ws.publish() skips the sender
            "per_message_deflate": True,  # default False; True negotiates RFC 7692
        },
        hostname="127.0.0.1",
        port=port,
        # Server options, beside fetch and websocket:
        workers=None,  # worker threads for fetch and handlers (None: min(32, cpus + 4))
        max_connections=None,  # None: bounded by the process's file limit
        max_request_body_size=128 * 1024 * 1024,  # HTTP bodies over it get 413
        request_timeout=10.0,  # seconds for an HTTP request to arrive whole
        reuse_port=False,  # SO_REUSEPORT, to run several processes on one port
    )
    print(f"Listening on ws://127.0.0.1:{server.port}", flush=True)
    server.serve_forever()

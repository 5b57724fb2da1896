"""Compression: negotiate permessage-deflate and compress chosen messages.

    python examples/per_message_deflate.py        # then connect to ws://127.0.0.1:3000

Send "big" to get a large, very compressible report sent compressed; any
other message comes back uncompressed. Compression is per message, as in
Bun: ``send(msg, compress=True)`` compresses only when the client agreed to
deflate, and sends the message plain otherwise.
"""

from __future__ import annotations

import sys

import syncws


def on_message(ws: syncws.ServerWebSocket[None], message: str | bytes) -> None:
    if message == "big":
        report = "\n".join(f"line {i}: all systems nominal" for i in range(2000))
        ws.send(report, compress=True)  # Compress this message
    else:
        ws.send(message)  # small: not worth compressing


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server: syncws.Server[None] = syncws.serve(
        websocket={"message": on_message, "per_message_deflate": True},
        hostname="127.0.0.1", port=port)
    print(f"Listening on ws://127.0.0.1:{server.port}", flush=True)
    server.serve_forever()

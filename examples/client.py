"""The docs' "Client-Side WebSocket" snippet, in Python.

    python examples/client.py [ws://localhost:3000]

Connects with an ``Authorization`` header, says "Hello" once open, prints
every message, and prints the close code and reason at the end. As a Bun
script does, the process stays alive until the connection closes: the
listeners run on the WebSocket's own background thread.
"""

from __future__ import annotations

import sys

import syncws


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "ws://localhost:3000"

    # Bun extension: custom headers
    socket = syncws.WebSocket(url, headers={"Authorization": "Bearer token"})

    socket.add_event_listener("open", lambda event: socket.send("Hello"))
    socket.add_event_listener("message", lambda event: print(event.data, flush=True))
    socket.add_event_listener("close", lambda event: print(event.code, event.reason, flush=True))
    socket.add_event_listener("error", lambda event: print(event.message, file=sys.stderr))


if __name__ == "__main__":
    main()

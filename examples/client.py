"""The docs' "Client-Side WebSocket" snippet, in Python.

    python examples/client.py [ws://localhost:3000]

Connects with an ``Authorization`` header, says "Hello" once open, prints
every message, and prints the close code and reason at the end. The
listeners run on the WebSocket's own background thread, which keeps the
process alive until the connection closes, as in a Bun script. The script
also waits for the close itself, so that Ctrl-C closes the connection
politely (the server sees 1000) instead of interrupting Python's exit.
"""

from __future__ import annotations

import sys
import threading

import syncws


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "ws://localhost:3000"

    # Bun extension: custom headers
    socket = syncws.WebSocket(url, headers={"Authorization": "Bearer token"})

    socket.add_event_listener("open", lambda event: socket.send("Hello"))
    socket.add_event_listener("message", lambda event: print(event.data, flush=True))
    socket.add_event_listener("close", lambda event: print(event.code, event.reason, flush=True))
    socket.add_event_listener("error", lambda event: print(event.message, file=sys.stderr))

    closed = threading.Event()
    socket.add_event_listener("close", lambda event: closed.set())
    try:
        closed.wait()
    except KeyboardInterrupt:
        # 1000: a bare close() would send no status (the server would see 1005).
        socket.close(1000)  # the "close" listeners still run once the server answers


if __name__ == "__main__":
    main()

"""The chat on several processes sharing one port, bridged by Redis.

One Python process runs Python code on one core at a time (the GIL). To use
more cores, start several server processes on the same port
(``reuse_port=True``: the kernel spreads new connections across them) and
let a ``syncws.RedisBridge`` carry every publish to the other processes::

    redis-server --port 6379 &
    pip install 'syncws[redis]'
    python examples/cluster.py --processes 4 --port 3000 --redis redis://127.0.0.1:6379/0

Then connect to ws://127.0.0.1:3000/?name=ada from several clients: each
lands on one of the processes (the join message says which), and every
message still reaches everyone (once a process has had its first chatter for
about 50 ms: that is how soon its bridge subscribes on Redis, and delivery is
at most once). Ctrl-C or SIGTERM stops all the processes.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
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
    """The chat example's handlers; ``server.publish`` reaches every process."""

    def __init__(self) -> None:
        self.server: syncws.Server[User] | None = None

    def open(self, ws: syncws.ServerWebSocket[User]) -> None:
        ws.subscribe("chat")
        self.publish(f"{ws.data['username']} joined (process {os.getpid()})")

    def message(self, ws: syncws.ServerWebSocket[User], message: str | bytes) -> None:
        self.publish(f"{ws.data['username']}: {message!s}")

    def close(self, ws: syncws.ServerWebSocket[User], code: int, reason: str) -> None:
        self.publish(f"{ws.data['username']} left")

    def publish(self, text: str) -> None:
        assert self.server is not None
        self.server.publish("chat", text)


def run_child(port: int, redis_url: str) -> None:
    """One server process: the chat on the shared port, with a Redis bridge."""
    chat = Chat()
    server = syncws.serve(fetch=fetch, websocket=chat, hostname="127.0.0.1", port=port,
                          reuse_port=True, bridge=syncws.RedisBridge(redis_url))
    chat.server = server
    print("ready", flush=True)
    server.serve_forever()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--port", type=int, default=3000, help="0 picks a free port")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.port, args.redis)
        return

    port = args.port or free_port()
    children = [subprocess.Popen([sys.executable, __file__, "--child", "--port", str(port),
                                  "--redis", args.redis], stdout=subprocess.PIPE, text=True)
                for _ in range(args.processes)]

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise SystemExit("a server process failed to start")
        print(f"Listening on ws://127.0.0.1:{port} ({len(children)} processes)", flush=True)
        for child in children:
            child.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait()
            if child.stdout is not None:
                child.stdout.close()


if __name__ == "__main__":
    main()

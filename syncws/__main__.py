"""``python3 -m syncws echo|demo``: the echo server for conformance suites, and the demo."""

from __future__ import annotations

import argparse
import logging
import sys

from .server import Server, serve
from .websocket import ServerWebSocket


def _echo(ws: ServerWebSocket[None], message: str | bytes) -> None:
    # A client that sends faster than it reads is read no further until its
    # echoes are out: no echo is ever dropped.
    if ws.send(message) == -1:
        ws.pause()


def _resume(ws: ServerWebSocket[None]) -> None:
    ws.resume()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m syncws",
                                     description="Run a syncws server.")
    parser.add_argument("mode", choices=["echo", "demo"],
                        help="echo: echo every message verbatim; demo: the browser chat demo")
    parser.add_argument("--hostname", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--no-deflate", action="store_true",
                        help="echo: do not negotiate permessage-deflate")
    parser.add_argument("--max-payload-length", type=int, default=None,
                        help="echo: the largest message in bytes (default 16 MiB)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.mode == "demo" and (args.no_deflate or args.max_payload_length is not None):
        # The chat has its own settings (4 KiB messages, no compression).
        parser.error("--no-deflate and --max-payload-length apply to echo only")
    if args.max_payload_length is None:
        args.max_payload_length = 16 * 1024 * 1024
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scheme = "http" if args.mode == "demo" else "ws"  # (the demo serves its page too)
    try:
        server = _start_demo(args) if args.mode == "demo" else _start_echo(args)
    except OSError as exc:  # the port in use, say: one line, not a traceback
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    print(f"Listening on {scheme}://{args.hostname}:{server.port}", flush=True)
    server.serve_forever()
    return 0


def _start_echo(args: argparse.Namespace) -> Server[None]:
    return serve(
        websocket={
            "message": _echo,
            "drain": _resume,
            "max_payload_length": args.max_payload_length,
            # Never drop an echo: the buffer may hold two maximal messages.
            "backpressure_limit": 2 * args.max_payload_length + 1024 * 1024,
            "per_message_deflate": not args.no_deflate,
        },
        hostname=args.hostname,
        port=args.port,
        workers=args.workers,
    )


def _start_demo(args: argparse.Namespace) -> Server[str]:
    from ._demo import serve_demo

    return serve_demo(args.hostname, args.port, workers=args.workers)


if __name__ == "__main__":
    sys.exit(main())

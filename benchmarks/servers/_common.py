"""Shared bits of the benchmark servers: the command line and the file limit."""

from __future__ import annotations

import argparse
import resource


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    raise_nofile()
    return args


def ready(name: str, host: str, port: int) -> None:
    print(f"{name} listening on ws://{host}:{port} (/echo, /fanout)", flush=True)

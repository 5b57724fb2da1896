"""Quick A/B: syncws vs python-websockets' sync server under the echo load.

    python benchmarks/ab.py [--pairs 3] [--duration 5] [--peer websockets-sync]

Runs syncws and the peer alternately (A, B, A, B, ...), each on a fresh
server process, and prints the medians and the median ratio syncws/peer.
"""

from __future__ import annotations

import argparse
import sys

import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--peer", default="websockets-sync", choices=sorted(run.SERVERS))
    parser.add_argument("--scenario", default="echo", choices=sorted(run.SCENARIOS))
    args = parser.parse_args(argv)
    return run.main(["--scenario", args.scenario, "--servers", f"syncws,{args.peer}",
                     "--pairs", str(args.pairs), "--duration", str(args.duration)])


if __name__ == "__main__":
    sys.exit(main())

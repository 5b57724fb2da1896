"""Echo round-trip latency: ``syncws.connect`` vs python-websockets' sync client.

    python benchmarks/client_latency.py [--messages 2000] [--rounds 3]

Starts ``python -m syncws echo`` in a subprocess (so the server does not share
the clients' GIL), then times sequential 64-byte text echoes with each client,
alternating rounds so drift on the machine hits both alike. Compression is
off for both. Prints p50/p99 in microseconds per client.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from websockets.sync.client import connect as websockets_connect

import syncws

PAYLOAD = "x" * 64
WARMUP = 200


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def time_echoes(send: Callable[[str], None], recv: Callable[[], object], n: int) -> list[float]:
    for _ in range(WARMUP):
        send(PAYLOAD)
        recv()
    samples = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        send(PAYLOAD)
        recv()
        samples.append(clock() - start)
    return samples


def run_syncws(url: str, n: int) -> list[float]:
    with syncws.connect(url) as ws:
        return time_echoes(ws.send, ws.recv, n)


def run_websockets(url: str, n: int) -> list[float]:
    with websockets_connect(url, compression=None) as ws:
        return time_echoes(ws.send, ws.recv, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "syncws", "echo", "--port", "0",
                               "--no-deflate"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        results: dict[str, list[float]] = {"syncws.connect": [], "websockets.sync": []}
        for round_ in range(args.rounds):
            for name, run in (("syncws.connect", run_syncws), ("websockets.sync", run_websockets)):
                samples = run(url, args.messages)
                results[name] += samples
                print(f"round {round_ + 1} {name:16} p50 {percentile(samples, 0.5) * 1e6:7.1f} us"
                      f"  p99 {percentile(samples, 0.99) * 1e6:7.1f} us", flush=True)
        print(f"\nall rounds ({args.rounds} x {args.messages} sequential 64-byte echoes)")
        for name, samples in results.items():
            print(f"{name:16} p50 {percentile(samples, 0.5) * 1e6:7.1f} us"
                  f"  p99 {percentile(samples, 0.99) * 1e6:7.1f} us"
                  f"  mean {statistics.fmean(samples) * 1e6:7.1f} us")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()

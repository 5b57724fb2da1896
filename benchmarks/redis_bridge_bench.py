"""Cross-process delivery through the Redis bridge: latency and deliveries per second.

    python benchmarks/redis_bridge_bench.py [--messages 2000] [--blast 50000] [--subscribers 1,4]

Starts a redis-server on a free port (Debian's ``redis-server``; or pass
``--redis URL``) and two server processes A and B, each with a
``RedisBridge``. Then:

- latency: a client on A sends a 64-byte text message that A publishes
  (``ws.publish``); a client subscribed on B receives it. One message in
  flight at a time; the same with the subscriber on A (local, no Redis) as
  the baseline. p50/p99 in microseconds.
- throughput: A publishes ``--blast`` 64-byte messages with
  ``server.publish`` in a tight loop; N clients subscribed on B count them.
  Deliveries per second = messages received by all clients / time from the
  first publish to the last delivery; also the bridge's dropped count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import syncws

PAYLOAD = "x" * 54
WARMUP = 200


def node_main(redis_url: str) -> None:
    """One server process: ?sub=t subscribes, ?pub=t publishes what it gets;
    the text ``!blast N`` publishes N messages with server.publish at once."""

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response | None:
        if req.path == "/stats":
            return syncws.Response.json(server.stats())
        return None if server.upgrade(req, data=dict(req.query)) else \
            syncws.Response("Expected WebSocket", status=400)

    def open_(ws: syncws.ServerWebSocket[dict[str, str]]) -> None:
        if ws.data.get("sub"):
            ws.subscribe(ws.data["sub"])
        ws.send("ready")

    def message(ws: syncws.ServerWebSocket[dict[str, str]], msg: str | bytes) -> None:
        topic = ws.data.get("pub", "bench")
        if isinstance(msg, str) and msg.startswith("!blast "):
            n = int(msg.split()[1])
            publish = server.publish
            for i in range(n):
                publish(topic, f"{i:08d}{PAYLOAD}")
            ws.send("blasted")
        else:
            ws.publish(topic, msg)

    server: syncws.Server[dict[str, str]] = syncws.serve(
        fetch, {"open": open_, "message": message, "backpressure_limit": 256 * 1024 * 1024,
                "idle_timeout": 0}, hostname="127.0.0.1", port=0, workers=4,
        bridge=syncws.RedisBridge(redis_url, max_pending=1_000_000))
    print(f"PORT {server.port}", flush=True)
    server.serve_forever()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: apt-get install redis-server, or --redis URL")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.02)
    client.close()
    return proc, f"redis://127.0.0.1:{port}/0"


def wait_numsub(redis_url: str, channel: str, count: int) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 10
    while int(client.pubsub_numsub(channel)[0][1]) != count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{channel} never got {count} Redis subscribers")
        time.sleep(0.01)
    client.close()


def connect(port: int, query: str) -> syncws.ClientWebSocket:
    client = syncws.connect(f"ws://127.0.0.1:{port}/?{query}", timeout=10)
    assert client.recv(timeout=10) == "ready"
    return client


def latency(pub_port: int, sub_port: int, topic: str, n: int, redis_url: str,
            numsub: int) -> list[float]:
    pub = connect(pub_port, f"pub={topic}")
    sub = connect(sub_port, f"sub={topic}")
    if numsub:
        wait_numsub(redis_url, "syncws:" + topic, numsub)
    samples = []
    for i in range(WARMUP + n):
        start = time.perf_counter()
        pub.send(PAYLOAD)
        sub.recv(timeout=10)
        if i >= WARMUP:
            samples.append((time.perf_counter() - start) * 1e6)
    pub.close()
    sub.close()
    return samples


def throughput(pub_port: int, sub_port: int, topic: str, n: int, subscribers: int,
               redis_url: str) -> tuple[float, float]:
    subs = [connect(sub_port, f"sub={topic}") for _ in range(subscribers)]
    wait_numsub(redis_url, "syncws:" + topic, 1)
    pub = connect(pub_port, f"pub={topic}")
    done: list[float] = []
    lost: list[int] = []

    def drain(client: syncws.ClientWebSocket) -> None:
        got = 0
        try:
            while got < n:
                client.recv(timeout=10)
                got += 1
        except TimeoutError:
            pass
        lost.append(n - got)
        done.append(time.perf_counter())

    threads = [threading.Thread(target=drain, args=(c,)) for c in subs]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    pub.send(f"!blast {n}")
    for thread in threads:
        thread.join()
    elapsed = max(done) - start
    for client in [*subs, pub]:
        client.close()
    delivered = n * subscribers - sum(lost)
    return delivered / elapsed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--blast", type=int, default=50_000)
    parser.add_argument("--subscribers", default="1,4")
    parser.add_argument("--redis", default=None)
    parser.add_argument("--node", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node:
        node_main(args.node)
        return

    redis_proc = None
    redis_url = args.redis
    if redis_url is None:
        redis_proc, redis_url = start_redis()
    nodes = [subprocess.Popen([sys.executable, __file__, "--node", redis_url],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        ports = []
        for node in nodes:
            assert node.stdout is not None
            ports.append(int(node.stdout.readline().split()[1]))
        a, b = ports
        print(f"cpus={os.cpu_count()} python={sys.version.split()[0]} payload=64 B text")
        for label, sub_port, numsub in (("local (A->A, no Redis hop)", a, 0),
                                        ("cross-process (A->Redis->B)", b, 1)):
            samples = latency(a, sub_port, f"lat{sub_port}", args.messages, redis_url, numsub)
            print(f"latency {label}: p50 {percentile(samples, 0.5):.0f} us, "
                  f"p99 {percentile(samples, 0.99):.0f} us, "
                  f"mean {statistics.fmean(samples):.0f} us ({len(samples)} messages)")
        for k in (int(x) for x in args.subscribers.split(",")):
            rate, elapsed = throughput(a, b, f"tp{k}", args.blast, k, redis_url)
            print(f"throughput A->Redis->B, {k} subscriber(s) on B: {rate:,.0f} deliveries/s "
                  f"({args.blast} messages in {elapsed:.2f} s)")
        for name, port in (("A", a), ("B", b)):
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := conn.recv(65536):
                raw += chunk
            conn.close()
            stats = json.loads(raw.split(b"\r\n\r\n", 1)[1])
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in stats.items()
                                         if k.startswith("bridge_")))
    finally:
        for node in nodes:
            node.terminate()
            node.wait()
            if node.stdout is not None:
                node.stdout.close()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()


if __name__ == "__main__":
    main()

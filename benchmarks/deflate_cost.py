"""What permessage-deflate costs: memory per connection and time per send.

    python benchmarks/deflate_cost.py [--connections 500] [--repeats 3]

1. Memory: a server subprocess (``syncws.serve``, echo with compress=True);
   N raw clients connect, each negotiates with the given parameters, then
   sends one compressed message and reads the compressed echo (zlib state is
   created lazily, on the first compressed message each way). The figure is
   (server VmRSS after - before) / N, median over ``--repeats`` runs, idle
   (after the handshakes) and after the one exchange.
2. Send cost: the calling thread's time per ``ws.send(msg, compress=...)``
   (median over batches), and the bytes on the wire, per message size.
3. Publish cost to 100 deflate subscribers: once-for-all (no server context
   takeover) against one compression per subscriber (context takeover).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import time
import zlib
from typing import Any

import syncws

TAIL = b"\x00\x00\xff\xff"

SERVER_CODE = """
import sys, json, syncws
cfg = json.loads(sys.argv[1])
server = syncws.serve(websocket={
    "message": lambda ws, m: ws.send(m, compress=True),
    "per_message_deflate": cfg, "idle_timeout": 0},
    hostname="127.0.0.1", port=0, workers=4)
print(server.port, flush=True)
server.serve_forever()
"""

READER_CODE = """
import socket, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
             b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\\r\\nSec-WebSocket-Version: 13\\r\\n"
             b"Sec-WebSocket-Extensions: permessage-deflate\\r\\n\\r\\n")
try:
    while sock.recv(1 << 20):
        pass
except OSError:
    pass
"""

# name: (server config, client offer, client window bits)
MEMORY_CASES: dict[str, tuple[object, str | None, int]] = {
    "no deflate": (False, None, 15),
    "deflate, no takeover, 15 bits (True)": (True, "permessage-deflate", 15),
    "deflate, no takeover, 9 bits": (
        {"server_no_context_takeover": True, "client_no_context_takeover": True,
         "server_max_window_bits": 9, "client_max_window_bits": 9},
        "permessage-deflate; client_max_window_bits", 9),
    "deflate, takeover, 15 bits": ({}, "permessage-deflate", 15),
    "deflate, takeover, 9 bits": (
        {"server_max_window_bits": 9, "client_max_window_bits": 9},
        "permessage-deflate; client_max_window_bits", 9),
    "deflate, takeover, 9 bits, mem_level 1": (
        {"server_max_window_bits": 9, "client_max_window_bits": 9, "mem_level": 1},
        "permessage-deflate; client_max_window_bits", 9),
}

def sample_text(size: int, seed: int = 1) -> bytes:
    """JSON chat-like records from a 2000-word made-up vocabulary (about 2.3:1 with zlib)."""
    x = seed * 2654435761 + 1

    def rand() -> int:
        nonlocal x
        x = (x * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        return x >> 33

    vocab = VOCAB
    out: list[str] = []
    n = 0
    while n < size:
        words = " ".join(vocab[rand() % len(vocab)] for _ in range(8))
        record = f'{{"user":"{vocab[rand() % len(vocab)]}","id":{rand() % 1000003},' \
                 f'"text":"{words}"}}'
        out.append(record)
        n += len(record)
    return "".join(out)[:size].encode()


def _vocab() -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    x = 7
    words = []
    for _ in range(2000):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        length = 2 + x % 8
        word = ""
        for _ in range(length):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            word += letters[(x >> 8) % 26]
        words.append(word)
    return words


VOCAB = _vocab()


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    assert match is not None
    return int(match.group(1))


def masked_frame(opcode: int, payload: bytes, rsv1: bool) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    if n < 126:
        header = bytes([first, 0x80 | n])
    elif n < 65536:
        header = bytes([first, 0x80 | 126]) + struct.pack("!H", n)
    else:
        header = bytes([first, 0x80 | 127]) + struct.pack("!Q", n)
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(
        (key * (n // 4 + 1))[:n], "big")).to_bytes(n, "big") if n else b""
    return header + key + masked


def recv_exact(sock: socket.socket, n: int, buf: bytearray) -> bytes:
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    data = bytes(buf[:n])
    del buf[:n]
    return data


def recv_frame(sock: socket.socket, buf: bytearray) -> tuple[int, bool, bytes]:
    b0, b1 = recv_exact(sock, 2, buf)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", recv_exact(sock, 2, buf))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(sock, 8, buf))[0]
    return b0 & 0x0F, bool(b0 & 0x40), recv_exact(sock, n, buf)


def open_client(port: int, offer: str | None) -> tuple[socket.socket, bytearray, bool]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else ""
    sock.sendall((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n")
                 .encode())
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("handshake failed")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock, bytearray(rest), b"permessage-deflate" in head.lower()


def memory_run(config: object, offer: str | None, bits: int, n: int) -> tuple[float, float]:
    import json
    proc = subprocess.Popen([sys.executable, "-c", SERVER_CODE, json.dumps(config)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        time.sleep(0.3)
        before = vm_kib(proc.pid, "VmRSS")
        clients = [open_client(port, offer) for _ in range(n)]
        time.sleep(0.5)
        idle = vm_kib(proc.pid, "VmRSS")
        message = sample_text(2000)
        for sock, _buf, negotiated in clients:
            if negotiated:
                c = zlib.compressobj(6, zlib.DEFLATED, -bits)
                payload = (c.compress(message) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
                sock.sendall(masked_frame(0x1, payload, True))
            else:
                sock.sendall(masked_frame(0x1, message, False))
        for sock, buf, _ in clients:
            _, rsv1, payload = recv_frame(sock, buf)
            got = zlib.decompressobj(-15).decompress(payload + TAIL) if rsv1 else payload
            assert got == message
        time.sleep(0.5)
        after = vm_kib(proc.pid, "VmRSS")
        for sock, _, _ in clients:
            sock.close()
        return (idle - before) / n, (after - before) / n
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def send_cost(sizes: list[int], batches: int, per_batch: int) -> None:
    print("\n## Send cost: calling thread's time per ws.send (median of batches)")
    print(f"{'size':>8} {'config':<24} {'us/send':>9} {'wire bytes':>11}")
    holder: list[Any] = []
    for name, cfg, compress in (
            ("plain", True, False),
            ("deflate no takeover", True, True),
            ("deflate takeover", {}, True),
            ("no takeover, level 1", {"server_no_context_takeover": True,
                                      "client_no_context_takeover": True,
                                      "compress_level": 1}, True)):
        server: syncws.Server[Any] = syncws.serve(
            websocket={"open": holder.append, "message": lambda ws, m: None,
                       "per_message_deflate": cfg, "backpressure_limit": 1 << 30},
            hostname="127.0.0.1", port=0, workers=2)
        holder.clear()
        # The reading client runs in its own process so it takes no GIL time here.
        reader = subprocess.Popen([sys.executable, "-c", READER_CODE, str(server.port)])
        while not holder:
            time.sleep(0.01)
        ws = holder[0]
        for size in sizes:
            # Distinct messages: repeating one would flatter context takeover.
            messages = [sample_text(size, seed).decode() for seed in range(per_batch)]
            timings = []
            start_bytes = server.stats()["bytes_out"]
            for _ in range(batches):
                t0 = time.perf_counter()
                for message in messages:
                    ws.send(message, compress)
                timings.append((time.perf_counter() - t0) / per_batch)
                while ws.buffered_amount:
                    time.sleep(0.001)
            time.sleep(0.05)
            wire = (server.stats()["bytes_out"] - start_bytes) / (batches * per_batch)
            print(f"{size:>8} {name:<24} {statistics.median(timings) * 1e6:>9.1f} "
                  f"{wire:>11.0f}")
        server.stop(close_active_connections=True)
        reader.wait(10)


def publish_cost(subscribers: int, repeats: int) -> None:
    print(f"\n## Publish cost to {subscribers} deflate subscribers (median)")
    for name, cfg in (("plain (compress=False)", True), ("no takeover: once for all", True),
                      ("takeover: once per subscriber", {})):
        server: syncws.Server[Any] = syncws.serve(websocket={"open": lambda ws: ws.subscribe("t"),
                                         "message": lambda ws, m: None,
                                         "per_message_deflate": cfg,
                                         "backpressure_limit": 1 << 30},
                              hostname="127.0.0.1", port=0, workers=4)
        clients = [open_client(server.port, "permessage-deflate") for _ in range(subscribers)]
        while server.subscriber_count("t") < subscribers:
            time.sleep(0.01)
        compress = not name.startswith("plain")
        message = sample_text(4096).decode()
        timings = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            server.publish("t", message, compress)
            timings.append(time.perf_counter() - t0)
            for sock, buf, _ in clients:
                recv_frame(sock, buf)
        print(f"  4 KiB text, {name:<32} {statistics.median(timings) * 1e6:>9.0f} us")
        for sock, _, _ in clients:
            sock.close()
        server.stop(close_active_connections=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    print(f"## Memory per connection, server VmRSS, N={args.connections}, "
          f"median of {args.repeats} runs")
    print(f"{'case':<42} {'idle KiB/conn':>14} {'after 1 msg each way':>21}")
    for name, (config, offer, bits) in MEMORY_CASES.items():
        if args.skip_memory:
            break
        runs = [memory_run(config, offer, bits, args.connections) for _ in range(args.repeats)]
        idle = statistics.median(r[0] for r in runs)
        used = statistics.median(r[1] for r in runs)
        print(f"{name:<42} {idle:>14.1f} {used:>21.1f}")
    send_cost([64, 1024, 16 * 1024, 256 * 1024], batches=15, per_batch=40)
    publish_cost(100, 30)


if __name__ == "__main__":
    main()

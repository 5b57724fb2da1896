"""Shared test helpers: servers on 127.0.0.1:0 and a raw-socket WebSocket peer.

Waits scale with SYNCWS_TEST_TIMEOUT_FACTOR so a slow machine can stretch them.
"""

from __future__ import annotations

import base64
import gc
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import syncws

FACTOR = float(os.environ.get("SYNCWS_TEST_TIMEOUT_FACTOR", "1"))


def wait(seconds: float) -> float:
    """A timeout, stretched by SYNCWS_TEST_TIMEOUT_FACTOR."""
    return seconds * FACTOR


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0,
              message: str = "condition") -> None:
    """Poll ``predicate`` on an Event's clock until it holds or ``timeout`` passes."""
    event = threading.Event()
    deadline = wait(timeout)
    step = 0.005
    waited = 0.0
    while not predicate():
        if waited >= deadline:
            raise AssertionError(f"timed out waiting for {message}")
        event.wait(step)
        waited += step
        step = min(step * 2, 0.05)


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Turn off the cyclic garbage collector: what a test frees, refcounting freed."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
def make_server() -> Iterator[Callable[..., syncws.Server[Any]]]:
    """Start servers on 127.0.0.1:0; every one is stopped after the test."""
    servers: list[syncws.Server[Any]] = []

    def start(fetch: Any = None, websocket: Any = None, **kwargs: Any) -> syncws.Server[Any]:
        kwargs.setdefault("hostname", "127.0.0.1")
        kwargs.setdefault("port", 0)
        kwargs.setdefault("workers", 4)
        server = syncws.serve(fetch, websocket, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(close_active_connections=True, timeout=wait(5))


# -- a raw WebSocket peer, built by hand from RFC 6455 ---------------------------

KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake_request(path: str = "/", extra: str = "", key: str = KEY,
                      host: str = "127.0.0.1") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
                 mask: bool = True, key: bytes = b"\x11\x22\x33\x44") -> bytes:
    """A client frame, masked by default (hand-built, independent of syncws)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = bytes([first, mask_bit | length])
    elif length < 65536:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", length)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return header + payload
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if length < 4096 else \
        (int.from_bytes(payload, "big") ^ int.from_bytes((key * (length // 4 + 1))[:length],
                                                         "big")).to_bytes(length, "big")
    return header + key + masked


def close_body(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class RawClient:
    """A WebSocket client on a plain socket, reading and writing raw frames."""

    def __init__(self, port: int, path: str = "/", extra: str = "",
                 rcvbuf: int | None = None, timeout: float = 5.0) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(wait(timeout))
        self.sock.connect(("127.0.0.1", port))
        self.buffer = b""
        self.sock.sendall(handshake_request(path, extra))
        self.response_head = self._read_until(b"\r\n\r\n")
        self.status = int(self.response_head.split(b" ", 2)[1])

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def _read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def header(self, name: str) -> str | None:
        for line in self.response_head.split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes, **kwargs: Any) -> None:
        self.sock.sendall(client_frame(opcode, payload, **kwargs))

    def recv_frame(self) -> tuple[int, bool, int, bytes]:
        """(opcode, fin, rsv bits, payload) of the next server frame."""
        b0, b1 = self._read_exact(2)
        assert not b1 & 0x80, "server frames must not be masked"
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read_exact(8))[0]
        return b0 & 0x0F, bool(b0 & 0x80), (b0 >> 4) & 0x7, self._read_exact(length)

    def recv_close(self) -> tuple[int | None, bytes]:
        """Read frames until a close frame; its (code, reason)."""
        while True:
            opcode, _, _, payload = self.recv_frame()
            if opcode == 0x8:
                if len(payload) >= 2:
                    return struct.unpack("!H", payload[:2])[0], payload[2:]
                return None, b""

    def at_eof(self) -> bool:
        """Whether the server closed the TCP connection (after any buffered frames)."""
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

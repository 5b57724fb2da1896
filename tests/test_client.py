"""The client: ``syncws.connect`` and ``syncws.WebSocket``.

Every behaviour is checked against a real peer: syncws' own server
(``make_server``), python-websockets' server (an independent implementation)
or, where the wire itself must be inspected, a hand-written raw server.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import selectors
import signal
import socket
import ssl
import struct
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme
from conftest import wait, wait_for
from websockets.exceptions import ConnectionClosed as PeerClosed
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as websockets_serve

import syncws
from syncws._client_handshake import parse_url

Echo = {"message": lambda ws, msg: ws.send(msg)}


@pytest.fixture(autouse=True)
def roomy_hold_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listeners added one after another must not depend on 50 ms of luck.

    The event client holds back events for ``HOLD_BACK`` (0.05 s) while
    listeners are being added; on a loaded 2-core CI machine the test thread
    can be off the CPU that long between two ``add_event_listener`` calls,
    and the order tests would then see what a script paused mid-setup sees.
    """
    monkeypatch.setattr("syncws.event_client.HOLD_BACK", 0.5)


# -- python-websockets' server as an independent peer -----------------------------

@pytest.fixture
def ws_peer() -> Iterator[Callable[..., int]]:
    """Start python-websockets servers on 127.0.0.1:0 in threads; returns their port."""
    servers: list[tuple[Any, threading.Thread]] = []

    def start(handler: Callable[[ServerConnection], None], **kwargs: Any) -> int:
        server = websockets_serve(handler, "127.0.0.1", 0, **kwargs)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        port: int = server.socket.getsockname()[1]
        return port

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(wait(5))


def peer_echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


# -- a raw server, to look at the client's bytes on the wire ----------------------

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawServer:
    """Accept one connection and run ``script(sock, request_headers)`` on it in a thread."""

    def __init__(self, script: Callable[[socket.socket, dict[str, str]], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.error: BaseException | None = None
        self.script = script
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.listener.settimeout(wait(10))
            sock, _ = self.listener.accept()
            sock.settimeout(wait(10))
            with sock:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                headers = {}
                for line in head.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                self.script(sock, headers)
        except BaseException as exc:
            self.error = exc
        finally:
            self.listener.close()

    def join(self) -> None:
        self.thread.join(wait(10))
        assert not self.thread.is_alive(), "raw server script did not finish"
        if self.error is not None:
            raise self.error


class ServerCloses:
    """A server ``close`` handler: the ``(code, reason)`` pairs it got, and ``done``."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []
        self.done = threading.Event()

    def __call__(self, ws: Any, code: int, reason: str) -> None:
        self.seen.append((code, reason))
        self.done.set()


def accept_value(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def send_101(sock: socket.socket, headers: dict[str, str], extra: str = "",
             accept: str | None = None) -> None:
    accept = accept if accept is not None else accept_value(headers["sec-websocket-key"])
    sock.sendall((f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n")
                 .encode("latin-1"))


def read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_client_frame(sock: socket.socket) -> tuple[int, bool, bytes, bytes]:
    """(opcode, masked, masking key, unmasked payload) of the client's next frame."""
    first, masked, key, payload = read_client_frame_bits(sock)
    return first & 0x0F, masked, key, payload


def read_client_frame_bits(sock: socket.socket) -> tuple[int, bool, bytes, bytes]:
    """As read_client_frame, with the whole first byte (FIN, RSV bits, opcode)."""
    b0, b1 = read_exact(sock, 2)
    length = b1 & 0x7F
    if length == 126:
        length = struct.unpack("!H", read_exact(sock, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", read_exact(sock, 8))[0]
    masked = bool(b1 & 0x80)
    key = read_exact(sock, 4) if masked else b""
    payload = read_exact(sock, length)
    if masked:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return b0, masked, key, payload


def server_frame(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x80 | opcode, len(payload)]) + payload


# -- URLs ----------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "secure", "host", "port", "resource", "host_header"), [
    ("ws://example.com", False, "example.com", 80, "/", "example.com"),
    ("ws://example.com:8080/chat?room=1&x=2", False, "example.com", 8080, "/chat?room=1&x=2",
     "example.com:8080"),
    ("wss://example.com/a/b", True, "example.com", 443, "/a/b", "example.com"),
    ("WSS://Example.COM:443?q", True, "example.com", 443, "/?q", "example.com"),
    ("ws://[::1]:3000/", False, "::1", 3000, "/", "[::1]:3000"),
    ("wss://[2001:db8::1]/p", True, "2001:db8::1", 443, "/p", "[2001:db8::1]"),
    # Percent-encoded as UTF-8 (WHATWG); a lone surrogate, which UTF-8 cannot carry, as U+FFFD.
    ("ws://h/caf\u00e9?x=\u00e9%41\"", False, "h", 80, "/caf%C3%A9?x=%C3%A9%41%22", "h"),
    ("ws://h/x\ud800?q=\udc80", False, "h", 80, "/x%EF%BF%BD?q=%EF%BF%BD", "h"),
])
def test_url_forms(url: str, secure: bool, host: str, port: int, resource: str,
                   host_header: str) -> None:
    target = parse_url(url)
    assert (target.secure, target.host, target.port, target.resource, target.host_header) == \
        (secure, host, port, resource, host_header)


def test_http_urls_stand_for_ws_as_in_bun(make_server: Any) -> None:
    assert parse_url("HTTPS://example.com/a?b").url == "wss://example.com/a?b"
    assert parse_url("http://example.com:8080/").url == "ws://example.com:8080/"
    server = make_server(websocket=Echo)
    assert server.url.startswith("http://")
    with syncws.connect(server.url) as ws:  # as new WebSocket(server.url) in Bun
        ws.send("via http://")
        assert ws.recv(timeout=wait(5)) == "via http://"
    event_style = syncws.WebSocket(server.url)
    assert event_style.url.startswith("ws://127.0.0.1:")
    event_style.close()


@pytest.mark.parametrize("url", [
    "ftp://example.com/", "example.com", "http://", "file:///tmp/x",
    "ws://", "ws:///path", "ws://example.com/#frag", "ws://example.com:99999/",
    "ws://example.com:abc/", "ws://[::1/", "ws://[not-ipv6]/", "ws://[127.0.0.1]:80/", "ws://user:pw@example.com/",
    "ws://exa mple.com/", "",
])
def test_bad_urls_raise_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="url"):
        syncws.connect(url)
    with pytest.raises(ValueError, match="url"):
        syncws.WebSocket(url)


def test_bad_arguments_fail_at_once() -> None:
    url = "ws://127.0.0.1:9/"
    with pytest.raises(ValueError, match="headers"):
        syncws.connect(url, headers={"X-Evil": "a\r\nb"})
    with pytest.raises(ValueError, match="headers"):
        syncws.connect(url, headers={"Sec-WebSocket-Key": "x"})
    with pytest.raises(ValueError, match="subprotocols"):
        syncws.connect(url, subprotocols=["a b"])
    with pytest.raises(ValueError, match="max_payload_length"):
        syncws.connect(url, max_payload_length=0)
    with pytest.raises(TypeError, match="per_message_deflate"):
        syncws.connect(url, per_message_deflate="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ssl"):
        syncws.connect(url, ssl=ssl.create_default_context())
    with pytest.raises(ValueError, match="protocols"):
        syncws.WebSocket(url, protocols=["x", "x"])


# -- connect() against syncws' server ----------------------------------------------

def test_echo_text_and_binary_syncws(make_server: Any) -> None:
    server = make_server(websocket=Echo)
    with syncws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        assert ws.ready_state is syncws.ReadyState.OPEN
        ws.send("héllo")
        assert ws.recv(timeout=wait(5)) == "héllo"
        ws.send(b"\x00\xff" * 40000)
        assert ws.recv(timeout=wait(5)) == b"\x00\xff" * 40000
        ws.send("")
        assert ws.recv(timeout=wait(5)) == ""
        with pytest.raises(TypeError):
            ws.send(123)  # type: ignore[arg-type]
    assert ws.ready_state is syncws.ReadyState.CLOSED
    assert (ws.close_code, ws.close_reason) == (1000, "")


def test_iteration_ends_quietly_on_normal_close(make_server: Any) -> None:
    def on_open(ws: Any) -> None:
        for word in ("a", "b", "c"):
            ws.send(word)
        ws.close()

    server = make_server(websocket={"open": on_open, "message": lambda ws, m: None})
    with syncws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        assert list(ws) == ["a", "b", "c"]
        assert ws.close_code == 1000
        with pytest.raises(syncws.ConnectionClosed) as info:
            ws.recv(timeout=wait(5))
        assert info.value.code == 1000


def test_iteration_raises_on_a_close_without_status(make_server: Any) -> None:
    """Only 1000 and 1001 end iteration quietly: an empty close frame (1005) raises."""
    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        sock.sendall(server_frame(0x1, b"a") + server_frame(0x8, b""))
        opcode, _, _, payload = read_client_frame(sock)
        assert (opcode, payload) == (0x8, b"")  # the answer carries no status either

    raw = RawServer(script)
    with syncws.connect(f"ws://127.0.0.1:{raw.port}/") as ws:
        received = []
        with pytest.raises(syncws.ConnectionClosed) as info:
            for message in ws:
                received.append(message)
        assert received == ["a"]
        assert info.value.code == 1005
    raw.join()


def test_server_close_4001_raises_connection_closed(make_server: Any) -> None:
    def on_open(ws: Any) -> None:
        ws.send("last words")
        ws.close(4001, "go away")

    server = make_server(websocket={"open": on_open, "message": lambda ws, m: None})
    ws = syncws.connect(f"ws://127.0.0.1:{server.port}/")
    received = []
    with pytest.raises(syncws.ConnectionClosed) as info:
        for message in ws:
            received.append(message)
    assert received == ["last words"]
    assert (info.value.code, info.value.reason) == (4001, "go away")
    assert (ws.close_code, ws.close_reason) == (4001, "go away")
    with pytest.raises(syncws.ConnectionClosed):
        ws.send("too late")
    ws.close()  # a no-op once closed


def test_client_close_code_and_reason_reach_server(make_server: Any) -> None:
    closes = ServerCloses()
    server = make_server(websocket={"message": lambda ws, m: None, "close": closes})
    ws = syncws.connect(f"ws://127.0.0.1:{server.port}/")
    ws.close(4000, "bye")
    assert closes.done.wait(wait(5))
    assert closes.seen == [(4000, "bye")]
    assert (ws.close_code, ws.close_reason) == (4000, "bye")
    with pytest.raises(syncws.ConnectionClosed) as info:
        ws.recv(timeout=wait(5))
    assert info.value.code == 4000
    with pytest.raises(ValueError):
        ws.close(1005)


def test_close_arguments_are_checked(make_server: Any) -> None:
    server = make_server(websocket=Echo)
    with syncws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        with pytest.raises(ValueError, match="1006"):
            ws.close(1006)
        with pytest.raises(ValueError, match="123"):
            ws.close(1000, "x" * 124)
        ws.send("still open")
        assert ws.recv(timeout=wait(5)) == "still open"


def test_headers_and_subprotocol_reach_syncws_server(make_server: Any) -> None:
    seen: dict[str, Any] = {}

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        seen["authorization"] = req.headers.get("authorization")
        seen["x-many"] = req.headers.get_all("x-many")
        seen["offered"] = req.headers.get("sec-websocket-protocol")
        seen["path"], seen["query"] = req.path, req.query
        server.upgrade(req, headers={"Sec-WebSocket-Protocol": "chat", "X-Reply": "yes"})

    server = make_server(fetch, Echo)
    url = f"ws://127.0.0.1:{server.port}/room?name=ann"
    with syncws.connect(url, headers=[("Authorization", "Bearer token"), ("X-Many", "1"),
                                      ("X-Many", "2")],
                        subprotocols=["superchat", "chat"]) as ws:
        assert ws.protocol == "chat"
        assert ws.response_headers["x-reply"] == "yes"
    assert seen == {"authorization": "Bearer token", "x-many": ["1", "2"],
                    "offered": "superchat, chat", "path": "/room", "query": {"name": "ann"}}


def test_non_ascii_urls_are_percent_encoded_by_both_clients(make_server: Any) -> None:
    targets: list[str] = []

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        targets.append(req.target)
        server.upgrade(req)

    server = make_server(fetch, Echo)
    url = f"ws://127.0.0.1:{server.port}/ws/caf\u00e9?room=caf\u00e9\u2615&q=\"x\"&done=%41"
    with syncws.connect(url) as ws:  # not a UnicodeEncodeError
        ws.send("hi")
        assert ws.recv(timeout=wait(5)) == "hi"
    event_ws = syncws.WebSocket(url)
    recorder = Recorder(event_ws, on_open=lambda event: event_ws.close())
    assert recorder.closed.wait(wait(5))
    assert recorder.events[0] == ("open",)
    # As browsers and Bun send it (WHATWG URL); an escape already there stays as it is.
    expected = "/ws/caf%C3%A9?room=caf%C3%A9%E2%98%95&q=%22x%22&done=%41"
    assert targets == [expected, expected]


def test_refused_handshake_raises_handshake_error(make_server: Any) -> None:
    server = make_server(lambda req, srv: syncws.Response("Forbidden here", status=403),
                         Echo)
    with pytest.raises(syncws.HandshakeError) as info:
        syncws.connect(f"ws://127.0.0.1:{server.port}/")
    assert info.value.status == 403
    assert info.value.body == b"Forbidden here"
    assert isinstance(info.value, ValueError)


def test_payload_too_big(make_server: Any) -> None:
    closed: list[int] = []
    done = threading.Event()

    def on_open(ws: Any) -> None:
        ws.send(b"y" * 1000)  # exactly the limit: delivered
        ws.send(b"x" * 1001)

    def on_close(ws: Any, code: int, reason: str) -> None:
        closed.append(code)
        done.set()

    server = make_server(websocket={"open": on_open, "message": lambda ws, m: None,
                                    "close": on_close})
    ws = syncws.connect(f"ws://127.0.0.1:{server.port}/", max_payload_length=1000)
    assert ws.recv(timeout=wait(5)) == b"y" * 1000
    with pytest.raises(syncws.PayloadTooBig):
        ws.recv(timeout=wait(5))
    with pytest.raises(syncws.ConnectionClosed) as info:
        ws.recv(timeout=wait(5))
    assert info.value.code == 1009
    assert done.wait(wait(5))
    assert closed == [1009]


def test_fragmented_text_over_limit_is_refused(ws_peer: Any) -> None:
    def handler(ws: ServerConnection) -> None:
        ws.send(iter(["é" * 300, "é" * 300]))  # 1200 UTF-8 bytes in two frames
        ws.recv()

    port = ws_peer(handler, compression=None)
    ws = syncws.connect(f"ws://127.0.0.1:{port}/", max_payload_length=1100)
    with pytest.raises(syncws.PayloadTooBig):
        ws.recv(timeout=wait(5))
    with pytest.raises(syncws.ConnectionClosed) as info:
        ws.recv(timeout=wait(5))
    assert info.value.code == 1009


def test_frame_announcing_too_much_fails_at_its_header() -> None:
    """The header's length is enough: the client does not wait for a payload over the limit."""
    seen: list[Any] = []

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        # A binary frame announcing 2000 bytes, then 10 of them and nothing more.
        sock.sendall(bytes([0x82, 126]) + struct.pack("!H", 2000) + b"x" * 10)
        seen.append(read_client_frame(sock))

    raw = RawServer(script)
    ws = syncws.connect(f"ws://127.0.0.1:{raw.port}/", max_payload_length=1000)
    with pytest.raises(syncws.PayloadTooBig):
        ws.recv(timeout=wait(5))
    with pytest.raises(syncws.ConnectionClosed) as info:
        ws.recv(timeout=wait(5))
    raw.join()
    assert info.value.code == 1009
    assert seen[0][0] == 0x8 and seen[0][3][:2] == struct.pack("!H", 1009)


def test_recv_timeout(make_server: Any) -> None:
    server = make_server(websocket=Echo)
    with syncws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.05)
        with pytest.raises(ValueError, match="timeout"):
            ws.recv(timeout="1")  # type: ignore[arg-type]
        ws.send("after")
        assert ws.recv(timeout=wait(5)) == "after"


def test_connection_refused_raises_oserror() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, never listening: connect is refused
        with pytest.raises(ConnectionRefusedError):
            syncws.connect(f"ws://127.0.0.1:{holder.getsockname()[1]}/", timeout=wait(5))


def test_concurrent_senders_and_a_receiver(make_server: Any) -> None:
    server = make_server(websocket=Echo)
    threads_n, per_thread = 4, 150
    with syncws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        received: list[str | bytes] = []
        reader = threading.Thread(
            target=lambda: received.extend(ws.recv(timeout=wait(10))
                                           for _ in range(threads_n * per_thread)))
        reader.start()

        def sender(n: int) -> None:
            for i in range(per_thread):
                ws.send(f"{n}:{i}:" + "z" * (i * 37 % 3000))

        senders = [threading.Thread(target=sender, args=(n,)) for n in range(threads_n)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(wait(20))
        reader.join(wait(20))
    assert len(received) == threads_n * per_thread
    for n in range(threads_n):
        mine = [str(m).split(":")[1] for m in received if str(m).startswith(f"{n}:")]
        assert mine == [str(i) for i in range(per_thread)]  # each sender's order kept


def test_inbox_is_bounded_and_reading_resumes(make_server: Any) -> None:
    """A client that does not recv stops reading: the data backs up on the server."""
    chunk = b"q" * (256 * 1024)
    count = 128  # 32 MiB: far more than the kernel buffers and the inbox together
    opened = threading.Event()
    holder: list[Any] = []

    def on_open(ws: Any) -> None:
        holder.append(ws)
        for _ in range(count):
            ws.send(chunk)
        opened.set()

    server = make_server(websocket={"open": on_open, "message": lambda ws, m: None,
                                    "backpressure_limit": 64 * 1024 * 1024,
                                    "idle_timeout": 0})
    with syncws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        assert opened.wait(wait(10))
        server_ws = holder[0]
        # Nothing is received, so the client must leave most of it on the server.
        wait_for(lambda: server_ws.buffered_amount > 8 * 1024 * 1024, 5,
                 "data to back up on the server")
        inbox_bytes = ws._inbox._bytes
        assert inbox_bytes <= 1024 * 1024 + 65536
        for _ in range(count):
            assert ws.recv(timeout=wait(10)) == chunk
        wait_for(lambda: server_ws.buffered_amount == 0, 5, "the server buffer to drain")


def test_client_ping_is_answered(make_server: Any, ws_peer: Any) -> None:
    server = make_server(websocket=Echo)
    for port in (server.port, ws_peer(peer_echo)):
        with syncws.connect(f"ws://127.0.0.1:{port}/") as ws:
            first, second = ws.ping(b"one"), ws.ping("two")
            assert second.wait(wait(5))
            assert first.wait(wait(5))
            with pytest.raises(ValueError):
                ws.ping(b"x" * 126)


# -- connect() against python-websockets' server ------------------------------------

def test_echo_and_iteration_with_python_websockets(ws_peer: Any) -> None:
    port = ws_peer(peer_echo)
    with syncws.connect(f"ws://127.0.0.1:{port}/") as ws:
        for message in ("text", b"\x01\x02binary", "é" * 70000, b""):
            ws.send(message)
            assert ws.recv(timeout=wait(5)) == message
    assert ws.close_code == 1000

    def speak_then_close(ws: ServerConnection) -> None:
        ws.send("one")
        ws.send(b"two")
        ws.send(iter(["thr", "ee"]))  # a fragmented message
        ws.close(1001, "going")

    port = ws_peer(speak_then_close)
    with syncws.connect(f"ws://127.0.0.1:{port}/") as ws:
        assert list(ws) == ["one", b"two", "three"]
        assert (ws.close_code, ws.close_reason) == (1001, "going")


def test_close_codes_both_ways_with_python_websockets(ws_peer: Any) -> None:
    port = ws_peer(lambda ws: ws.close(4001, "not you"))
    ws = syncws.connect(f"ws://127.0.0.1:{port}/")
    with pytest.raises(syncws.ConnectionClosed) as info:
        ws.recv(timeout=wait(5))
    assert (info.value.code, info.value.reason) == (4001, "not you")

    seen: dict[str, Any] = {}
    done = threading.Event()

    def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(PeerClosed):
            for _ in ws:
                pass
        seen["code"], seen["reason"] = ws.close_code, ws.close_reason
        done.set()

    port = ws_peer(handler)
    ws = syncws.connect(f"ws://127.0.0.1:{port}/")
    ws.close(4000, "bye")
    assert done.wait(wait(5))
    assert seen == {"code": 4000, "reason": "bye"}


def test_headers_and_subprotocol_reach_python_websockets(ws_peer: Any) -> None:
    seen: dict[str, Any] = {}

    def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen["authorization"] = ws.request.headers.get("Authorization")
        seen["path"] = ws.request.path
        seen["subprotocol"] = ws.subprotocol
        ws.send("ok")
        ws.recv()

    port = ws_peer(handler, subprotocols=["chat"])
    with syncws.connect(f"ws://127.0.0.1:{port}/p?q=1",
                        headers={"Authorization": "Bearer token"},
                        subprotocols=["superchat", "chat"]) as ws:
        assert ws.recv(timeout=wait(5)) == "ok"
        assert ws.protocol == "chat"
    assert seen == {"authorization": "Bearer token", "path": "/p?q=1", "subprotocol": "chat"}


def test_handshake_error_from_python_websockets(ws_peer: Any) -> None:
    def process_request(connection: ServerConnection, request: Any) -> Any:
        return connection.respond(403, "no entry\n")

    port = ws_peer(peer_echo, process_request=process_request)
    with pytest.raises(syncws.HandshakeError) as info:
        syncws.connect(f"ws://127.0.0.1:{port}/")
    assert info.value.status == 403
    assert info.value.body == b"no entry\n"


def test_deflate_negotiated_with_python_websockets(ws_peer: Any) -> None:
    seen: list[Any] = []

    def handler(ws: ServerConnection) -> None:
        seen.append([type(e).__name__ for e in ws.protocol.extensions])
        peer_echo(ws)

    port = ws_peer(handler)  # compression="deflate" is its default
    text = "compress me please " * 5000
    with syncws.connect(f"ws://127.0.0.1:{port}/", per_message_deflate=True) as ws:
        assert ws.extensions.startswith("permessage-deflate")
        for _ in range(3):  # context takeover: later messages reuse the window
            ws.send(text)
            assert ws.recv(timeout=wait(5)) == text
            ws.send(text.encode())
            assert ws.recv(timeout=wait(5)) == text.encode()
    assert seen == [["PerMessageDeflate"]]

    # Not asked for: not offered.
    seen.clear()
    with syncws.connect(f"ws://127.0.0.1:{port}/") as ws:
        assert ws.extensions == ""
        ws.send("plain")
        assert ws.recv(timeout=wait(5)) == "plain"
    assert seen == [[]]


def test_deflate_with_syncws_server(make_server: Any) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m, compress=True),
                                    "per_message_deflate": True})
    text = "squeeze " * 4000
    with syncws.connect(f"ws://127.0.0.1:{server.port}/", per_message_deflate=True) as ws:
        assert ws.extensions.startswith("permessage-deflate")
        for message in (text, text.encode(), "short", b""):
            ws.send(message)
            assert ws.recv(timeout=wait(5)) == message


def test_server_pings_are_answered(ws_peer: Any) -> None:
    result: list[bool] = []

    def handler(ws: ServerConnection) -> None:
        result.append(ws.ping(b"are you there").wait(wait(5)))
        ws.send("done")
        ws.recv()

    port = ws_peer(handler)
    with syncws.connect(f"ws://127.0.0.1:{port}/") as ws:
        assert ws.recv(timeout=wait(5)) == "done"
    assert result == [True]


# -- the bytes on the wire (raw server) --------------------------------------------

def test_frames_are_masked_with_fresh_keys_and_close_is_echoed() -> None:
    seen: dict[str, Any] = {}

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        seen["headers"] = headers
        send_101(sock, headers)
        frames = [read_client_frame(sock) for _ in range(3)]
        seen["frames"] = frames
        sock.sendall(server_frame(0x9, b"pp"))  # ping
        seen["pong"] = read_client_frame(sock)
        sock.sendall(server_frame(0x8, struct.pack("!H", 4003) + b"raw bye"))
        seen["echo"] = read_client_frame(sock)

    raw = RawServer(script)
    ws = syncws.connect(f"ws://127.0.0.1:{raw.port}/w")
    for _ in range(3):
        ws.send("same payload")
    with pytest.raises(syncws.ConnectionClosed) as info:
        ws.recv(timeout=wait(5))
    raw.join()
    assert (info.value.code, info.value.reason) == (4003, "raw bye")
    headers = seen["headers"]
    assert headers["upgrade"] == "websocket" and headers["sec-websocket-version"] == "13"
    assert len(base64.b64decode(headers["sec-websocket-key"])) == 16
    assert headers["host"] == f"127.0.0.1:{raw.port}"
    frames = seen["frames"]
    assert all(opcode == 0x1 and masked and payload == b"same payload"
               for opcode, masked, _, payload in frames)
    assert len({key for _, _, key, _ in frames}) == 3
    assert seen["pong"][0] == 0xA and seen["pong"][1] and seen["pong"][3] == b"pp"
    opcode, masked, _, payload = seen["echo"]
    assert opcode == 0x8 and masked and payload[:2] == struct.pack("!H", 4003)


@pytest.mark.parametrize(("reply", "problem"), [
    ("wrong-accept", "Sec-WebSocket-Accept"),
    ("unoffered-protocol", "subprotocol"),
    ("unoffered-extension", "extension"),
    ("no-upgrade", "Upgrade"),
])
def test_bad_101_is_refused(reply: str, problem: str) -> None:
    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        if reply == "wrong-accept":
            send_101(sock, headers, accept=accept_value("x" * 24))
        elif reply == "unoffered-protocol":
            send_101(sock, headers, "Sec-WebSocket-Protocol: other\r\n")
        elif reply == "unoffered-extension":
            send_101(sock, headers, "Sec-WebSocket-Extensions: permessage-deflate\r\n")
        else:
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: "
                         + accept_value(headers["sec-websocket-key"]).encode() + b"\r\n\r\n")

    raw = RawServer(script)
    with pytest.raises(syncws.HandshakeError, match=problem) as info:
        syncws.connect(f"ws://127.0.0.1:{raw.port}/", subprotocols=["chat"])
    assert info.value.status == 101
    raw.join()


@pytest.mark.parametrize("value", ["\u00b2", "1\u00b2", "010", "16", "7", ""])
def test_a_bad_window_bits_answer_is_refused(value: str) -> None:
    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers, "Sec-WebSocket-Extensions: permessage-deflate; "
                                f"server_max_window_bits={value}\r\n")

    raw = RawServer(script)
    # A HandshakeError naming the parameter: not a bare ValueError from int().
    with pytest.raises(syncws.HandshakeError, match="server_max_window_bits"):
        syncws.connect(f"ws://127.0.0.1:{raw.port}/", per_message_deflate=True)
    raw.join()


def test_a_server_asking_for_an_8_bit_client_window_gets_plain_messages() -> None:
    """The bare client_max_window_bits offer lets the server pick 8 (RFC 7692 7.1.2.2).

    zlib cannot compress with that window, so the client sends every message
    uncompressed (RSV1 clear), as any sender may, and still inflates the server's.
    """
    got: list[tuple[int, int, bytes]] = []

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers, "Sec-WebSocket-Extensions: permessage-deflate; "
                                "client_max_window_bits=8\r\n")
        first, _, _, payload = read_client_frame_bits(sock)
        got.append((first & 0x0F, first & 0x70, payload))
        compressor = zlib.compressobj(wbits=-15)
        body = compressor.compress(b"from the server" * 20) + compressor.flush(zlib.Z_SYNC_FLUSH)
        body = body[:-4]
        assert len(body) < 126
        sock.sendall(bytes([0x80 | 0x40 | 0x1, len(body)]) + body)
        read_client_frame(sock)  # the client's close

    raw = RawServer(script)
    with syncws.connect(f"ws://127.0.0.1:{raw.port}/", per_message_deflate=True) as ws:
        ws.send("hello " * 50)
        assert ws.recv(timeout=wait(5)) == "from the server" * 20
    raw.join()
    assert got == [(0x1, 0, ("hello " * 50).encode())]


def test_server_that_hangs_up_or_stalls() -> None:
    raw = RawServer(lambda sock, headers: None)  # reads the request, closes
    with pytest.raises(syncws.HandshakeError) as info:
        syncws.connect(f"ws://127.0.0.1:{raw.port}/")
    assert info.value.status == 0
    raw.join()

    release = threading.Event()
    raw = RawServer(lambda sock, headers: release.wait(wait(10)) and None)
    try:
        with pytest.raises(TimeoutError):
            syncws.connect(f"ws://127.0.0.1:{raw.port}/", timeout=0.2)
    finally:
        release.set()
    raw.join()


def test_tcp_drop_gives_1006() -> None:
    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        sock.sendall(server_frame(0x1, b"bye"))

    raw = RawServer(script)
    ws = syncws.connect(f"ws://127.0.0.1:{raw.port}/")
    assert ws.recv(timeout=wait(5)) == "bye"
    with pytest.raises(syncws.ConnectionClosed) as info:
        list(ws)
    assert info.value.code == 1006
    raw.join()


def test_server_close_is_echoed_with_its_reason() -> None:
    seen: list[Any] = []

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        sock.sendall(server_frame(0x8, struct.pack("!H", 4000) + b"bye"))
        seen.append(read_client_frame(sock))

    raw = RawServer(script)
    ws = syncws.connect(f"ws://127.0.0.1:{raw.port}/")
    with pytest.raises(syncws.ConnectionClosed):
        ws.recv(timeout=wait(5))
    raw.join()
    assert seen[0][0] == 0x8 and seen[0][3] == struct.pack("!H", 4000) + b"bye"


def test_event_close_gives_the_code_the_server_answered_with() -> None:
    """RFC 6455 7.1.5, as in browsers: the close event carries the received code,
    even when the client's close went first with another one."""
    seen: list[Any] = []
    events: list[tuple[int, str, bool]] = []
    closed = threading.Event()

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        seen.append(read_client_frame(sock))
        sock.sendall(server_frame(0x8, struct.pack("!H", 1001) + b"going away"))

    raw = RawServer(script)
    ws = syncws.WebSocket(f"ws://127.0.0.1:{raw.port}/")
    ws.add_event_listener("open", lambda event: ws.close(4001, "client-bye"))
    ws.add_event_listener("close", lambda event: (
        events.append((event.code, event.reason, event.was_clean)), closed.set()))
    assert closed.wait(wait(10))
    raw.join()
    assert seen[0][3] == struct.pack("!H", 4001) + b"client-bye"
    assert events == [(1001, "going away", True)]


def test_event_close_without_a_close_frame_back_gives_1006_after_our_close() -> None:
    """RFC 6455 7.1.5, as in browsers: no close frame received, 1006 "", whatever
    code our close() sent (the blocking client's close_code stays our own)."""
    seen: list[Any] = []

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        seen.append(read_client_frame(sock))  # then the TCP drop, no close frame

    raw = RawServer(script)
    ws = syncws.WebSocket(f"ws://127.0.0.1:{raw.port}/")
    # One "open" listener: a second one added later could miss it.
    recorder = Recorder(ws, on_open=lambda event: ws.close(4001, "bye"))
    assert recorder.closed.wait(wait(5))
    raw.join()
    assert seen[0][3] == struct.pack("!H", 4001) + b"bye"
    assert recorder.events == [("open",), ("close", 1006, "", False)]

    raw = RawServer(script)
    blocking = syncws.connect(f"ws://127.0.0.1:{raw.port}/")
    blocking.close(4001, "bye")
    raw.join()
    assert (blocking.close_code, blocking.close_reason) == (4001, "bye")


def errors_and_close(ws: syncws.WebSocket) -> tuple[list[tuple[str, Any]], threading.Event]:
    """Record ("error", message) and ("close", code) events; the Event is set on close."""
    events: list[tuple[str, Any]] = []
    closed = threading.Event()
    ws.add_event_listener("error", lambda event: events.append(("error", event.message)))
    ws.add_event_listener("close", lambda event: (events.append(("close", event.code)),
                                                  closed.set()))
    return events, closed


def test_event_close_while_the_server_keeps_the_handshake_waiting_ends_at_once() -> None:
    """close() while CONNECTING abandons the handshake now, not at its 10 s timeout."""
    request_seen, release = threading.Event(), threading.Event()

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        request_seen.set()  # the request arrived: the client now waits for the 101
        release.wait(wait(20))

    raw = RawServer(script)
    ws = syncws.WebSocket(f"ws://127.0.0.1:{raw.port}/")
    events, closed = errors_and_close(ws)
    assert request_seen.wait(wait(5))
    ws.close()
    assert closed.wait(wait(5))  # (before: at the handshake's 10 s timeout)
    release.set()
    raw.join()
    assert events == [("error", "closed before the connection opened"), ("close", 1006)]


@contextlib.contextmanager
def port_that_never_answers_a_connect() -> Iterator[int]:
    """A listener whose accept queue is full, so the kernel drops new SYNs."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(64):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(address)
            with selectors.DefaultSelector() as selector:
                selector.register(filler, selectors.EVENT_WRITE)
                if not selector.select(0.2):
                    break  # this SYN went unanswered: the queue is full
        else:
            pytest.skip("the kernel accepted every connection")
        yield address[1]


def test_event_close_while_the_tcp_connect_is_pending_ends_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Shutting a socket down does not end its connect() on Linux: the connect is cancelled."""
    connecting = threading.Event()
    with port_that_never_answers_a_connect() as port:
        def spy(original: Callable[[socket.socket, Any], Any]) -> Callable[..., Any]:
            def call(sock: socket.socket, address: Any) -> Any:
                if address[1] == port:
                    connecting.set()
                return original(sock, address)
            return call

        for name in ("connect", "connect_ex"):  # the client's socket, whichever it calls
            monkeypatch.setattr(socket.socket, name, spy(getattr(socket.socket, name)))
        ws = syncws.WebSocket(f"ws://127.0.0.1:{port}/")
        events, closed = errors_and_close(ws)
        assert connecting.wait(wait(5))
        ws.close()
        assert closed.wait(wait(2))  # (before: at the handshake's 10 s timeout)
        assert events == [("error", "closed before the connection opened"), ("close", 1006)]
        # The blocking client's timeout still covers the TCP connect.
        with pytest.raises(TimeoutError):
            syncws.connect(f"ws://127.0.0.1:{port}/", timeout=0.3)


def test_protocol_error_closes_with_1002() -> None:
    seen: list[Any] = []

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        sock.sendall(bytes([0x83, 0]))  # reserved opcode 3
        seen.append(read_client_frame(sock))

    raw = RawServer(script)
    ws = syncws.connect(f"ws://127.0.0.1:{raw.port}/")
    with pytest.raises(syncws.ConnectionClosed) as info:
        ws.recv(timeout=wait(5))
    raw.join()
    assert info.value.code == 1002
    assert seen[0][0] == 0x8 and seen[0][3][:2] == struct.pack("!H", 1002)


# -- IPv6 ------------------------------------------------------------------------------

def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
def test_ipv6_literal(make_server: Any) -> None:
    hosts: list[str] = []

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        hosts.append(req.headers["host"])
        server.upgrade(req)

    server = make_server(fetch, Echo, hostname="::1")
    with syncws.connect(f"ws://[::1]:{server.port}/v6") as ws:
        ws.send("six")
        assert ws.recv(timeout=wait(5)) == "six"
    assert hosts == [f"[::1]:{server.port}"]


# -- TLS -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls() -> dict[str, Any]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return {"server": server_context, "client": client_context}


def test_wss_echo_through_python_websockets(ws_peer: Any, tls: dict[str, Any]) -> None:
    port = ws_peer(peer_echo, ssl=tls["server"])
    with syncws.connect(f"wss://127.0.0.1:{port}/secure", ssl=tls["client"]) as ws:
        for message in ("over tls", b"\x00" * 100000):
            ws.send(message)
            assert ws.recv(timeout=wait(5)) == message
    assert ws.close_code == 1000

    done = threading.Event()
    with syncws.connect(f"wss://localhost:{port}/", ssl=tls["client"],
                        per_message_deflate=True) as ws:
        def spam() -> None:  # sends on one thread while another receives
            for i in range(200):
                ws.send(f"m{i}")
            done.set()

        sender = threading.Thread(target=spam)
        sender.start()
        assert [ws.recv(timeout=wait(5)) for _ in range(200)] == [f"m{i}" for i in range(200)]
        sender.join(wait(5))
    assert done.is_set()


def test_untrusted_certificate_is_refused_by_default(ws_peer: Any, tls: dict[str, Any]) -> None:
    port = ws_peer(peer_echo, ssl=tls["server"])
    with pytest.raises(ssl.SSLCertVerificationError):
        syncws.connect(f"wss://127.0.0.1:{port}/", timeout=wait(5))


def test_event_close_during_the_tls_handshake_ends_at_once(tls: dict[str, Any]) -> None:
    """wss:// too: the TLS socket (which took over the descriptor) is the one shut down."""
    hello_seen, release = threading.Event(), threading.Event()

    def silent(listener: socket.socket) -> None:
        with listener:
            sock, _ = listener.accept()
            with sock:
                if sock.recv(4096):  # the ClientHello, never answered
                    hello_seen.set()
                release.wait(wait(20))

    listener = socket.create_server(("127.0.0.1", 0))
    server = threading.Thread(target=silent, args=(listener,), daemon=True)
    server.start()
    ws = syncws.WebSocket(f"wss://127.0.0.1:{listener.getsockname()[1]}/", ssl=tls["client"])
    events, closed = errors_and_close(ws)
    try:
        assert hello_seen.wait(wait(5))
        ws.close()
        assert closed.wait(wait(2))  # (before: at the handshake's 10 s timeout)
    finally:
        release.set()
        server.join(wait(5))
    assert events == [("error", "closed before the connection opened"), ("close", 1006)]


# -- the event API (syncws.WebSocket) --------------------------------------------------

class Recorder:
    """Collects events; ``closed`` is set by the close event."""

    def __init__(self, ws: syncws.WebSocket,
                 on_message: Callable[[syncws.MessageEvent], None] | None = None,
                 on_open: Callable[[syncws.Event], None] | None = None) -> None:
        self.events: list[Any] = []
        self.errors: list[syncws.ErrorEvent] = []
        self.open_state: syncws.ReadyState | None = None
        self.threads: list[threading.Thread] = []
        self.closed = threading.Event()
        self.ws = ws
        self.on_message = on_message
        self.on_open = on_open
        ws.add_event_listener("open", self.open)
        ws.add_event_listener("message", self.message)
        ws.add_event_listener("error", self.error)
        ws.add_event_listener("close", self.close)

    def open(self, event: syncws.Event) -> None:
        self.threads.append(threading.current_thread())
        self.events.append(("open",))
        self.open_state = self.ws.ready_state
        if self.on_open is not None:
            self.on_open(event)

    def message(self, event: syncws.MessageEvent) -> None:
        self.threads.append(threading.current_thread())
        self.events.append(("message", event.data))
        if self.on_message is not None:
            self.on_message(event)

    def error(self, event: syncws.ErrorEvent) -> None:
        self.errors.append(event)
        self.events.append(("error", type(event.error).__name__))

    def close(self, event: syncws.CloseEvent) -> None:
        self.threads.append(threading.current_thread())
        self.events.append(("close", event.code, event.reason, event.was_clean))
        self.closed.set()


def _send_two_then_close(ws: Any) -> None:
    ws.send("one")
    ws.send(b"two")
    ws.close(4002, "srv-bye")


# A server whose open handler sends a text and a binary message, then closes.
TWO_THEN_CLOSE = {"open": _send_two_then_close, "message": lambda ws, m: None}


def test_event_api_order_open_messages_close(make_server: Any) -> None:
    server = make_server(websocket=TWO_THEN_CLOSE)
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    assert ws.ready_state is syncws.ReadyState.CONNECTING
    recorder = Recorder(ws)
    assert recorder.closed.wait(wait(10))
    assert recorder.events == [("open",), ("message", "one"),
                               ("message", b"two"), ("close", 4002, "srv-bye", True)]
    assert ws.ready_state is syncws.ReadyState.CLOSED
    names = {thread.name for thread in recorder.threads}
    assert len(names) == 1 and names.pop().startswith("syncws-client-")
    assert not recorder.threads[0].daemon
    recorder.threads[0].join(wait(5))
    assert not recorder.threads[0].is_alive()


def test_event_handler_attributes_as_in_the_browser(make_server: Any) -> None:
    server = make_server(websocket=TWO_THEN_CLOSE)
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    events: list[tuple[Any, ...]] = []
    closed = threading.Event()
    ws.onopen = lambda event: events.append(("open",))
    ws.onmessage = lambda event: events.append(("message", event.data))
    ws.onerror = lambda event: events.append(("error", event.message))
    ws.onclose = lambda event: (events.append(("close", event.code, event.reason)),
                                closed.set())
    assert closed.wait(wait(10))
    assert events == [("open",), ("message", "one"), ("message", b"two"),
                      ("close", 4002, "srv-bye")]
    assert ws.onerror is not None and syncws.WebSocket.onmessage is not None


def test_an_event_handler_attribute_keeps_its_place_among_the_listeners(
        make_server: Any) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)})
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    calls: list[str] = []
    got = threading.Semaphore(0)

    def first(event: syncws.MessageEvent) -> None:
        calls.append(f"first {event.data}")

    def last(event: syncws.MessageEvent) -> None:
        calls.append(f"last {event.data}")
        got.release()

    ws.add_event_listener("message", first)
    ws.onmessage = lambda event: calls.append(f"handler {event.data}")
    ws.add_event_listener("message", last)
    replacement = lambda event: calls.append(f"replaced {event.data}")  # noqa: E731
    ws.onmessage = replacement  # same place, as the HTML spec says
    assert ws.onmessage is replacement
    opened = threading.Event()
    ws.onopen = lambda event: opened.set()
    assert opened.wait(wait(10))
    ws.send("a")
    assert got.acquire(timeout=wait(5))
    ws.onmessage = None  # removed
    assert ws.onmessage is None
    ws.send("b")
    assert got.acquire(timeout=wait(5))
    ws.close()
    assert calls == ["first a", "replaced a", "last a", "first b", "last b"]


def test_a_misspelt_handler_attribute_is_an_error_not_ignored() -> None:
    ws = syncws.WebSocket("ws://127.0.0.1:9/")  # (nothing listens: "error", then "close")
    # websocket-client's spelling, and JavaScript's camel case.
    with pytest.raises(AttributeError, match="'on_message': did you mean 'onmessage'"):
        ws.on_message = print  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="'onClose': did you mean 'onclose'"):
        ws.onClose = print  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="onopen must be callable"):
        ws.onopen = "hello"  # type: ignore[assignment]
    ws.online = True  # type: ignore[attr-defined]  # an attribute of one's own is fine
    assert ws.online  # type: ignore[attr-defined]
    ws.close()


def test_event_api_send_headers_and_client_close(make_server: Any) -> None:
    seen: dict[str, Any] = {}
    server_closed = threading.Event()
    tried_early_send = threading.Event()

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        # Hold the handshake until the test has tried to send while CONNECTING.
        assert tried_early_send.wait(wait(5))
        seen["authorization"] = req.headers.get("authorization")
        server.upgrade(req, headers={"Sec-WebSocket-Protocol": "chat"})

    def on_close(ws: Any, code: int, reason: str) -> None:
        seen["close"] = (code, reason)
        server_closed.set()

    server = make_server(fetch, {"message": lambda ws, m: ws.send(m), "close": on_close})
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/",
                          headers={"Authorization": "Bearer token"}, protocols="chat")
    try:
        with pytest.raises(syncws.InvalidStateError):
            ws.send("too early")
    finally:
        tried_early_send.set()

    def echo_then_close(event: syncws.MessageEvent) -> None:
        if event.data == "Hello":
            ws.send(b"again")
        else:
            ws.close(4000, "bye")
            assert ws.ready_state is syncws.ReadyState.CLOSING

    recorder = Recorder(ws, echo_then_close, on_open=lambda event: ws.send("Hello"))
    assert recorder.closed.wait(wait(10))
    assert server_closed.wait(wait(5))
    assert recorder.events == [("open",), ("message", "Hello"),
                               ("message", b"again"), ("close", 4000, "bye", True)]
    assert seen == {"authorization": "Bearer token", "close": (4000, "bye")}
    assert recorder.open_state is syncws.ReadyState.OPEN
    assert ws.protocol == "chat"
    ws.send("after close: dropped quietly")


def test_event_api_terminate_drops_the_connection_with_1006_and_no_error(
        make_server: Any) -> None:
    closes = ServerCloses()
    server = make_server(websocket={"message": lambda ws, m: None, "close": closes})
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    recorder = Recorder(ws)
    wait_for(lambda: recorder.events == [("open",)], message="open")
    ws.terminate()
    # CLOSING at once (CLOSED already if the event thread was quick to deliver "close").
    assert ws.ready_state in (syncws.ReadyState.CLOSING, syncws.ReadyState.CLOSED)
    assert recorder.closed.wait(wait(5))
    assert closes.done.wait(wait(5))
    # As in Bun: "close" 1006, not clean, and no "error"; the server sees a TCP drop.
    assert recorder.events == [("open",), ("close", 1006, "", False)]
    assert closes.seen == [(1006, "")]
    assert ws.ready_state is syncws.ReadyState.CLOSED
    ws.terminate()  # after the close: nothing happens
    ws.close()
    ws.send("dropped quietly")
    assert recorder.events == [("open",), ("close", 1006, "", False)]


def test_event_api_terminate_sends_no_close_frame() -> None:
    on_wire: list[Any] = []

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        on_wire.append(sock.recv(4096))  # b"" is the TCP close, without a close frame

    raw = RawServer(script)
    ws = syncws.WebSocket(f"ws://127.0.0.1:{raw.port}/")
    # One "open" listener: a second one added later could miss it.
    recorder = Recorder(ws, on_open=lambda event: ws.terminate())
    assert recorder.closed.wait(wait(5))
    raw.join()
    assert on_wire == [b""]
    assert recorder.events == [("open",), ("close", 1006, "", False)]


def test_event_api_terminate_while_connecting_is_close(make_server: Any) -> None:
    terminated = threading.Event()

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        assert terminated.wait(wait(5))
        server.upgrade(req)

    server = make_server(fetch, Echo)
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    recorder = Recorder(ws)
    try:
        ws.terminate()
        assert ws.ready_state is syncws.ReadyState.CLOSING
    finally:
        terminated.set()
    assert recorder.closed.wait(wait(10))
    assert recorder.events == [("error", "ConnectionAbortedError"), ("close", 1006, "", False)]


def test_event_api_ping_and_pong_reach_the_server(make_server: Any) -> None:
    controls: list[tuple[str, bytes]] = []
    server_closed = threading.Event()
    handshake = threading.Event()

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        assert handshake.wait(wait(5))
        server.upgrade(req)

    server = make_server(fetch, {
        "message": lambda ws, m: None,
        "ping": lambda ws, data: controls.append(("ping", bytes(data))),
        "pong": lambda ws, data: controls.append(("pong", bytes(data))),
        "close": lambda ws, code, reason: server_closed.set(),
    })
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    try:
        with pytest.raises(syncws.InvalidStateError):
            ws.ping(b"too early")
        with pytest.raises(syncws.InvalidStateError):
            ws.pong(b"too early")
    finally:
        handshake.set()
    recorder = Recorder(ws)
    wait_for(lambda: recorder.events == [("open",)], message="open")
    ws.ping(b"hi")
    ws.pong("é")
    ws.ping()
    ws.ping(bytearray(b"x" * 125))
    with pytest.raises(ValueError, match="125"):
        ws.ping(b"x" * 126)
    with pytest.raises(TypeError, match="pong"):
        ws.pong(42)  # type: ignore[arg-type]
    wait_for(lambda: len(controls) == 4, message="the server's ping and pong handlers")
    ws.close(1000)
    ws.ping(b"late")  # after close: nothing (no error), as send()
    ws.pong(b"late")
    assert recorder.closed.wait(wait(5))
    assert server_closed.wait(wait(5))
    ws.ping(b"later")
    assert controls == [("ping", b"hi"), ("pong", "é".encode()), ("ping", b""),
                        ("ping", b"x" * 125)]
    assert recorder.events == [("open",), ("close", 1000, "", True)]


def test_event_api_close_without_code_sends_no_status(make_server: Any) -> None:
    closes: list[tuple[int, str]] = []

    def on_close(ws: Any, code: int, reason: str) -> None:
        closes.append((code, reason))

    server = make_server(websocket={"message": lambda ws, m: None, "close": on_close})

    def client_events(reason: str | None = None) -> list[Any]:
        ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
        recorder = Recorder(ws)
        ws.add_event_listener(
            "open", lambda event: ws.close() if reason is None else ws.close(reason=reason))
        assert recorder.closed.wait(wait(5))
        return recorder.events

    # As in browsers and Bun: no code, no status (1005); a reason alone comes with 1000.
    assert client_events() == [("open",), ("close", 1005, "", True)]
    wait_for(lambda: closes == [(1005, "")], message="the server's close handler")
    assert client_events(reason="x") == [("open",), ("close", 1000, "x", True)]
    wait_for(lambda: len(closes) == 2, message="the server's close handler")
    assert closes == [(1005, ""), (1000, "x")]
    # Explicit codes and reasons are still checked.
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    recorder = Recorder(ws)
    with pytest.raises(ValueError, match="1005"):
        ws.close(1005)
    with pytest.raises(ValueError, match="123"):
        ws.close(reason="é" * 62)
    ws.close()
    assert recorder.closed.wait(wait(5))


def test_event_api_close_without_code_puts_an_empty_close_frame_on_the_wire() -> None:
    on_wire: list[Any] = []

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        on_wire.append(read_client_frame(sock))
        sock.sendall(server_frame(0x8, b""))  # echo: no status either

    raw = RawServer(script)
    ws = syncws.WebSocket(f"ws://127.0.0.1:{raw.port}/")
    # One "open" listener: a second one added later could miss it.
    recorder = Recorder(ws, on_open=lambda event: ws.close())
    assert recorder.closed.wait(wait(5))
    raw.join()
    opcode, masked, _, payload = on_wire[0]
    assert (opcode, masked, payload) == (0x8, True, b"")
    assert recorder.events == [("open",), ("close", 1005, "", True)]


def test_event_api_refused_connection_gives_error_then_close() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        ws = syncws.WebSocket(f"ws://127.0.0.1:{holder.getsockname()[1]}/")
        recorder = Recorder(ws)
        assert recorder.closed.wait(wait(10))
    assert recorder.events == [("error", "ConnectionRefusedError"), ("close", 1006, "", False)]
    assert ws.ready_state is syncws.ReadyState.CLOSED


def test_event_api_handshake_refused_and_tcp_drop(make_server: Any) -> None:
    server = make_server(lambda req, srv: syncws.Response("no", status=403), Echo)
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    recorder = Recorder(ws)
    assert recorder.closed.wait(wait(10))
    assert recorder.events == [("error", "HandshakeError"), ("close", 1006, "", False)]

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        sock.sendall(server_frame(0x1, b"last"))

    raw = RawServer(script)  # drops TCP without a closing handshake
    ws = syncws.WebSocket(f"ws://127.0.0.1:{raw.port}/")
    recorder = Recorder(ws)
    assert recorder.closed.wait(wait(10))
    raw.join()
    assert recorder.events == [("open",), ("message", "last"), ("close", 1006, "", False)]


def test_events_are_held_until_a_listener_is_added(make_server: Any) -> None:
    def on_open(ws: Any) -> None:
        ws.send("m1")
        ws.send("m2")
        ws.close()

    server = make_server(websocket={"open": on_open, "message": lambda ws, m: None})
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    closed = threading.Event()
    late: list[Any] = []
    ws.add_event_listener("close", lambda event: closed.set())
    assert closed.wait(wait(10))
    # The connection is over; open and the messages were held for us.
    got_open, got_messages = threading.Event(), threading.Event()

    def on_message(event: syncws.MessageEvent) -> None:
        late.append((event.data, threading.current_thread().name))
        if len(late) == 2:
            got_messages.set()

    ws.add_event_listener("open", lambda event: got_open.set())
    ws.add_event_listener("message", on_message)
    assert got_open.wait(wait(5))
    assert got_messages.wait(wait(5))
    assert [data for data, _ in late] == ["m1", "m2"]
    assert all(name.startswith("syncws-client-") for _, name in late)


def listen(ws: syncws.WebSocket, *types: str) -> tuple[list[tuple[Any, ...]], threading.Event]:
    """Add one recording listener per type, in the order given: (events, closed)."""
    events: list[tuple[Any, ...]] = []
    closed = threading.Event()

    def record(event: Any) -> None:
        if isinstance(event, syncws.MessageEvent):
            events.append(("message", event.data))
        elif isinstance(event, syncws.CloseEvent):
            events.append(("close", event.code, event.reason))
            closed.set()
        else:
            events.append((event.type,))

    for type in types:
        ws.add_event_listener(type, record)  # type: ignore[call-overload]
    return events, closed


def events_happened(ws: syncws.WebSocket) -> None:
    """Wait until the event thread is done: every event happened with no listener."""
    ws._thread.join(wait(5))
    assert not ws._thread.is_alive()


@pytest.mark.parametrize("added", ["just after the events", "after the event thread ended"])
def test_event_api_refused_connection_gives_error_then_close_whatever_the_listener_order(
        added: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        ws = syncws.WebSocket(f"ws://127.0.0.1:{holder.getsockname()[1]}/")
        if added == "just after the events":  # as when a connection fails at once
            wait_for(lambda: ws.ready_state is syncws.ReadyState.CLOSED, message="CLOSED")
        else:
            events_happened(ws)
        events, closed = listen(ws, "close", "error")
        assert closed.wait(wait(5))
    assert events == [("error",), ("close", 1006, "")]


def test_event_api_open_messages_close_in_order_with_listeners_added_in_reverse(
        make_server: Any) -> None:
    server = make_server(websocket=TWO_THEN_CLOSE)
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    events_happened(ws)
    events, closed = listen(ws, "close", "message", "open")
    assert closed.wait(wait(5))
    assert events == [("open",), ("message", "one"), ("message", b"two"),
                      ("close", 4002, "srv-bye")]


def test_event_api_a_type_nobody_listens_to_holds_back_nothing_for_long(
        make_server: Any) -> None:
    """No "error" (or "open") listener ever: "close" (and the messages) still come."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        ws = syncws.WebSocket(f"ws://127.0.0.1:{holder.getsockname()[1]}/")
        events, closed = listen(ws, "close")
        assert closed.wait(wait(5))
    assert events == [("close", 1006, "")]

    def on_open(ws: Any) -> None:
        ws.send("one")
        ws.close(4002, "srv-bye")

    server = make_server(websocket={"open": on_open, "message": lambda ws, m: None})
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    events_happened(ws)
    events, closed = listen(ws, "close", "message")
    assert closed.wait(wait(5))
    assert events == [("message", "one"), ("close", 4002, "srv-bye")]


def test_messages_held_without_a_listener_are_bounded(make_server: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """No "message" listener: the first 1 MiB is held for a late listener, the rest dropped."""
    chunk = b"x" * 65536

    def on_message(ws: Any, msg: Any) -> None:
        for _ in range(40):
            ws.send(chunk)
        ws.close(1000)

    # (The server's own limit must not be what drops them.)
    server = make_server(websocket={"message": on_message, "backpressure_limit": 8 << 20})
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    closed = threading.Event()
    ws.add_event_listener("open", lambda event: ws.send("flood"))
    ws.add_event_listener("close", lambda event: closed.set())
    assert closed.wait(wait(10))  # events come in order: every message was held or dropped
    assert any("messages past" in r.getMessage() for r in caplog.records)
    got: list[Any] = []
    ws.add_event_listener("message", lambda event: got.append(event.data))
    wait_for(lambda: len(got) >= 16, message="the held messages")
    for thread in threading.enumerate():  # the short-lived thread that delivers them
        if thread.name == ws._thread_name:
            thread.join(wait(5))
    assert got == [chunk] * 16  # 16 x 64 KiB fill the 1 MiB; the other 24 were dropped


def test_one_big_message_is_held_for_a_late_listener(make_server: Any) -> None:
    """The bound never drops the first held message: 2 MiB of text arrives whole."""
    text = "é" * (1 << 20) + "!"  # over 2 MiB in UTF-8, over 1 Mi characters

    def on_open(ws: Any) -> None:
        ws.send(text)
        ws.close(1000)

    server = make_server(websocket={"open": on_open, "message": lambda ws, m: None,
                                    "backpressure_limit": 8 << 20})
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    closed = threading.Event()
    ws.add_event_listener("close", lambda event: closed.set())
    assert closed.wait(wait(10))
    got: list[Any] = []
    ws.add_event_listener("message", lambda event: got.append(event.data))
    wait_for(lambda: got, message="the held message")
    assert got == [text]


def test_a_listener_exception_does_not_stop_delivery(make_server: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    def on_open(ws: Any) -> None:
        ws.send("a")
        ws.send("b")
        ws.close()

    server = make_server(websocket={"open": on_open, "message": lambda ws, m: None})
    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")

    def broken(event: syncws.MessageEvent) -> None:
        raise RuntimeError("listener bug")

    ws.add_event_listener("message", broken)
    recorder = Recorder(ws)
    assert recorder.closed.wait(wait(10))
    assert [e for e in recorder.events if e[0] == "message"] == [("message", "a"),
                                                                 ("message", "b")]
    assert "listener bug" in caplog.text


def test_script_with_only_listeners_stays_alive_until_close(make_server: Any) -> None:
    opened = threading.Event()
    sockets: list[Any] = []

    def on_open(ws: Any) -> None:
        sockets.append(ws)
        opened.set()

    server = make_server(websocket={"open": on_open, "message": lambda ws, m: None})
    script = textwrap.dedent(f"""
        import syncws
        ws = syncws.WebSocket("ws://127.0.0.1:{server.port}/")
        ws.add_event_listener("message", lambda event: print("message", event.data, flush=True))
        ws.add_event_listener("close", lambda event: print("close", event.code, flush=True))
        print("main done", flush=True)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "main done\n"
        assert opened.wait(wait(10))
        assert proc.poll() is None  # the main thread is done, the process is not
        sockets[0].send("hello")
        assert proc.stdout.readline() == "message hello\n"
        sockets[0].close(1000)
        out, err = proc.communicate(timeout=wait(15))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert out == "close 1000\n", err
    assert proc.returncode == 0


@pytest.fixture
def client_threads_cannot_start_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """As on Python 3.12.0-3.12.1 once the main thread has ended (a Bun-style script):
    a thread the event client starts refuses to start; returns what was refused."""
    refused: list[str] = []
    start = threading.Thread.start

    def refusing_start(thread: threading.Thread) -> None:
        starter = threading.current_thread().name
        if starter.startswith(("syncws-client-", "syncws-reader-")):
            refused.append(f"{starter} started {thread.name}")
            raise RuntimeError("can't create new thread at interpreter shutdown")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refusing_start)
    return refused


def test_event_client_starts_no_thread_after_its_constructor(
        make_server: Any, monkeypatch: pytest.MonkeyPatch,
        client_threads_cannot_start_threads: list[str]) -> None:
    """Connecting, reading, close() from a listener, the server's close and the
    close timeout all run on the threads the constructor started."""
    monkeypatch.setattr(syncws.client, "CLOSE_TIMEOUT", 0.5)
    server = make_server(lambda req, srv: srv.upgrade(req, data=req.path == "/server"),
                         {"open": lambda ws: ws.close(4002, "srv-bye") if ws.data
                          else ws.send("hi"), "message": lambda ws, m: None})

    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/")
    recorder = Recorder(ws, on_message=lambda event: ws.close(4000, "bye"))
    assert recorder.closed.wait(wait(5))
    assert recorder.events == [("open",), ("message", "hi"), ("close", 4000, "bye", True)]

    ws = syncws.WebSocket(f"ws://127.0.0.1:{server.port}/server")
    recorder = Recorder(ws)
    assert recorder.closed.wait(wait(5))
    assert recorder.events == [("open",), ("close", 4002, "srv-bye", True)]

    seen: list[Any] = []

    def stalls(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        seen.append(read_client_frame(sock))
        seen.append(sock.recv(1))  # b"": the client dropped the connection at its deadline

    raw = RawServer(stalls)
    ws = syncws.WebSocket(f"ws://127.0.0.1:{raw.port}/")
    # One "open" listener: a second one added later could miss it.
    recorder = Recorder(ws, on_open=lambda event: ws.close(4001))
    assert recorder.closed.wait(wait(5))
    raw.join()
    assert seen == [(0x8, True, seen[0][2], struct.pack("!H", 4001)), b""]
    assert recorder.events == [("open",), ("close", 1006, "", False)]
    assert client_threads_cannot_start_threads == []


def test_client_example(make_server: Any) -> None:
    seen: dict[str, Any] = {}

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        seen["authorization"] = req.headers.get("authorization")
        server.upgrade(req)

    def on_message(ws: Any, message: str | bytes) -> None:
        seen["message"] = message
        ws.send("Hi from the server")
        ws.close(1000, "done")

    server = make_server(fetch, {"message": on_message})
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "client.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, example, f"ws://127.0.0.1:{server.port}"],
                          capture_output=True, text=True, env=env, timeout=wait(20))
    assert proc.stdout == "Hi from the server\n1000 done\n", proc.stderr
    assert proc.returncode == 0
    assert seen == {"authorization": "Bearer token", "message": "Hello"}


def test_client_example_closes_politely_on_ctrl_c(make_server: Any) -> None:
    closes = ServerCloses()
    server = make_server(websocket={"message": lambda ws, m: ws.send("Hi"), "close": closes})
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "client.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    # Ctrl-C as in a terminal, even when pytest itself runs with SIGINT ignored
    # (started with & from a script), which the child would inherit.
    proc = subprocess.Popen([sys.executable, example, f"ws://127.0.0.1:{server.port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "Hi\n"  # open, sent Hello, got the answer
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=wait(20))
    finally:
        proc.kill()
    assert closes.done.wait(wait(5))
    assert closes.seen == [(1000, "")]
    assert out == "1000 \n"  # the close listener ran
    assert err == ""  # no traceback
    assert proc.returncode == 0


CLIENT_BOMB_SCRIPT = """
import sys, syncws
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
ws = syncws.connect(sys.argv[1], per_message_deflate=True, max_payload_length=1 << 20)
before = hwm()
try:
    ws.recv(timeout=30)
    print("delivered")
except syncws.PayloadTooBig:
    print("too big", (hwm() - before) // 1024)
ws.close()
"""


@pytest.mark.timeout(120)
def test_client_inflate_is_bounded_against_a_bomb() -> None:
    """A server's compressed bomb is refused with 1009 before it inflates far."""
    from test_deflate import bomb

    payload, inflated = bomb(1_000_000)
    assert inflated > 900 * 1024 * 1024
    codes: list[int] = []

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers, extra="Sec-WebSocket-Extensions: permessage-deflate\r\n")
        try:
            sock.sendall(bytes([0xC2, 127]) + struct.pack("!Q", len(payload)) + payload)
            while True:
                opcode, _, _, body = read_client_frame(sock)
                if opcode == 0x8:
                    codes.append(struct.unpack("!H", body[:2])[0])
                    return
        except (ConnectionResetError, BrokenPipeError):
            # The client may drop the connection with the rest of the bomb unread.
            codes.append(0)

    server = RawServer(script)
    result = subprocess.run([sys.executable, "-c", CLIENT_BOMB_SCRIPT,
                             f"ws://127.0.0.1:{server.port}/"],
                            capture_output=True, text=True, timeout=wait(60))
    server.join()
    assert result.stdout.startswith("too big"), result.stdout + result.stderr
    assert int(result.stdout.split()[-1]) < 40  # MiB of peak RSS growth, not ~1 GiB
    assert codes in ([1009], [0])


# -- closing against peers that misbehave --------------------------------------------

@contextlib.contextmanager
def peer_that_stops_reading(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A server (its port) that completes the handshake, then neither reads nor writes."""
    monkeypatch.setattr(syncws.client, "CLOSE_TIMEOUT", 0.5)
    release = threading.Event()

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        send_101(sock, headers)
        release.wait(wait(20))

    raw = RawServer(script)
    try:
        yield raw.port
    finally:
        release.set()
    raw.join()


def start_stuck_send(send: Callable[[bytes], object]) -> tuple[threading.Thread, list[Any]]:
    """Send 32 MiB from a thread: against a peer that does not read, it blocks."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            send(b"x" * (32 * 1024 * 1024))
            outcome.append("sent")
        except syncws.ConnectionClosed as exc:
            outcome.append(exc.code)

    sender = threading.Thread(target=run, daemon=True)
    sender.start()
    return sender, outcome


def returns_within(seconds: float, fn: Callable[..., object], *args: Any) -> bool:
    """Whether ``fn(*args)``, run on a thread, returned within ``seconds``."""
    caller = threading.Thread(target=fn, args=args, daemon=True)
    caller.start()
    caller.join(seconds)
    return not caller.is_alive()


def test_close_is_bounded_while_a_stuck_send_waits_on_a_peer_that_stopped_reading(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with peer_that_stops_reading(monkeypatch) as port:
        ws = syncws.connect(f"ws://127.0.0.1:{port}/")
        sender, outcome = start_stuck_send(ws.send)
        wait_for(lambda: ws._send_lock.locked() and ws._buffered_amount > 0)
        assert returns_within(wait(5), ws.close), "close() waited on the stuck send for good"
        sender.join(wait(5))
        # The send could not finish: the connection was dropped under it.
        assert outcome == [1000]
        assert ws.ready_state is syncws.ReadyState.CLOSED
        assert ws.close_code == 1000


def test_event_api_close_never_blocks_behind_a_stuck_send(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with peer_that_stops_reading(monkeypatch) as port:
        ws = syncws.WebSocket(f"ws://127.0.0.1:{port}/")
        recorder = Recorder(ws)
        wait_for(lambda: ws.ready_state is syncws.ReadyState.OPEN)
        conn = ws._conn
        assert conn is not None
        start_stuck_send(ws.send)
        wait_for(lambda: conn._send_lock.locked() and ws.buffered_amount > 0)
        assert returns_within(wait(1), ws.close, 4001, "bye"), "WebSocket.close() blocked"
        assert ws.ready_state is syncws.ReadyState.CLOSING
        assert recorder.closed.wait(wait(5))
        # The server never answered with a close frame: 1006, as in browsers.
        assert recorder.events == [("open",), ("close", 1006, "", False)]


def test_server_close_then_a_trickle_without_tcp_close_ends_at_the_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syncws.client, "CLOSE_TIMEOUT", 0.5)

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        sock.sendall(server_frame(0x8, struct.pack("!H", 4000) + b"bye"))
        # A byte every 0.1 s for 10 s, never a FIN, unless the client drops the connection.
        pace = threading.Event()
        with contextlib.suppress(OSError):
            for _ in range(100):
                sock.sendall(b"\x00")
                pace.wait(0.1)

    raw = RawServer(script)
    ws = syncws.connect(f"ws://127.0.0.1:{raw.port}/")
    with pytest.raises(syncws.ConnectionClosed) as info:
        ws.recv(timeout=wait(5))
    assert (info.value.code, info.value.reason) == (4000, "bye")
    assert ws.ready_state is syncws.ReadyState.CLOSED
    raw.join()


def test_a_message_in_countless_tiny_fragments_is_kept_in_few_pieces(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syncws._frames, "MAX_FRAGMENT_PIECES", 8)
    sent_all_but_last = threading.Event()
    finish = threading.Event()

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        first = bytes([0x02, 1]) + b"a"  # binary, not final
        empty = bytes([0x00, 0])  # an empty continuation
        piece = bytes([0x00, 1]) + b"b"
        sock.sendall(first + (empty + piece) * 99)
        sent_all_but_last.set()
        finish.wait(wait(10))
        sock.sendall(bytes([0x80, 1]) + b"c")
        sock.sendall(server_frame(0x8, struct.pack("!H", 1000)))
        read_client_frame(sock)

    raw = RawServer(script)
    ws = syncws.connect(f"ws://127.0.0.1:{raw.port}/")
    assert sent_all_but_last.wait(wait(5))
    wait_for(lambda: ws._size == 100)
    # 100 one-byte pieces and 99 empty ones, held as at most 8 + 1 objects.
    assert 1 <= len(ws._parts) <= 9
    finish.set()
    assert ws.recv(timeout=wait(5)) == b"a" + b"b" * 99 + b"c"
    assert list(ws) == []
    raw.join()


def test_fragments_helpers_drop_empty_pieces_and_join_past_the_limit() -> None:
    parts: list[Any] = []
    for _ in range(3000):
        syncws._frames.add_fragment(parts, "é")
        syncws._frames.add_fragment(parts, "")
    assert len(parts) <= syncws._frames.MAX_FRAGMENT_PIECES + 1
    assert syncws._frames.last_fragment(parts, "!") == "é" * 3000 + "!"
    assert parts == []
    assert syncws._frames.last_fragment(parts, b"whole") == b"whole"


@pytest.mark.parametrize(("frame", "why"), [
    (bytes([0x81, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2]), "mask"),  # masked by a server
    (bytes([0x88, 2]) + struct.pack("!H", 999), "invalid code"),  # a close code nobody may send
    (bytes([0x81, 2]) + b"\xc3\x28", "utf"),  # invalid UTF-8
])
def test_event_api_failed_connection_gives_error_then_close_1006(frame: bytes, why: str) -> None:
    sent: list[Any] = []

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        send_101(sock, headers)
        sock.sendall(frame)
        sent.append(read_client_frame(sock))

    raw = RawServer(script)
    ws = syncws.WebSocket(f"ws://127.0.0.1:{raw.port}/")
    # One listener per type: a second one added later would miss events held
    # for the first (the connection may fail before the listeners are added).
    recorder = Recorder(ws)
    assert recorder.closed.wait(wait(5))
    raw.join()
    # As in the browser and Bun: "error", then "close" 1006, not clean.
    assert recorder.events == [("open",), ("error", "ConnectionClosed"),
                               ("close", 1006, "", False)]
    assert why in recorder.errors[0].message.lower()
    # On the wire the server was told why: 1002 or 1007.
    opcode, _, _, payload = sent[0]
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] in (1002, 1007)


def test_event_api_takes_ssl_and_max_payload_length(make_server: Any,
                                                    tls: dict[str, Any]) -> None:
    server = make_server(websocket=Echo, tls=tls["server"])
    ws = syncws.WebSocket(f"wss://127.0.0.1:{server.port}/", ssl=tls["client"],
                          max_payload_length=1000)
    recorder = Recorder(ws, on_message=lambda event: ws.send("y" * 1001)
                        if event.data == "small" else None,
                        on_open=lambda event: ws.send("small"))
    assert recorder.closed.wait(wait(10))
    assert recorder.events == [("open",), ("message", "small"), ("error", "PayloadTooBig"),
                               ("close", 1006, "", False)]
    with pytest.raises(TypeError, match="ssl"):
        syncws.WebSocket("wss://127.0.0.1:1/", ssl="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_payload_length"):
        syncws.WebSocket("ws://127.0.0.1:1/", max_payload_length=0)

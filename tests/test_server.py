"""The core server: HTTP, upgrade, handler order and threading (issue 2)."""

from __future__ import annotations

import array
import base64
import errno
import hashlib
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from conftest import KEY, RawClient, close_body, handshake_request, wait, wait_for
from websockets.exceptions import ConnectionClosed as PeerClosed
from websockets.sync.client import connect

import syncws


def echo_fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response | None:
    if server.upgrade(req):
        return None
    return syncws.Response("Not a WebSocket request", status=400)


def http_get(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait(5)) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"status": 101}, "200 to 599"), ({"status": 600}, "200 to 599"),
    ({"status": True}, "200 to 599"),
    ({"headers": {"X-Name": "caf\u20ac"}}, "latin-1"),
    ({"headers": {"X-A": "a\x01b"}}, "control"), ({"headers": {"X-A": "a\x7f"}}, "control"),
])
def test_responses_that_could_not_be_sent_are_refused_at_once(kwargs: dict[str, Any],
                                                               problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        syncws.Response("x", **kwargs)


def test_response_headers_as_they_go_on_the_wire(make_server: Any) -> None:
    def fetch(req: syncws.Request, server: Any) -> syncws.Response:
        if req.path == "/json":
            return syncws.Response.json({"a": 1}, headers={"Content-Type": "application/x+json"})
        return syncws.Response("x", headers=[("X-Name", "caf\u00e9"), ("X-Pad", " v\t")])

    server = make_server(fetch)
    reply = http_get(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                                  b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first, second = reply.split(b"HTTP/1.1 200 OK")[1:]
    assert b"\r\nX-Name: caf\xe9\r\n" in first  # latin-1, as PEP 3333 has it
    assert b"\r\nX-Pad: v\r\n" in first
    assert b"\r\nDate: " in first  # RFC 9110 6.6.1
    assert second.lower().count(b"content-type") == 1
    assert b"Content-Type: application/x+json" in second


@pytest.mark.parametrize(("target", "host", "url", "path", "query"), [
    ("/a/b?x=1&x=2", "h:81", "http://h:81/a/b?x=1&x=2", "/a/b", {"x": "1"}),
    ("/login?next=http://evil/x", "h", "http://h/login?next=http://evil/x", "/login",
     {"next": "http://evil/x"}),
    ("https://other/p?q=1", "h", "http://other/p?q=1", "/p", {"q": "1"}),  # the socket's scheme
    ("*", "h", "http://h/", "*", {}),
])
def test_request_url_path_and_query_come_from_the_target(target: str, host: str, url: str,
                                                        path: str, query: dict[str, str]) -> None:
    req = syncws.Request("GET", target, syncws.Headers([("Host", host)]))
    assert (req.url, req.path, req.query) == (url, path, query)


@pytest.mark.parametrize("host", [b"example.com/admin", b"example.com?", b"example.com#",
                                  b"user@example.com", b"a b"])
def test_a_host_header_that_is_no_authority_gets_400(make_server: Any, host: bytes) -> None:
    seen: list[str] = []
    server = make_server(lambda req, s: seen.append(req.path) or syncws.Response("ok"))
    reply = http_get(server.port, b"GET /public HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ") and seen == []


@pytest.mark.parametrize(("version", "status"), [(b"2.0", b"505"), (b"3.7", b"505"),
                                                 (b"1.2", b"200")])
def test_an_http_version_other_than_1_x_gets_505(make_server: Any, version: bytes,
                                                 status: bytes) -> None:
    server = make_server(lambda req, s: syncws.Response("ok"))
    reply = http_get(server.port, b"GET / HTTP/" + version + b"\r\nHost: x\r\n"
                                  b"Connection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 " + status + b" ")  # 1.2 is served as 1.1 (RFC 9110 2.5)


@pytest.mark.parametrize(("head", "status"), [
    # urllib refuses these absolute-form targets: a 400 now, not silence until the timeout.
    (b"GET http://[/ HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    (b"GET http://]/ HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET http://[/ HTTP/1.1\r\nHost: x\r\n\r\n",
     b"400"),  # pipelined behind a good one ("http://[abc]/" fails only from Python 3.11.4)
    # No tunnels: fetch's 2xx would have switched h11 into one (then a 500 and an ERROR).
    (b"CONNECT x:80 HTTP/1.1\r\nHost: x:80\r\n\r\n", b"405"),
])
def test_requests_fetch_cannot_answer_get_a_status_at_once(
        make_server: Any, head: bytes, status: bytes, caplog: pytest.LogCaptureFixture) -> None:
    server = make_server(lambda req, s: syncws.Response("ok"))
    reply = http_get(server.port, head)
    assert reply.split(b"HTTP/1.1 ")[-1].startswith(status + b" "), reply
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_content_length_with_transfer_encoding_is_refused(make_server: Any) -> None:
    seen: list[str] = []
    server = make_server(lambda req, s: seen.append(req.path) or syncws.Response("ok"))
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    reply = http_get(server.port, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + body)
    # RFC 9112 6.1: the request-smuggling shape. One 400, then the connection closes.
    assert reply.startswith(b"HTTP/1.1 400 ") and reply.count(b"HTTP/1.1") == 1
    assert seen == []


def test_a_client_that_half_closes_gets_the_whole_response(make_server: Any) -> None:
    body = os.urandom(4 * 1024 * 1024)
    server = make_server(lambda req, s: syncws.Response(body))
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait(10)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)  # as `printf ... | nc -N` does
        reply = b""
        while chunk := sock.recv(1 << 20):
            reply += chunk
    assert reply.endswith(body)


def test_sys_exit_in_fetch_is_a_500_and_the_worker_lives_on(make_server: Any) -> None:
    def fetch(req: syncws.Request, server: Any) -> syncws.Response:
        if req.path == "/exit":
            sys.exit(3)
        return syncws.Response("still here")

    server = make_server(fetch, workers=1)
    for _ in range(2):  # the only worker would be gone after the first
        reply = http_get(server.port, b"GET /exit HTTP/1.1\r\nHost: x\r\nConnection: close"
                                      b"\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 500 ")
    reply = http_get(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.endswith(b"still here")
    assert server.pending_requests == 0


def test_no_content_length_on_204_and_304_and_keep_alive_goes_on(make_server: Any) -> None:
    def fetch(req: syncws.Request, server: Any) -> syncws.Response:
        if req.path == "/204":
            return syncws.Response(b"", status=204)
        if req.path == "/304":
            return syncws.Response(b"", status=304, headers={"Content-Length": "11"})
        return syncws.Response(b"hello world")

    server = make_server(fetch)
    raw = b"".join(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                   for method, path in [("GET", "/204"), ("GET", "/304"), ("HEAD", "/"),
                                        ("GET", "/")])
    reply = http_get(server.port, raw + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    responses = reply.split(b"HTTP/1.1 ")[1:]
    assert [r.split(b"\r\n")[0] for r in responses] == [
        b"204 No Content", b"304 Not Modified", b"200 OK", b"200 OK", b"200 OK"]
    # RFC 9110 8.6: never on a 204; a 304 keeps the GET's; HEAD the body's, without the body.
    assert b"content-length" not in responses[0].lower()
    assert b"\r\nContent-Length: 11\r\n" in responses[1]
    assert b"\r\nContent-Length: 11\r\n" in responses[2] and responses[2].endswith(b"\r\n\r\n")
    assert responses[3].endswith(b"\r\n\r\nhello world")


def test_pipelined_requests_wait_for_the_client_to_read_the_answers(make_server: Any) -> None:
    """A client that pipelines requests and reads nothing cannot make us queue the
    answers without end: the next request is read once the last answer is out."""
    calls: list[str] = []
    body = bytes(1024 * 1024)

    def fetch(req: syncws.Request, server: Any) -> syncws.Response:
        calls.append(req.path)
        return syncws.Response(body)

    server = make_server(fetch)
    count = 60
    raw = b"".join(f"GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(count))
    with socket.socket() as sock:
        sock.settimeout(wait(10))
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(raw + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        wait_for(lambda: len(calls) >= 2, message="the first requests")
        # Kernel buffers hold a few MiB: a few answers at most, never all 60.
        # (Without the bound, all of them ran within milliseconds.)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            assert len(calls) < 30
            time.sleep(0.01)
        reply = b""
        while chunk := sock.recv(1 << 20):
            reply += chunk
    assert calls == [f"/{i}" for i in range(count)] + ["/last"]
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == count + 1
    assert len(reply) > (count + 1) * len(body)


def test_echo_example_with_python_websockets(make_server: Any) -> None:
    server = make_server(echo_fetch, {"message": lambda ws, m: ws.send(f"Echo: {m}")})
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("hello")
        assert client.recv(timeout=wait(5)) == "Echo: hello"


def test_text_stays_text_and_binary_stays_binary(make_server: Any) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)})
    payload = bytes(range(256)) * 10
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("héllo")
        assert client.recv(timeout=wait(5)) == "héllo"
        client.send(payload)
        assert client.recv(timeout=wait(5)) == payload


def test_big_and_small_frames_on_the_wire(make_server: Any) -> None:
    """Every length form (7, 16 and 64 bits) around the size where payloads stop being copied."""
    sizes = [0, 125, 126, 16383, 16384, 65535, 65536, 70000]

    def on_message(ws: Any, message: Any) -> None:
        for size in sizes:
            ws.send(bytes([size % 251]) * size)
            ws.send("é" * (size // 2) + "x" * (size % 2))  # the same length in UTF-8 bytes

    server = make_server(websocket={"message": on_message})
    client = RawClient(server.port)
    client.send_frame(0x1, b"go")
    for size in sizes:
        assert client.recv_frame() == (0x2, True, 0, bytes([size % 251]) * size)
        text = ("é" * (size // 2) + "x" * (size % 2)).encode()
        assert client.recv_frame() == (0x1, True, 0, text)
    client.close()


def test_any_bytes_like_object_goes_out_as_binary(make_server: Any) -> None:
    """array.array, a memoryview of ints, a bytearray: all binary frames of their bytes."""
    numbers = array.array("i", [1, 2, 3])
    expected = numbers.tobytes()

    def on_message(ws: Any, message: Any) -> None:
        ws.subscribe("t")
        ws.send(numbers)
        ws.send_binary(memoryview(numbers))
        server.publish("t", numbers)
        ws.publish_binary("t", bytearray(expected))  # not to self: publish_to_self is off
        ws.ping(numbers)

    server = make_server(websocket={"message": on_message})
    client = RawClient(server.port)
    client.send_frame(0x1, b"go")
    assert [client.recv_frame() for _ in range(4)] == [
        (0x2, True, 0, expected), (0x2, True, 0, expected), (0x2, True, 0, expected),
        (0x9, True, 0, expected)]
    client.close()


def test_raw_handshake_101_headers_and_subprotocol(make_server: Any) -> None:
    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        server.upgrade(req, headers={"Set-Cookie": "session=abc123",
                                     "Sec-WebSocket-Protocol": "chat"})

    server = make_server(fetch, {"message": lambda ws, m: ws.send(ws.protocol)})
    client = RawClient(server.port, extra="Sec-WebSocket-Protocol: superchat, chat\r\n")
    expected = base64.b64encode(hashlib.sha1(
        KEY.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()
    assert client.status == 101
    assert client.header("Sec-WebSocket-Accept") == expected
    assert client.header("Set-Cookie") == "session=abc123"
    assert client.header("Sec-WebSocket-Protocol") == "chat"
    client.send_frame(0x1, b"which?")
    assert client.recv_frame() == (0x1, True, 0, b"chat")
    client.close()


def test_echoing_the_offered_subprotocols_chooses_the_first(make_server: Any) -> None:
    """The Bun pattern: pass the client's Sec-WebSocket-Protocol back; its first entry wins."""
    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        offered = req.headers["sec-websocket-protocol"]
        server.upgrade(req, headers={"Sec-WebSocket-Protocol": offered})

    server = make_server(fetch, {"message": lambda ws, m: ws.send(ws.protocol)})
    client = RawClient(server.port, extra="Sec-WebSocket-Protocol: superchat, chat\r\n")
    assert client.status == 101
    assert client.header("Sec-WebSocket-Protocol") == "superchat"
    client.send_frame(0x1, b"which?")
    assert client.recv_frame() == (0x1, True, 0, b"superchat")
    client.close()


def test_subprotocol_not_offered_is_a_value_error(make_server: Any) -> None:
    errors: list[BaseException] = []

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response | None:
        try:
            server.upgrade(req, headers={"Sec-WebSocket-Protocol": "nope"})
        except ValueError as exc:
            errors.append(exc)
        return syncws.Response("no", status=400)

    server = make_server(fetch, {"message": lambda ws, m: None})
    client = RawClient(server.port, extra="Sec-WebSocket-Protocol: chat\r\n")
    assert client.status == 400
    assert len(errors) == 1
    client.close()


def test_plain_get_gets_fetch_response_and_upgrade_is_false(make_server: Any) -> None:
    results: list[bool] = []

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response | None:
        results.append(server.upgrade(req))
        return syncws.Response(f"path={req.path} q={req.query.get('a')}", status=404)

    server = make_server(fetch, {"message": lambda ws, m: None})
    reply = http_get(server.port,
                     b"GET /x?a=1&a=2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 404 ")
    assert reply.endswith(b"path=/x q=1")
    assert results == [False]


def test_second_upgrade_call_returns_false(make_server: Any) -> None:
    calls: list[bool] = []

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        calls.append(server.upgrade(req))
        calls.append(server.upgrade(req))

    server = make_server(fetch, {"message": lambda ws, m: ws.send(m)})
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("x")
        assert client.recv(timeout=wait(5)) == "x"
    assert calls == [True, False]


def test_upgrade_data_and_typed_handler(make_server: Any) -> None:
    class Handler(syncws.WebSocketHandler[dict[str, str]]):
        def message(self, ws: syncws.ServerWebSocket[dict[str, str]], msg: str | bytes) -> None:
            ws.send(f"{ws.data['user']}: {msg}")

    def fetch(req: syncws.Request, server: syncws.Server[dict[str, str]]) -> None:
        server.upgrade(req, data={"user": req.query["user"]})

    server = make_server(fetch, Handler())
    with connect(f"ws://127.0.0.1:{server.port}/?user=ada") as client:
        client.send("hi")
        assert client.recv(timeout=wait(5)) == "ada: hi"


def test_without_fetch_websockets_upgrade_and_others_get_426(make_server: Any) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)})
    wrong_version = handshake_request().replace(b"Version: 13", b"Version: 8")
    for request in (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                    wrong_version.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")):
        head = http_get(server.port, request).split(b"\r\n\r\n")[0].lower().split(b"\r\n")
        assert head[0].startswith(b"http/1.1 426 ")
        # RFC 9110: a 426 names the protocol, and Upgrade goes with Connection: upgrade.
        assert b"upgrade: websocket" in head
        assert any(line.startswith(b"connection:") and b"upgrade" in line for line in head)
        assert b"sec-websocket-version: 13" in head  # RFC 6455 4.4
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("ok")
        assert client.recv(timeout=wait(5)) == "ok"


def test_an_http_1_0_upgrade_is_refused(make_server: Any) -> None:
    """RFC 6455 4.1: the opening handshake is HTTP/1.1 or higher."""
    upgraded: list[bool] = []

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response | None:
        upgraded.append(server.upgrade(req))
        return None if upgraded[-1] else syncws.Response("no upgrade", status=400)

    default = make_server(websocket={"message": lambda ws, m: ws.send(m)})
    own = make_server(fetch, websocket={"message": lambda ws, m: ws.send(m)})
    request = handshake_request().replace(b"HTTP/1.1", b"HTTP/1.0")
    assert http_get(default.port, request).startswith(b"HTTP/1.1 400 ")
    assert http_get(own.port, request).startswith(b"HTTP/1.1 400 ")
    assert upgraded == [False]
    client = RawClient(own.port)
    assert client.status == 101 and upgraded == [False, True]
    client.close()


def test_upgrade_without_websocket_option_raises_type_error(make_server: Any) -> None:
    errors: list[BaseException] = []

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response:
        try:
            server.upgrade(req)
        except TypeError as exc:
            errors.append(exc)
        return syncws.Response("plain")

    server = make_server(fetch)
    assert http_get(server.port, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                    ).endswith(b"plain")
    assert len(errors) == 1


@pytest.mark.parametrize("spec, error", [
    ({"message": lambda ws, m: None, "bogus": 1}, TypeError),
    ({"open": lambda ws: None}, TypeError),
    ({"message": lambda ws, m: None, "backpressure_limit": 0}, ValueError),
    ({"message": lambda ws, m: None, "max_payload_length": -1}, ValueError),
    ({"message": lambda ws, m: None, "idle_timeout": "10"}, TypeError),
    ({"message": lambda ws, m: None, "idle_timeout": float("nan")}, ValueError),
    ({"message": lambda ws, m: None, "idle_timeout": float("inf")}, ValueError),
])
def test_bad_websocket_options_are_refused(spec: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        syncws.serve(websocket=spec, port=0, hostname="127.0.0.1")


@pytest.mark.parametrize("fetch, spec, named", [
    (None, {"message": lambda ws: None}, "'message' must take (ws, message), not (ws)"),
    (None, {"message": lambda ws, m: None, "close": lambda ws: None},
     "'close' must take (ws, code, reason)"),
    (None, {"message": lambda ws, m: None, "error": lambda ws, exc, extra: None}, "'error'"),
    (lambda req: None, {"message": lambda ws, m: None}, "fetch must take (req, server)"),
])
def test_handlers_that_cannot_take_their_arguments_are_refused_at_serve(
        fetch: Any, spec: dict[str, Any], named: str) -> None:
    # Not a failure on every message later (a JavaScript habit: message(ws) alone).
    with pytest.raises(TypeError, match=re.escape(named)):
        syncws.serve(fetch, websocket=spec, port=0, hostname="127.0.0.1")


def test_handlers_with_defaults_varargs_or_no_signature_are_accepted(make_server: Any) -> None:
    import functools

    got: list[Any] = []

    def with_db(fn: Any) -> Any:  # a decorator that hands the handler one more argument
        @functools.wraps(fn)
        def wrapper(ws: Any, message: Any) -> Any:
            return fn(ws, message, "db")
        return wrapper

    @with_db
    def on_message(ws: Any, message: Any, db: str) -> None:
        got.append((message, db))

    server = make_server(websocket={"message": on_message, "close": lambda *args: None,
                                    "open": lambda ws, greeting="hi": None, "drain": print})
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("x")
        wait_for(lambda: got == [("x", "db")], message="the message handler ran")


@pytest.mark.parametrize("kwargs, error, named", [
    ({"port": -1}, ValueError, "port"),
    ({"port": 65536}, ValueError, "port"),
    ({"port": "80"}, TypeError, "port"),
    ({"hostname": 1}, TypeError, "hostname"),
    ({"max_request_body_size": -1}, ValueError, "max_request_body_size"),
    ({"max_request_body_size": "1MB"}, TypeError, "max_request_body_size"),
    ({"request_timeout": float("nan")}, ValueError, "request_timeout"),
    ({"request_timeout": float("inf")}, ValueError, "request_timeout"),
    ({"request_timeout": True}, TypeError, "request_timeout"),
    ({"workers": True}, TypeError, "workers"),
    ({"workers": "2"}, TypeError, "workers"),
    ({"workers": 0}, ValueError, "workers"),
    ({"max_connections": True}, TypeError, "max_connections"),
    ({"reuse_port": "no"}, TypeError, "reuse_port"),
    ({"bridge": 5}, TypeError, "bridge"),
])
def test_bad_serve_arguments_are_refused_by_name(kwargs: dict[str, Any], error: type,
                                                 named: str) -> None:
    kwargs = {"hostname": "127.0.0.1", "port": 0, **kwargs}
    with pytest.raises(error, match=named):
        syncws.serve(**kwargs)


def test_a_port_in_use_is_named_in_the_error(make_server: Any) -> None:
    first = make_server(echo_fetch, {"message": lambda ws, m: None})
    with pytest.raises(OSError) as info:
        make_server(echo_fetch, {"message": lambda ws, m: None}, port=first.port)
    assert info.value.errno == errno.EADDRINUSE
    assert f"cannot listen on 127.0.0.1:{first.port}" in str(info.value)
    # The first server is untouched by the second one's failure.
    with connect(f"ws://127.0.0.1:{first.port}/") as client:
        client.ping().wait(wait(5))


@pytest.mark.parametrize("headers, error", [
    (5, TypeError),
    ({"X-A": "a\r\nSet-Cookie: evil=1"}, ValueError),
    ({"Bad Name": "x"}, ValueError),
    ([("X-A",)], TypeError),
])
def test_bad_response_and_upgrade_headers_are_refused(make_server: Any, headers: Any,
                                                      error: type) -> None:
    with pytest.raises(error, match="headers"):
        syncws.Response("x", headers=headers)
    raised: list[BaseException] = []

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response | None:
        try:
            server.upgrade(req, headers=headers)
        except (TypeError, ValueError) as exc:
            raised.append(exc)
        return syncws.Response("refused", status=400)

    server = make_server(fetch, websocket={"message": lambda ws, m: None})
    client = RawClient(server.port)
    assert client.status == 400  # the fetch went on; nothing reached the wire
    assert len(raised) == 1 and isinstance(raised[0], error)
    client.close()


def test_async_handlers_and_fetch_are_refused() -> None:
    async def message(ws: Any, msg: Any) -> None:
        pass

    async def fetch(req: Any, server: Any) -> None:
        pass

    with pytest.raises(TypeError, match="async"):
        syncws.serve(websocket={"message": message}, port=0, hostname="127.0.0.1")
    # Bun's fetch is often async; here it would be a coroutine nobody awaits, then a 500.
    with pytest.raises(TypeError, match="fetch is async def"):
        syncws.serve(fetch=fetch, port=0, hostname="127.0.0.1")


def test_fetch_exception_gives_500_and_server_keeps_serving(make_server: Any) -> None:
    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response:
        if req.path == "/boom":
            server.upgrade(req)
            raise RuntimeError("boom")
        return syncws.Response("fine")

    server = make_server(fetch, {"message": lambda ws, m: None})
    client = RawClient(server.port, path="/boom")
    assert client.status == 500
    client.close()
    assert http_get(server.port, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                    ).endswith(b"fine")


def test_keep_alive_content_length_chunked_and_100_continue(make_server: Any) -> None:
    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response:
        return syncws.Response.json({"method": req.method, "body": req.text()})

    server = make_server(fetch)
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait(5)) as sock:
        sock.sendall(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert first.endswith(b'{"method": "POST", "body": "hello"}')
        sock.sendall(b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert sock.recv(65536).endswith(b'"body": "abcde"}')
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"ok")
        assert sock.recv(65536).endswith(b'"body": "ok"}')
        # Not UTF-8: replaced, as Bun's req.text() does, not a 500.
        sock.sendall(b"POST /d HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\ncaf\xff")
        assert sock.recv(65536).endswith(b'"body": "caf\\ufffd"}')


def test_bad_requests_get_400_431_414_413(make_server: Any) -> None:
    server = make_server(lambda req, server: syncws.Response("fine"),
                         max_request_body_size=1000)
    assert http_get(server.port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    big = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n"
    assert http_get(server.port, big).startswith(b"HTTP/1.1 431 ")
    long_url = b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    assert http_get(server.port, long_url).startswith(b"HTTP/1.1 414 ")
    # Bare LF line ends (h11 takes them), and a head that never ends.
    bare_lf = b"GET / HTTP/1.1\nHost: h\nX-Big: " + b"a" * 65536
    assert http_get(server.port, bare_lf).startswith(b"HTTP/1.1 431 ")
    assert http_get(server.port, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n"
                    ).startswith(b"HTTP/1.1 413 ")
    chunked = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n")
    assert http_get(server.port, chunked).startswith(b"HTTP/1.1 413 ")
    assert http_get(server.port, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                    ).endswith(b"fine")


def test_stalled_request_is_dropped_while_others_are_served(make_server: Any) -> None:
    server = make_server(lambda req, server: syncws.Response("fine"), request_timeout=0.5)
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=wait(5))
    stalled.sendall(b"GET / HTTP/1.1\r\nHost: ")
    started = time.monotonic()
    assert http_get(server.port, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                    ).endswith(b"fine")
    assert stalled.recv(100) == b""
    assert time.monotonic() - started < wait(3)
    stalled.close()


BIG_BODY = bytes(range(256)) * (16 * 1024)  # 4 MiB: far more than the socket buffers


@pytest.mark.parametrize("request_head", [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
], ids=["keep-alive", "connection-close"])
def test_client_that_stops_reading_a_response_is_dropped(make_server: Any,
                                                         request_head: bytes) -> None:
    server = make_server(lambda req, server: syncws.Response(BIG_BODY), request_timeout=0.5)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", server.port))
    stuck.sendall(request_head)
    wait_for(lambda: server.stats()["connections"] == 1, message="accepted")
    wait_for(lambda: server.stats()["connections"] == 0, timeout=wait(5),
             message="the stuck connection dropped")
    stuck.close()


def test_slow_reader_gets_a_response_that_outlasts_the_request_timeout(
        make_server: Any) -> None:
    """request_timeout is about a client that stops, not one that is slow."""
    server = make_server(lambda req, server: syncws.Response(BIG_BODY), request_timeout=0.5)
    with socket.socket() as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        slow.settimeout(wait(5))
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        received = b""
        started = time.monotonic()
        while not received.endswith(BIG_BODY[-4096:]) or len(received) < len(BIG_BODY):
            chunk = slow.recv(256 * 1024)
            assert chunk, f"dropped after {len(received)} bytes"
            received += chunk
            if time.monotonic() - started < 1.5:
                time.sleep(0.01)  # a slow client: the whole read takes over 1.5 s
        assert received.split(b"\r\n\r\n", 1)[1] == BIG_BODY
        assert time.monotonic() - started > 1.5


class Recorder:
    """Records handler calls per connection, thread-safely."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[Any, ...]] = []
        self.closed = threading.Event()

    def spec(self, **extra: Any) -> dict[str, Any]:
        def record(*item: Any) -> None:
            with self.lock:
                self.events.append(item)

        def on_close(ws: Any, code: int, reason: str) -> None:
            record("close", code, reason)
            self.closed.set()

        spec: dict[str, Any] = {
            "open": lambda ws: record("open"),
            "message": lambda ws, m: record("message", m),
            "close": on_close,
        }
        spec.update(extra)
        return spec


def test_order_and_close_code_for_client_close(make_server: Any) -> None:
    rec = Recorder()
    server = make_server(websocket=rec.spec())
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("a")
        client.send("b")
        client.close(4001, "app bye")
    assert rec.closed.wait(wait(5))
    assert rec.events == [("open",), ("message", "a"), ("message", "b"),
                          ("close", 4001, "app bye")]


def close_4000(ws: Any, message: Any) -> None:
    ws.close(4000, "bye")


def close_4000_then_terminate(ws: Any, message: Any) -> None:
    ws.close(4000, "bye")
    ws.terminate()  # ignored, as in Bun: the closing handshake keeps its code and reason


@pytest.mark.parametrize("handler", [close_4000, close_4000_then_terminate],
                         ids=["close", "close-then-terminate"])
def test_close_code_for_server_close(make_server: Any, handler: Any) -> None:
    rec = Recorder()
    server = make_server(websocket=rec.spec(message=handler))
    client = RawClient(server.port)
    client.send_frame(0x1, b"close me")
    assert client.recv_close() == (4000, b"bye")
    client.send_frame(0x8, close_body(4000, b"bye"))
    assert client.at_eof()
    client.close()
    assert rec.closed.wait(wait(5))
    assert rec.events[-1] == ("close", 4000, "bye")
    assert [e for e in rec.events if e[0] == "close"] == [("close", 4000, "bye")]


def test_terminate_drops_the_connection_without_a_close_frame(make_server: Any) -> None:
    rec = Recorder()
    server = make_server(websocket=rec.spec(message=lambda ws, m: ws.terminate()))
    client = RawClient(server.port)
    client.send_frame(0x1, b"go")
    assert client.sock.recv(65536) == b""  # no frame at all, then end of stream
    client.close()
    assert rec.closed.wait(wait(5))
    assert rec.events == [("open",), ("close", 1006, "")]


def test_close_code_for_tcp_drop(make_server: Any) -> None:
    rec = Recorder()
    server = make_server(websocket=rec.spec())
    client = RawClient(server.port)
    client.send_frame(0x1, b"x")
    client.close()
    assert rec.closed.wait(wait(5))
    assert rec.events == [("open",), ("message", "x"), ("close", 1006, "")]


def test_peer_close_is_echoed_with_its_code_and_reason(make_server: Any) -> None:
    """As in Bun: the answer to a peer's close frame carries its code and its reason."""
    rec = Recorder()
    server = make_server(websocket=rec.spec())
    client = RawClient(server.port)
    client.send_frame(0x8, close_body(4001, "see you, é".encode()))
    assert client.recv_close() == (4001, "see you, é".encode())
    assert rec.closed.wait(wait(5))
    assert rec.events[-1] == ("close", 4001, "see you, é")
    client.close()


def test_stop_closes_with_1001_and_waits_for_close_handlers(make_server: Any) -> None:
    rec = Recorder()
    server = make_server(websocket=rec.spec())
    client = RawClient(server.port)
    client.send_frame(0x1, b"x")
    wait_for(lambda: len(rec.events) == 2, message="message handled")

    def answer() -> None:
        code, reason = client.recv_close()
        assert (code, reason) == (1001, b"Server closed")
        client.send_frame(0x8, close_body(1001))

    answerer = threading.Thread(target=answer)
    answerer.start()
    server.stop(close_active_connections=True, timeout=wait(5))
    answerer.join(wait(5))
    client.close()
    assert rec.events[-1] == ("close", 1001, "Server closed")
    assert server.pending_websockets == 0


def test_stop_closing_all_answers_a_fetch_still_running_then_closes(make_server: Any) -> None:
    """A fetch running at stop(True): its answer goes out with Connection: close, an
    upgrade gets 503 (no WebSocket opens after the stop), and stop() waits for both."""
    entered, release = threading.Barrier(3), threading.Event()
    opened: list[Any] = []

    def fetch(req: syncws.Request, server: Any) -> syncws.Response | None:
        entered.wait(wait(5))
        release.wait(wait(10))
        if req.path == "/ws" and server.upgrade(req):
            return None
        return syncws.Response("late answer")

    server = make_server(fetch, {"open": opened.append, "message": lambda ws, m: None})
    plain = socket.create_connection(("127.0.0.1", server.port), timeout=wait(5))
    plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    upgrade = socket.create_connection(("127.0.0.1", server.port), timeout=wait(5))
    upgrade.sendall(handshake_request("/ws"))
    entered.wait(wait(5))  # both fetches are running
    stopper = threading.Thread(target=server.stop, args=(True, wait(10)))
    stopper.start()
    stopper.join(0.3)
    assert stopper.is_alive(), "stop(True) returned while fetch was still running"
    release.set()
    stopper.join(wait(10))
    assert not stopper.is_alive()

    def reply(sock: socket.socket) -> bytes:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        sock.close()
        return data  # the whole reply, then the server closed the connection

    answer = reply(plain)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"late answer")
    assert b"connection: close" in answer.lower()
    assert reply(upgrade).startswith(b"HTTP/1.1 503 ")
    assert opened == [] and server.pending_websockets == 0


def test_messages_before_close_are_delivered_first(make_server: Any) -> None:
    def on_message(ws: Any, msg: Any) -> None:
        for i in range(100):
            ws.send(f"m{i}")
        ws.close(1000, "done")

    server = make_server(websocket={"message": on_message})
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("go")
        got = [client.recv(timeout=wait(5)) for _ in range(100)]
        with pytest.raises(PeerClosed) as info:
            client.recv(timeout=wait(5))
    assert got == [f"m{i}" for i in range(100)]
    assert info.value.rcvd is not None and info.value.rcvd.code == 1000


@pytest.mark.parametrize("code, reason", [(1005, ""), (999, ""), (1006, ""), (5000, ""),
                                          (1000, "x" * 124), (2999, "")])
def test_close_argument_checks(make_server: Any, code: int, reason: str) -> None:
    errors: list[BaseException] = []

    def on_message(ws: Any, msg: Any) -> None:
        try:
            ws.close(code, reason)
        except ValueError as exc:
            errors.append(exc)
        ws.send("still open")

    server = make_server(websocket={"message": on_message})
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("x")
        assert client.recv(timeout=wait(5)) == "still open"
    assert len(errors) == 1


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a client that crashes or gives up does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_client_gone_during_fetch_gets_open_then_close(make_server: Any) -> None:
    """The 101 finds the peer gone: open still runs first, then close, and the frame
    that came behind the request is not handled on the dead socket."""
    events: list[str] = []
    closed, gate = threading.Event(), threading.Event()

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        gate.wait(wait(5))  # (an authentication lookup, say) while the client gives up
        server.upgrade(req)

    server = make_server(fetch, {"open": lambda ws: events.append("open"),
                                 "message": lambda ws, m: events.append(f"message {m}"),
                                 "close": lambda ws, c, r: (events.append(f"close {c}"),
                                                            closed.set())})
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(handshake_request() + bytes([0x81, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2]))
    wait_for(lambda: server.pending_requests == 1, message="fetch running")
    reset(sock)
    gate.set()
    assert closed.wait(wait(5))
    wait_for(lambda: server.pending_websockets == 0, message="nothing left open")
    assert events == ["open", "close 1006"]


def send_until(ws: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        ws.send("x" * 100)


def test_sends_racing_a_reset_leave_nothing_buffered(make_server: Any) -> None:
    """Once the close handler ran, send() says 0 and buffered_amount is 0 for good,
    however many threads were sending when the peer went away."""
    opened: list[Any] = []
    closed: list[Any] = []
    server = make_server(websocket={"open": opened.append, "message": lambda ws, m: None,
                                    "close": lambda ws, c, r: closed.append(ws)})
    for round_ in range(40):
        client = socket.create_connection(("127.0.0.1", server.port))
        client.sendall(handshake_request())
        wait_for(lambda n=round_: len(opened) > n, message="open")
        ws = opened[round_]
        stop = threading.Event()
        senders = [threading.Thread(target=send_until, args=(ws, stop)) for _ in range(3)]
        for sender in senders:
            sender.start()
        wait_for(lambda ws=ws: ws.buffered_amount > 0, message="sends queued")
        reset(client)
        wait_for(lambda ws=ws: ws in closed, message="close handler")
        stop.set()
        for sender in senders:
            sender.join()
        assert (ws.send("y"), ws.ready_state, ws.buffered_amount) == (
            0, syncws.ReadyState.CLOSED, 0), round_


def test_slow_handler_on_one_connection_does_not_delay_another(make_server: Any) -> None:
    def on_message(ws: Any, msg: Any) -> None:
        if msg == "sleep":
            time.sleep(1)
        ws.send(msg)

    server = make_server(websocket={"message": on_message})
    with connect(f"ws://127.0.0.1:{server.port}/") as slow, \
            connect(f"ws://127.0.0.1:{server.port}/") as fast:
        slow.send("sleep")
        started = time.monotonic()
        fast.send("quick")
        assert fast.recv(timeout=wait(5)) == "quick"
        assert time.monotonic() - started < 0.9  # before the other handler wakes up
        assert slow.recv(timeout=wait(5)) == "sleep"


def test_many_threads_sending_on_one_connection(make_server: Any) -> None:
    ready = threading.Event()
    sockets: list[Any] = []

    def on_open(ws: Any) -> None:
        sockets.append(ws)
        ready.set()

    server = make_server(websocket={"open": on_open, "message": lambda ws, m: None})
    with connect(f"ws://127.0.0.1:{server.port}/", max_size=None) as client:
        assert ready.wait(wait(5))
        ws = sockets[0]

        def sender(n: int) -> None:
            for i in range(500):
                ws.send(f"{n}:{i}:" + "x" * (i % 50))

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen: dict[int, list[int]] = {n: [] for n in range(8)}
        for _ in range(8 * 500):
            n, i, pad = client.recv(timeout=wait(10)).split(":")
            assert pad == "x" * (int(i) % 50)
            seen[int(n)].append(int(i))
    assert all(order == list(range(500)) for order in seen.values())


def test_raising_handler_closes_1011_and_calls_error(make_server: Any) -> None:
    errors: list[BaseException] = []
    rec = Recorder()

    def on_message(ws: Any, msg: Any) -> None:
        if msg == "boom":
            raise RuntimeError("boom")
        ws.send(msg)

    server = make_server(websocket=rec.spec(message=on_message,
                                            error=lambda ws, exc: errors.append(exc)))
    with connect(f"ws://127.0.0.1:{server.port}/") as other, \
            connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("boom")
        with pytest.raises(PeerClosed) as info:
            client.recv(timeout=wait(5))
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
        other.send("still here")
        assert other.recv(timeout=wait(5)) == "still here"
    assert [type(e) for e in errors] == [RuntimeError]


def test_raising_handler_without_error_handler_is_logged(make_server: Any,
                                                         caplog: Any) -> None:
    def on_message(ws: Any, msg: Any) -> None:
        raise RuntimeError("kaboom")

    server = make_server(websocket={"message": on_message})
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("x")
        with pytest.raises(PeerClosed):
            client.recv(timeout=wait(5))
    wait_for(lambda: "kaboom" in caplog.text, message="traceback logged")


def test_thousand_connections_with_fixed_thread_count(make_server: Any) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)}, workers=4)
    clients = []
    try:
        for _ in range(1000):
            client = RawClient(server.port)
            assert client.status == 101
            clients.append(client)
        for i, client in enumerate(clients):
            client.send_frame(0x1, f"hi {i}".encode())
        for i, client in enumerate(clients):
            assert client.recv_frame() == (0x1, True, 0, f"hi {i}".encode())
        names = [t.name for t in threading.enumerate() if t.name.startswith("syncws-")]
        assert sorted(names) == sorted(["syncws-loop"] + [f"syncws-worker-{i}"
                                                          for i in range(4)])
        assert server.pending_websockets == 1000
    finally:
        for client in clients:
            client.close()


def test_request_ip_and_remote_address(make_server: Any) -> None:
    seen: list[Any] = []

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        seen.append(server.request_ip(req))
        server.upgrade(req)

    server = make_server(fetch, {"message": lambda ws, m: ws.send(ws.remote_address)})
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("?")
        assert client.recv(timeout=wait(5)) == "127.0.0.1"
    assert seen[0].address == "127.0.0.1" and seen[0].family == "IPv4"


def test_state_set_on_ws_itself_gets_an_error_that_points_at_ws_data(make_server: Any) -> None:
    errors: list[BaseException] = []

    def on_open(ws: syncws.ServerWebSocket[Any]) -> None:
        ws.username = "ada"  # type: ignore[attr-defined]  # as other libraries allow

    server = make_server(echo_fetch, {"open": on_open, "message": lambda ws, m: None,
                                      "error": lambda ws, exc: errors.append(exc)})
    with connect(f"ws://127.0.0.1:{server.port}/") as client, pytest.raises(PeerClosed) as info:
        client.recv(timeout=wait(5))
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    (error,) = errors
    assert isinstance(error, AttributeError)
    assert "'username'" in str(error) and "keep per-connection state in ws.data" in str(error)


def test_request_headers_keep_the_clients_spelling_and_match_any_case(make_server: Any) -> None:
    seen: list[syncws.Request] = []

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response:
        seen.append(req)
        return syncws.Response("ok")

    server = make_server(fetch, None)
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait(5)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Trace-ID: 1\r\nx-trace-id: 2\r\n"
                     b"Connection: close\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    (req,) = seen
    assert req.headers.raw_items() == [("Host", "a"), ("X-Trace-ID", "1"),
                                       ("x-trace-id", "2"), ("Connection", "close")]
    assert req.headers["x-trace-id"] == req.headers["X-TRACE-ID"] == "1, 2"
    assert req.headers.get_all("X-Trace-Id") == ["1", "2"]
    assert list(req.headers) == ["host", "x-trace-id", "connection"]


def test_repr_of_ws_shows_its_peer_state_and_a_bounded_part_of_data(make_server: Any) -> None:
    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        server.upgrade(req, data={"user": "ada", "history": "x" * 10_000_000})

    server = make_server(fetch, {"message": lambda ws, m: ws.send(repr(ws))})
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("?")
        text = client.recv(timeout=wait(5))
    # It lands in logs and tracebacks: not 10 MB of session.
    assert text.startswith("<ServerWebSocket 127.0.0.1 OPEN data={")
    assert "'user': 'ada'" in text and "'history': 'xxx" in text
    assert len(text) < 250, len(text)


def test_lone_surrogates_go_out_as_u_fffd_as_in_bun(make_server: Any) -> None:
    import json

    lone = json.loads('"a\\ud83db"')  # a peer's valid JSON can make one

    def on_open(ws: Any) -> None:
        ws.subscribe("room")

    def on_message(ws: Any, msg: Any) -> None:
        ws.send(lone)
        ws.send_text(lone)
        ws.publish("room", lone)  # not to ws itself (publish_to_self is off)
        ws.ping(lone)
        server.publish("room", lone)

    server = make_server(websocket={"open": on_open, "message": on_message})
    with connect(f"ws://127.0.0.1:{server.port}/") as other, \
            connect(f"ws://127.0.0.1:{server.port}/") as sender:
        sender.send("go")  # not a UnicodeEncodeError that closes sender with 1011
        assert [sender.recv(timeout=wait(5)) for _ in range(3)] == ["a\ufffdb"] * 3
        assert [other.recv(timeout=wait(5)) for _ in range(2)] == ["a\ufffdb"] * 2


def test_stop_without_closing_keeps_connections_open(make_server: Any) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)})
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        server.stop()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=wait(2)).close()
        client.send("still")
        assert client.recv(timeout=wait(5)) == "still"


EMFILE_SERVER = """
import resource, syncws
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
server = syncws.serve(websocket={"message": lambda ws, m: ws.send(m)},
                      hostname="127.0.0.1", port=0, workers=2)
print(server.port, flush=True)
server.serve_forever()
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_running_out_of_descriptors_neither_spins_nor_dies() -> None:
    proc = subprocess.Popen([sys.executable, "-c", EMFILE_SERVER], stdout=subprocess.PIPE,
                            text=True)
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        for _ in range(100):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=wait(5)))
        before = cpu_seconds(proc.pid)
        threading.Event().wait(1.0)
        assert cpu_seconds(proc.pid) - before < 0.5  # not spinning on accept()
        for sock in held:
            sock.close()
        held.clear()
        client = RawClient(port, timeout=10)
        client.send_frame(0x1, b"alive")
        assert client.recv_frame() == (0x1, True, 0, b"alive")
        client.close()
        assert proc.poll() is None
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        proc.wait(wait(10))
        if proc.stdout is not None:
            proc.stdout.close()


def test_no_pong_after_our_close_frame(make_server: Any) -> None:
    """RFC 6455 5.5.1: after sending a close frame, an endpoint sends no more frames."""
    server = make_server(websocket={"message": lambda ws, m: ws.close(4000, "bye")})
    client = RawClient(server.port)
    client.send_frame(0x1, b"close me")
    assert client.recv_close() == (4000, b"bye")
    client.send_frame(0x9, b"still there?")
    client.send_frame(0x8, close_body(4000))
    assert client.at_eof(), "a frame followed the server's close frame"
    client.close()


def test_wrong_send_arguments_raise_type_error_and_send_nothing(make_server: Any) -> None:
    outcomes: list[str] = []

    def message(ws: syncws.ServerWebSocket[None], msg: str | bytes) -> None:
        bad_calls = [
            lambda: ws.send(123),  # type: ignore[arg-type]
            lambda: ws.send("x", compress=1),  # type: ignore[arg-type]
            lambda: ws.send(b"x", compress=None),  # type: ignore[arg-type]
            lambda: ws.send_text(b"x"),  # type: ignore[arg-type]
            lambda: ws.send_binary("x"),  # type: ignore[arg-type]
        ]
        for call in bad_calls:
            try:
                call()
                outcomes.append("sent")
            except TypeError:
                outcomes.append("TypeError")
        ws.send("done")

    server = make_server(echo_fetch, {"message": message})
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("go")
        # Nothing reached the wire before "done".
        assert client.recv(timeout=wait(5)) == "done"
    assert outcomes == ["TypeError"] * 5


def test_closed_connections_are_freed_once_their_close_handlers_ran(
        make_server: Any, no_cyclic_gc: None) -> None:
    import weakref

    class Session:  # ws.data: a user's session, a cache...
        pass

    refs: list[weakref.ref[Any]] = []
    closed: list[int] = []

    def on_open(ws: Any) -> None:
        refs.append(weakref.ref(ws))
        refs.append(weakref.ref(ws.data))

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> None:
        server.upgrade(req, data=Session())

    server = make_server(fetch, websocket={"open": on_open, "message": lambda ws, m: ws.send(m),
                                           "close": lambda ws, code, reason: closed.append(code),
                                           "idle_timeout": 120})
    count = 300
    for _ in range(count):
        client = RawClient(server.port)
        client.send_frame(0x1, b"hi")
        assert client.recv_frame() == (0x1, True, 0, b"hi")
        client.send_frame(0x8, close_body(1000))
        assert client.recv_close()[0] == 1000
        client.close()
    wait_for(lambda: len(closed) == count, message="every close handler ran")
    # Freed by reference counting, with no cyclic collection: not kept until the
    # idle deadline (60 s away), which held a minute's worth of connections, nor
    # by the idle workers' last tasks (a fetch's request), nor by a cycle.
    wait_for(lambda: sum(ref() is not None for ref in refs) == 0,
             message="every closed connection and its ws.data freed")


@pytest.mark.parametrize("kwargs, error, named", [
    ({"close_active_connections": "no"}, TypeError, "close_active_connections"),
    ({"timeout": None}, TypeError, "timeout"),
    ({"timeout": "5"}, TypeError, "timeout"),
    ({"timeout": -1}, ValueError, "timeout"),
    ({"timeout": float("nan")}, ValueError, "timeout"),
])
def test_bad_stop_arguments_are_refused_before_anything_stops(
        make_server: Any, kwargs: dict[str, Any], error: type, named: str) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)})
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        with pytest.raises(error, match=named):
            server.stop(**kwargs)
        client.send("still here")  # neither the connection nor the listener was touched
        assert client.recv(timeout=wait(5)) == "still here"
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        client.send("new")
        assert client.recv(timeout=wait(5)) == "new"

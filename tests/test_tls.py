"""wss:// and https:// on the server (issue 6): the handshake runs inside the loop."""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from typing import Any

import pytest
import trustme
from conftest import wait, wait_for
from websockets.sync.client import connect as peer_connect

import syncws


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(certfile)
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(certfile, append=True)
    cert.private_key_pem.write_to_path(keyfile)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    # python-websockets' sync client reads in a thread of its own while its
    # caller writes the upgrade request; over TLS 1.3 that reader can be busy
    # with the server's session tickets right then, and the request is lost
    # (4 of 200 connects under load, against its own server too; none of
    # 2,000 with TLS 1.2, whose tickets come inside the handshake). syncws'
    # own client covers TLS 1.3 (0 of 2,000).
    peer_client = ssl.create_default_context()
    ca.configure_trust(peer_client)
    peer_client.maximum_version = ssl.TLSVersion.TLSv1_2
    ca_file = folder / "ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    # A client that presents a certificate the CA signed (mutual TLS).
    with_cert = ssl.create_default_context()
    ca.configure_trust(with_cert)
    ca.issue_cert("client@example.com").configure_cert(with_cert)
    return {"certfile": str(certfile), "keyfile": str(keyfile), "client": client,
            "peer_client": peer_client,
            "ca": str(ca_file), "client_with_cert": with_cert}


def test_python_websockets_client_echoes_over_wss(make_server: Any,
                                                  certs: dict[str, Any]) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)},
                         tls={"certfile": certs["certfile"], "keyfile": certs["keyfile"]})
    assert server.url.startswith("https://")
    big = b"x" * (3 * 1024 * 1024)
    with peer_connect(f"wss://127.0.0.1:{server.port}/", ssl=certs["peer_client"],
                      max_size=None) as client:
        client.send("hello")
        assert client.recv(timeout=wait(5)) == "hello"
        client.send(big)  # many TLS records each way, partial writes included
        assert client.recv(timeout=wait(10)) == big


def test_syncws_client_over_wss_and_https_fetch(make_server: Any,
                                                certs: dict[str, Any]) -> None:
    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response | None:
        if server.upgrade(req):
            return None
        return syncws.Response(f"plain {req.url}")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs["certfile"], certs["keyfile"])
    server = make_server(fetch, {"message": lambda ws, m: ws.send(f"got {m}")}, tls=context)
    with syncws.connect(f"wss://127.0.0.1:{server.port}/", ssl=certs["client"]) as client:
        client.send("hi")
        assert client.recv(timeout=wait(5)) == "got hi"
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=wait(5))
    with certs["client"].wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock:
        tls_sock.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := tls_sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert reply.endswith(b"plain https://h/x")


def test_silent_tcp_client_does_not_delay_others_and_is_dropped(
        make_server: Any, certs: dict[str, Any]) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)},
                         tls={"certfile": certs["certfile"], "keyfile": certs["keyfile"]},
                         request_timeout=1.0)
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=wait(5))
    half = socket.create_connection(("127.0.0.1", server.port), timeout=wait(5))
    half.sendall(b"\x16\x03\x01\x00\xff")  # the start of a ClientHello, then nothing
    started = time.monotonic()
    with peer_connect(f"wss://127.0.0.1:{server.port}/", ssl=certs["peer_client"]) as client:
        client.send("quick")
        assert client.recv(timeout=wait(5)) == "quick"
    assert time.monotonic() - started < 1.0
    assert silent.recv(100) == b""  # dropped after request_timeout
    assert half.recv(100) == b""
    silent.close()
    half.close()


def test_untrusted_certificate_is_refused_by_default(make_server: Any,
                                                     certs: dict[str, Any]) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)},
                         tls={"certfile": certs["certfile"], "keyfile": certs["keyfile"]})
    with pytest.raises(ssl.SSLCertVerificationError):
        syncws.connect(f"wss://127.0.0.1:{server.port}/", timeout=wait(5))


def test_bad_tls_option_is_refused() -> None:
    with pytest.raises(TypeError):
        syncws.serve(websocket={"message": lambda ws, m: None}, port=0,
                     hostname="127.0.0.1", tls={"cert": "x"})


def test_peers_gone_before_accept_leave_no_count_behind(
        make_server: Any, certs: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """A port scan's connect and reset: wrapping such a socket fails, and the slot it
    took under max_connections must come back (it locked wss clients out for good)."""
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)},
                         tls={"certfile": certs["certfile"], "keyfile": certs["keyfile"]},
                         max_connections=5)
    hold, release = threading.Event(), threading.Event()

    def block_loop() -> None:  # the loop accepts nothing until the resets are in
        hold.set()
        release.wait(wait(10))

    server._loop.call_soon_threadsafe(block_loop)
    assert hold.wait(wait(5))
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=wait(5))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    release.set()
    wait_for(lambda: server.stats()["connections"] == 0, message="no connection counted")
    with syncws.connect(f"wss://127.0.0.1:{server.port}/", ssl=certs["client"]) as client:
        client.send("still in")
        assert client.recv(timeout=wait(5)) == "still in"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_paused_wss_connection_whose_peer_resets_is_closed(make_server: Any,
                                                             certs: dict[str, Any]) -> None:
    """The idle tick peeks under TLS too: the paused socket's gone peer is noticed."""
    opened: list[Any] = []
    closes: list[tuple[int, str]] = []
    closed = threading.Event()

    def on_close(ws: Any, code: int, reason: str) -> None:
        closes.append((code, reason))
        closed.set()

    server = make_server(websocket={"open": opened.append, "message": lambda ws, m: None,
                                    "close": on_close, "idle_timeout": 1, "send_pings": False},
                         tls={"certfile": certs["certfile"], "keyfile": certs["keyfile"]})
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=wait(5))
    with certs["client"].wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock:
        tls_sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        assert tls_sock.recv(65536).startswith(b"HTTP/1.1 101 ")
        wait_for(lambda: bool(opened), message="open")
        opened[0].pause()
        paused = threading.Event()  # the loop has stopped reading before the reset
        server._loop.call_soon_threadsafe(paused.set)
        assert paused.wait(wait(5))
        tls_sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert closed.wait(wait(5))
    assert closes == [(1006, "")]


def test_over_max_connections_a_tls_client_gets_no_cleartext(
        make_server: Any, certs: dict[str, Any]) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)},
                         tls={"certfile": certs["certfile"], "keyfile": certs["keyfile"]},
                         max_connections=1)
    with syncws.connect(f"wss://127.0.0.1:{server.port}/", ssl=certs["client"]):
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=wait(5))
        try:
            received = raw.recv(100)
        except ConnectionResetError:
            received = b""
        finally:
            raw.close()
        # A cleartext "HTTP/1.1 503" would reach a TLS client as garbage.
        assert received == b""


@pytest.mark.parametrize("kind", ["client context", "no certificate"])
def test_an_ssl_context_that_cannot_serve_is_refused_at_serve(kind: str) -> None:
    if kind == "client context":
        context = ssl.create_default_context()  # Purpose.SERVER_AUTH: for clients
        match = "cannot serve"
    else:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        match = "certificate loaded"
    with pytest.raises(ValueError, match=match):
        syncws.serve(websocket={"message": lambda ws, m: None}, port=0,
                     hostname="127.0.0.1", tls=context)


def test_a_context_that_picks_its_certificate_by_server_name_is_accepted(
        make_server: Any, certs: dict[str, Any]) -> None:
    chosen = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    chosen.load_cert_chain(certs["certfile"], certs["keyfile"])

    def pick(sock: Any, name: str | None, context: ssl.SSLContext) -> None:
        if name == "localhost":
            sock.context = chosen

    base = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # no certificate of its own
    base.sni_callback = pick
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)}, tls=base)
    with syncws.connect(f"wss://localhost:{server.port}/", ssl=certs["client"]) as client:
        client.send("by name")
        assert client.recv(timeout=wait(5)) == "by name"


def test_ca_certs_lets_in_only_clients_with_a_certificate_it_signed(
        make_server: Any, certs: dict[str, Any]) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)},
                         tls={"certfile": certs["certfile"], "keyfile": certs["keyfile"],
                              "ca_certs": certs["ca"]})
    url = f"wss://127.0.0.1:{server.port}/"
    with syncws.connect(url, ssl=certs["client_with_cert"]) as client:
        client.send("mutual")
        assert client.recv(timeout=wait(5)) == "mutual"
    with pytest.raises((ssl.SSLError, syncws.HandshakeError, ConnectionError)), \
            syncws.connect(url, ssl=certs["client"], timeout=wait(5)) as client:
        client.send("no certificate")  # TLS 1.3 may report the refusal only here
        client.recv(timeout=wait(5))

"""wss:// and https:// on the server (issue 6): the handshake runs inside the loop."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import pytest
import trustme
from conftest import wait
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
    return {"certfile": str(certfile), "keyfile": str(keyfile), "client": client}


def test_python_websockets_client_echoes_over_wss(make_server: Any,
                                                  certs: dict[str, Any]) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)},
                         tls={"certfile": certs["certfile"], "keyfile": certs["keyfile"]})
    assert server.url.startswith("https://")
    big = b"x" * (3 * 1024 * 1024)
    with peer_connect(f"wss://127.0.0.1:{server.port}/", ssl=certs["client"],
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
    with peer_connect(f"wss://127.0.0.1:{server.port}/", ssl=certs["client"]) as client:
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

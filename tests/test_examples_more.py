"""The issue-7 examples and ``python3 -m syncws demo``, started and driven by real clients.

Examples that need Flask or Django skip when it is missing, except in CI
(CI=true), where a missing one is a failure.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import wait
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus
from websockets.sync.client import connect

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
Reply = tuple[int, http.client.HTTPMessage, bytes]


def require(module: str) -> Any:
    """Import ``module``; skip without it, but fail in CI."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)


@contextlib.contextmanager
def running(*args: str) -> Iterator[str]:
    """Run ``python args... `` until its "Listening on URL" line; yield the URL."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Listening on "), line
        yield line.split()[-1].rstrip("/")
    finally:
        proc.terminate()
        try:
            code = proc.wait(wait(10))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
        assert code == 0  # SIGTERM stops it gracefully


def http_request(url: str, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> Reply:
    host, port = url.split("://")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=wait(10))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://", 1)


# -- Configuration ----------------------------------------------------------------------


def test_configuration_example() -> None:
    with running(str(EXAMPLES / "configuration.py"), "0") as url:
        assert url.startswith("ws://")
        with connect(url, max_size=None) as ws:
            # per_message_deflate=True: the client's offer was accepted.
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            ws.send("hello")
            assert ws.recv(timeout=wait(5)) == "hello"
            ws.send(b"\x00\x01" * 1000)
            assert ws.recv(timeout=wait(5)) == b"\x00\x01" * 1000
            # max_payload_length=16 MiB, inclusive: one byte more closes with 1009.
            ws.send(bytes(16 * 1024 * 1024 + 1))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=wait(10))
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


# -- Backpressure ----------------------------------------------------------------------


def test_backpressure_example_pauses_and_resumes_on_drain() -> None:
    count = 256  # 16 MiB of 64 KiB messages, against a 256 KiB backpressure limit
    with running(str(EXAMPLES / "backpressure.py"), "0") as url, \
            connect(f"{url}/?count={count}", max_queue=4) as ws:
        for index in range(count):
            message = ws.recv(timeout=wait(10))
            assert isinstance(message, bytes) and len(message) == 64 * 1024
            assert int.from_bytes(message[:4], "big") == index  # none lost, none repeated
        done = ws.recv(timeout=wait(10))
        assert isinstance(done, str)
        assert done.startswith(f"done: {count} messages, ")
        pauses = int(done.split(", ")[1].split()[0])
        assert pauses >= 1  # send() returned -1 at least once; drain resumed the producer
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=wait(5))


# -- Flask and Django chats -------------------------------------------------------------------


@pytest.mark.parametrize("example, framework", [
    ("flask_chat.py", "flask"),
    ("django_chat.py", "django"),
])
def test_framework_chat_example(example: str, framework: str) -> None:
    require(framework)
    with running(str(EXAMPLES / example), "0") as url:
        assert url.startswith("http://")
        origin = url
        status, headers, body = http_request(url, "GET", "/")
        assert status == 200 and b"<script>" in body
        assert headers["Content-Type"].startswith("text/html")
        # The name goes into the framework's session cookie.
        status, headers, _ = http_request(url, "POST", "/login", b"name=ada",
                                          {**FORM, "Origin": origin})
        assert status in (302, 303) and headers["Location"].endswith("/")
        cookie = headers["Set-Cookie"].split(";")[0]
        chat = ws_url(url) + "/ws"
        with connect(chat, origin=origin,
                     additional_headers={"Cookie": cookie}) as ada:
            assert ada.recv(timeout=wait(5)) == "ada joined"  # from the session
            with connect(chat + "?name=bob", origin=origin) as bob:
                assert bob.recv(timeout=wait(5)) == "bob joined"
                assert ada.recv(timeout=wait(5)) == "bob joined"
                bob.send("hi all")
                assert ada.recv(timeout=wait(5)) == "bob: hi all"
                assert bob.recv(timeout=wait(5)) == "bob: hi all"
                # A view of the framework publishes to the room.
                status, _, body = http_request(url, "POST", "/announce",
                                               urlencode({"text": "tea time"}).encode(),
                                               {**FORM, "Origin": origin})
                assert status == 200 and json.loads(body) == {"subscribers": 2}
                assert ada.recv(timeout=wait(5)) == "announcement: tea time"
                assert bob.recv(timeout=wait(5)) == "announcement: tea time"
                # Another site's page cannot post with the user's cookie (ada's next
                # message below shows that nothing was published).
                for path, form in (("/announce", "text=evil"), ("/login", "name=evil")):
                    status, _, _ = http_request(url, "POST", path, form.encode(),
                                                {**FORM, "Origin": "http://evil.example",
                                                 "Cookie": cookie})
                    assert status == 403, path
            assert ada.recv(timeout=wait(5)) == "bob left"
        # A page of another site cannot open the socket with the user's cookie.
        with pytest.raises(InvalidStatus) as refused, \
                connect(chat, origin="http://evil.example",
                        additional_headers={"Cookie": cookie}):
            pass
        assert refused.value.response.status_code == 403


# -- python3 -m syncws demo ------------------------------------------------------------------------


def test_demo_command_serves_the_page_and_the_chat() -> None:
    with running("-m", "syncws", "demo", "--port", "0") as url:
        assert url.startswith("http://127.0.0.1:")
        status, headers, body = http_request(url, "GET", "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b"new WebSocket(" in body and b"textContent" in body
        assert http_request(url, "GET", "/nowhere")[0] == 404
        assert http_request(url, "GET", "/ws")[0] == 400
        with connect(ws_url(url) + "/ws?name=ada") as ada:
            assert ada.recv(timeout=wait(5)) == "ada joined"
            with connect(ws_url(url) + "/ws?name=%20grace%20%20hopper") as grace:
                assert grace.recv(timeout=wait(5)) == "grace hopper joined"
                assert ada.recv(timeout=wait(5)) == "grace hopper joined"
                grace.send("hello")
                assert ada.recv(timeout=wait(5)) == "grace hopper: hello"
                assert grace.recv(timeout=wait(5)) == "grace hopper: hello"
            assert ada.recv(timeout=wait(5)) == "grace hopper left"


@pytest.mark.parametrize("flag", [["--no-deflate"], ["--max-payload-length", "100000"]])
def test_demo_command_refuses_echo_only_flags(flag: list[str]) -> None:
    """The chat has its own limits: a flag it would ignore is an error, not a surprise."""
    result = subprocess.run([sys.executable, "-m", "syncws", "demo", "--port", "0", *flag],
                            capture_output=True, text=True, timeout=wait(20))
    assert result.returncode == 2
    assert "apply to echo only" in result.stderr

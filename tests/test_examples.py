"""Every example starts and does what its section of the docs teaches."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RawClient, wait
from websockets.sync.client import connect

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@contextlib.contextmanager
def run_example(name: str) -> Iterator[str]:
    """Start examples/<name> on a free port; yield its ws:// URL."""
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / name), "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Listening on ws://"), line
        yield line.split()[-1]
    finally:
        proc.terminate()
        assert proc.wait(wait(10)) == 0  # SIGTERM stops it gracefully
        if proc.stdout is not None:
            proc.stdout.close()


def test_echo_example() -> None:
    with run_example("echo.py") as url, connect(url) as client:
        client.send("hello")
        assert client.recv(timeout=wait(5)) == "Echo: hello"


def test_upgrade_with_data_example() -> None:
    with run_example("upgrade_with_data.py") as url, \
            connect(url + "/?user=ada") as client:
        assert client.response.headers["Set-Cookie"] == "session=abc123"
        client.send("hi")
        assert client.recv(timeout=wait(5)) == "ada said hi"


def test_typed_data_example() -> None:
    with run_example("typed_data.py") as url, \
            connect(url + "/?user=ada&room=lab") as client:
        client.send("hi")
        assert client.recv(timeout=wait(5)) == "ada@lab: hi"


def test_pubsub_example() -> None:
    with run_example("pubsub.py") as url, connect(url) as first, connect(url) as second:
        assert first.recv(timeout=wait(5)) == "New user joined!"
        second.send("hello room")
        assert first.recv(timeout=wait(5)) == "hello room"
        with pytest.raises(TimeoutError):
            second.recv(timeout=0.2)


def test_chat_example() -> None:
    with run_example("chat.py") as url, connect(url + "/?name=ada") as ada:
        assert ada.recv(timeout=wait(5)) == "ada joined"
        with connect(url + "/?name=bob") as bob:
            assert ada.recv(timeout=wait(5)) == "bob joined"
            bob.send("hi all")
            assert ada.recv(timeout=wait(5)) == "bob: hi all"
        assert ada.recv(timeout=wait(5)) == "bob left"


def test_compression_example_compresses_on_request() -> None:
    with run_example("per_message_deflate.py") as url:
        port = int(url.rsplit(":", 1)[1])
        client = RawClient(port, extra="Sec-WebSocket-Extensions: permessage-deflate\r\n")
        try:
            assert "permessage-deflate" in (client.header("Sec-WebSocket-Extensions") or "")
            client.send_frame(0x1, b"big")
            opcode, fin, rsv, payload = client.recv_frame()
            assert (opcode, fin, rsv) == (0x1, True, 0b100)  # RSV1: compressed
            text = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff").decode()
            assert text.startswith("line 0: all systems nominal") and text.count("\n") == 1999
            assert len(payload) < len(text) // 10
            client.send_frame(0x1, b"small")
            assert client.recv_frame() == (0x1, True, 0, b"small")
        finally:
            client.close()


def test_cli_echo_is_verbatim() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "syncws", "echo", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Listening on ws://127.0.0.1:"), line
        with connect(line.split()[-1], max_size=None) as client:
            for message in ("text stays text", "", "é" * 1000, b"\x00\xff" * 40000, b""):
                client.send(message)
                assert client.recv(timeout=wait(5)) == message
    finally:
        proc.terminate()
        assert proc.wait(wait(10)) == 0
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("mode", ["echo", "demo"])
def test_cli_on_a_port_in_use_says_so_in_one_line(mode: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "syncws", mode, "--port", str(port)],
                                capture_output=True, text=True, timeout=wait(30))
    assert result.returncode == 1
    assert result.stderr.startswith("python3 -m syncws: error: "), result.stderr
    assert f"cannot listen on 127.0.0.1:{port} (is another server" in result.stderr
    assert result.stderr.count("\n") == 1  # no traceback


def test_cli_echo_drops_no_echo_for_a_client_that_reads_late() -> None:
    # Past the backpressure limit the echo server stops reading that client
    # until its echoes are out, rather than dropping them (send's 0).
    proc = subprocess.Popen([sys.executable, "-m", "syncws", "echo", "--port", "0",
                             "--no-deflate", "--max-payload-length", "65536"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Listening on ws://127.0.0.1:"), line
        count = 120
        with connect(line.split()[-1], max_size=None, compression=None) as client:
            sender = threading.Thread(target=lambda: [
                client.send(i.to_bytes(2, "big") + b"x" * 65534) for i in range(count)])
            sender.start()  # 7.5 MiB before reading anything
            sender.join(wait(20))
            got = [client.recv(timeout=wait(10))[:2] for _ in range(count)]
        assert got == [i.to_bytes(2, "big") for i in range(count)]
    finally:
        proc.terminate()
        assert proc.wait(wait(10)) == 0
        if proc.stdout is not None:
            proc.stdout.close()


# Standard-library modules newer than some Python that syncws supports: the
# running Python's sys.stdlib_module_names does not list them yet.
NEWER_STDLIB = {"annotationlib", "compression", "profiling"}  # 3.14, 3.14, 3.15


def test_no_example_shadows_a_standard_library_module() -> None:
    """``python examples/X.py`` puts examples/ first on sys.path.

    An example named like a stdlib module replaces it for every example:
    ``compression.py`` broke ``import gzip`` (Django imports it) on Python 3.14+.
    """
    stdlib = set(sys.stdlib_module_names) | NEWER_STDLIB
    clashes = sorted(path.name for path in EXAMPLES.glob("*.py") if path.stem in stdlib)
    assert clashes == []

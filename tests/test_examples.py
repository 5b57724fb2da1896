"""Every example starts and does what its section of the docs teaches."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait
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

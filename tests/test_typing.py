"""What users' type checkers see: ``mypy --strict`` on code written as the docs show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = '''
from collections.abc import Callable
from dataclasses import dataclass

from typing_extensions import assert_type

import syncws


@dataclass
class User:
    name: str


def fetch(req: syncws.Request, server: syncws.Server[User]) -> syncws.Response | None:
    return None if server.upgrade(req, data=User("ada")) else syncws.Response("no", status=400)


def message(ws: syncws.ServerWebSocket[User], msg: str | bytes) -> None:
    ws.send(ws.data.name)


class Chat(syncws.WebSocketHandler[User]):
    def message(self, ws: syncws.ServerWebSocket[User], msg: str | bytes) -> None:
        ws.send(msg)


class Counter(syncws.WebSocketHandler[int]):
    pass


# The README's quickstart: no annotation needed.
quick = syncws.serve(
    fetch=lambda req, server: None if server.upgrade(req)
    else syncws.Response("Not a WebSocket request", status=400),
    websocket={"message": lambda ws, msg: ws.send(f"Echo: {msg}")}, port=0)
untyped = syncws.serve(websocket={"message": message}, port=0)
# ws.data's type comes from a typed fetch or handler class.
assert_type(syncws.serve(fetch=fetch, websocket={"message": message}), syncws.Server[User])
assert_type(syncws.serve(websocket=Chat()), syncws.Server[User])
with syncws.serve(fetch=fetch, websocket=Chat()) as server:
    assert_type(server, syncws.Server[User])
mismatch = syncws.serve(fetch=fetch, websocket=Counter())  # the one error


# Headers as any pairs, as Response takes them; counts are ints; Request says what it holds.
def typed_fetch(req: syncws.Request, server: syncws.Server[User]) -> None:
    server.upgrade(req, headers=(("X-Region", "eu"),), data=User("ada"))
    assert_type((req.method, req.url, req.path, req.target), tuple[str, str, str, str])
    assert_type((req.body, req.headers), tuple[bytes, syncws.Headers])
    workers: int = server.stats()["workers"]
    for _ in range(server.stats()["open_websockets"] + workers):
        pass
    assert_type(syncws.Response("").status, int)


# The browser's handler attributes are typed by event.
client = syncws.WebSocket("ws://localhost:3000")
client.onmessage = lambda event: print(event.data)
client.onclose = lambda event: print(event.code, event.reason, event.was_clean)


def handler_of(ws: syncws.WebSocket) -> None:
    assert_type(ws.onmessage, Callable[[syncws.MessageEvent], object] | None)
'''


@pytest.mark.timeout(300)
def test_mypy_strict_infers_the_data_type_or_any(tmp_path: Path) -> None:
    path = tmp_path / "app.py"
    path.write_text(SNIPPET)
    # MYPYPATH: an editable install is an import hook, which mypy does not follow.
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
         str(tmp_path / "cache"), "--python-version", "3.10", path.name],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout
    line = SNIPPET.splitlines().index(
        "mismatch = syncws.serve(fetch=fetch, websocket=Counter())  # the one error") + 1
    assert errors[0].startswith(f'app.py:{line}: error: Argument "fetch" to "serve"'), errors

"""The chat demo in a real browser: headless Chromium, driven over the DevTools protocol.

Two tabs open the page of ``python3 -m syncws demo``; a message typed in one
(real key events) appears in the other. Chromium is Debian's ``chromium``
(or ``$SYNCWS_CHROMIUM``); nothing downloads a browser. Without it the test
skips, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait
from websockets.sync.client import ClientConnection, connect

from syncws._demo import serve_demo

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
]

# Resolves once an <li> of #log reads exactly `text` (a MutationObserver: no polling).
WAIT_FOR_LINE = """
new Promise((resolve) => {
  const log = document.getElementById("log");
  const seen = () => [...log.querySelectorAll("li")].some((li) => li.textContent === %s);
  if (seen()) return resolve(true);
  new MutationObserver((_, observer) => {
    if (seen()) { observer.disconnect(); resolve(true); }
  }).observe(log, {childList: true});
})
"""


def chromium() -> str:
    path = os.environ.get("SYNCWS_CHROMIUM") or shutil.which("chromium")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    return path


class DevTools:
    """A minimal DevTools protocol client on one browser-level WebSocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        """Send one command and block until its answer (events seen meanwhile are kept)."""
        message_id = next(self.ids)
        command: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session is not None:
            command["sessionId"] = session
        self.ws.send(json.dumps(command))
        while True:
            message = json.loads(self.ws.recv(timeout=wait(20)))
            if message.get("id") == message_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        """Block until the event ``method`` of ``session`` arrives (or was already seen)."""
        for index, event in enumerate(self.events):
            if event.get("method") == method and event.get("sessionId") == session:
                return self.events.pop(index)
        while True:
            event = json.loads(self.ws.recv(timeout=wait(20)))
            if event.get("method") == method and event.get("sessionId") == session:
                return dict(event)
            self.events.append(event)

    def open_tab(self, url: str) -> str:
        """Open ``url`` in a new tab and wait for its load event; the tab's session."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session: str = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        self.call("Page.enable", session)
        self.call("Page.navigate", session, url=url)
        self.wait_event("Page.loadEventFired", session)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session, expression=expression,
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for_line(self, session: str, text: str) -> None:
        assert self.evaluate(session, WAIT_FOR_LINE % json.dumps(text)) is True

    def type_and_enter(self, session: str, selector: str, text: str) -> None:
        """Focus ``selector``, type ``text`` and press Enter, as a user would."""
        self.evaluate(session, f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", session, text=text)
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13,
               "nativeVirtualKeyCode": 13}
        self.call("Input.dispatchKeyEvent", session, type="keyDown", text="\r", **key)
        self.call("Input.dispatchKeyEvent", session, type="keyUp", **key)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    drain: threading.Thread | None = None
    proc = subprocess.Popen(
        [chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        endpoint = None
        for line in proc.stderr:  # bounded by pytest-timeout; Chromium says where it listens
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                endpoint = found.group(1)
                break
        assert endpoint is not None, "Chromium exited without a DevTools endpoint"
        # Keep reading its log so a full pipe never blocks Chromium.
        drain = threading.Thread(target=proc.stderr.read, daemon=True)
        drain.start()
        with connect(endpoint, max_size=None, open_timeout=wait(20)) as ws:
            devtools = DevTools(ws)
            yield devtools
            devtools.call("Browser.close")
    finally:
        try:
            proc.wait(wait(10))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if drain is not None:
            drain.join(wait(10))  # EOF once Chromium and its children are gone
        if proc.stderr is not None and (drain is None or not drain.is_alive()):
            proc.stderr.close()


def test_demo_chat_between_two_browser_tabs(browser: DevTools) -> None:
    with serve_demo("127.0.0.1", 0, workers=4) as server:
        page = f"http://127.0.0.1:{server.port}/"
        ada = browser.open_tab(page + "?name=ada")
        browser.wait_for_line(ada, "ada joined")  # ada's socket is open
        bob = browser.open_tab(page + "?name=bob")
        browser.wait_for_line(bob, "bob joined")
        browser.wait_for_line(ada, "bob joined")

        browser.type_and_enter(bob, "#message", "hello from bob")
        browser.wait_for_line(ada, "bob: hello from bob")
        browser.wait_for_line(bob, "bob: hello from bob")
        assert browser.evaluate(bob, "document.getElementById('message').value") == ""

        browser.type_and_enter(ada, "#message", "<b>hi</b> bob")
        browser.wait_for_line(bob, "ada: <b>hi</b> bob")  # shown as text, not HTML
        assert browser.evaluate(bob, "document.querySelectorAll('#log b').length") == 0

        # Closing a tab closes its socket: the other one sees the leave.
        browser.call("Target.closeTarget", targetId=browser.call(
            "Target.getTargetInfo", bob)["targetInfo"]["targetId"])
        browser.wait_for_line(ada, "bob left")

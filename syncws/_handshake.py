"""The WebSocket opening handshake (RFC 6455 section 4.2), pure functions only."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any

from ._http import Headers, header_pairs

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1(key.encode("ascii") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def header_tokens(headers: Headers, name: str) -> list[str]:
    """The comma-separated tokens of every ``name`` header, stripped, in order."""
    return [token.strip() for value in headers.get_all(name)
            for token in value.split(",") if token.strip()]


def is_websocket_request(method: str, headers: Headers) -> bool:
    """Whether the request asks for a WebSocket upgrade at all."""
    return method == "GET" and any(t.lower() == "websocket"
                                   for t in header_tokens(headers, "upgrade"))


def upgrade_problem(method: str, headers: Headers,
                    http_version: str = "1.1") -> tuple[int, str] | None:
    """Why this request is not a valid WebSocket upgrade: (status, message), or None.

    426 carries ``Sec-WebSocket-Version: 13`` so the client can retry.
    """
    if not is_websocket_request(method, headers):
        return 426, "Upgrade Required"
    if http_version == "1.0":  # RFC 6455 4.1: HTTP/1.1 or higher
        return 400, "WebSocket needs HTTP/1.1"
    if not any(t.lower() == "upgrade" for t in header_tokens(headers, "connection")):
        return 400, "Missing Connection: Upgrade"
    if headers.get("sec-websocket-version", "").strip() != "13":
        return 426, "Unsupported WebSocket version"
    key = headers.get("sec-websocket-key", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        return 400, "Invalid Sec-WebSocket-Key"
    return None


@dataclass
class UpgradeDecision:
    """What ``server.upgrade()`` recorded; the loop acts on it after ``fetch`` returns."""

    key: str
    data: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    subprotocol: str = ""


def build_101(decision: UpgradeDecision, extension_header: str | None) -> bytes:
    """The ``101 Switching Protocols`` response for an accepted upgrade."""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(decision.key)}",
    ]
    if decision.subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {decision.subprotocol}")
    if extension_header:
        lines.append(f"Sec-WebSocket-Extensions: {extension_header}")
    for name, value in decision.headers:
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_RESERVED_101_HEADERS = {"upgrade", "connection", "sec-websocket-accept",
                         "sec-websocket-extensions", "sec-websocket-protocol"}


def make_decision(headers: Headers, extra: object, data: Any) -> UpgradeDecision:
    """Check ``server.upgrade()``'s ``headers`` argument and record the decision.

    A ``Sec-WebSocket-Protocol`` entry selects the subprotocol, which must be
    one the client offered; given a list (the client's own header echoed
    back, a common Bun pattern), the first entry is chosen, as in Bun. The
    handshake's own headers may not be overridden.
    """
    chosen = ""
    kept: list[tuple[str, str]] = []
    for name, value in header_pairs(extra):
        lowered = name.lower()
        if lowered == "sec-websocket-protocol":
            chosen = value.split(",")[0].strip()
            offered = header_tokens(headers, "sec-websocket-protocol")
            if chosen not in offered:
                raise ValueError(
                    f"subprotocol {chosen!r} was not offered by the client (offered: {offered})"
                )
        elif lowered in _RESERVED_101_HEADERS:
            raise ValueError(f"header {name!r} is set by the handshake itself")
        else:
            kept.append((name, value))
    key = headers.get("sec-websocket-key", "").strip()
    return UpgradeDecision(key=key, data=data, headers=kept, subprotocol=chosen)

"""The client's side of the opening handshake: URL parsing, the GET, the 101 checks.

Blocking, but touches nothing beyond the socket it is handed; the caller owns
threads and the connection that follows.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import selectors
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import h11
from wsproto.extensions import Extension, PerMessageDeflate

from ._deflate import Agreement, DeflateExtension, window_bits
from ._frames import encode_text
from ._handshake import accept_key, header_tokens
from ._http import TOKEN_CHARS, Headers, header_pairs
from .exceptions import HandshakeError

logger = logging.getLogger("syncws")

HeaderArg = Mapping[str, str] | Iterable[tuple[str, str]]

# What a refused handshake keeps of the response body for HandshakeError.body.
MAX_ERROR_BODY = 64 * 1024
# h11 refuses a response head larger than this (a 101 is a few hundred bytes).
MAX_RESPONSE_HEAD = 64 * 1024

DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"

# Set by the handshake itself; a user header could only break it.
_RESERVED_HEADERS = frozenset({
    "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
    "sec-websocket-extensions", "sec-websocket-protocol", "content-length",
    "transfer-encoding",
})



def make_deflate_extension() -> Extension:
    """A wsproto permessage-deflate object, finalized with the server's answer.

    It compresses what the client sends; what the client receives goes
    through :func:`bounded_deflate`, since wsproto inflates without a bound.
    """
    return PerMessageDeflate()


class SendsPlainDeflate(PerMessageDeflate):
    """permessage-deflate whose own messages all go uncompressed.

    For a server that answers ``client_max_window_bits=8``, which the
    client's bare ``client_max_window_bits`` offer allows (RFC 7692
    7.1.2.2): zlib cannot compress with a 256-byte window, and a sender may
    leave any message uncompressed (RSV1 clear). What the server sends is
    still inflated.
    """

    def frame_outbound(self, proto: Any, opcode: Any, rsv: Any, data: bytes,
                       fin: bool) -> Any:
        """Leave the frame as it is."""
        return rsv, data


class ClientDeflate(Extension):
    """permessage-deflate for the client: wsproto compresses, syncws inflates (bounded).

    Inbound frames go through ``syncws._deflate.DeflateExtension``, the same
    bounded inflate as the server's, so a compressed bomb from a server is
    refused with 1009 once it passes ``max_payload_length``.
    """

    name = PerMessageDeflate.name

    def __init__(self, outbound: PerMessageDeflate, inbound: DeflateExtension) -> None:
        self.outbound = outbound
        self.inbound = inbound

    def enabled(self) -> bool:
        """Always: only built once the server accepted the extension."""
        return True

    def offer(self) -> bool | str:
        """What the client offers (part of wsproto's interface; the handshake builds its own)."""
        return self.outbound.offer()

    def frame_inbound_header(self, proto: Any, opcode: Any, rsv: Any,
                             payload_length: int) -> Any:
        """RSV1 rules, as the server checks them."""
        return self.inbound.frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> Any:
        """Inflate a received chunk within the message budget."""
        return self.inbound.frame_inbound_payload_data(proto, data)

    def frame_inbound_complete(self, proto: Any, fin: bool) -> Any:
        """Finish a received compressed message."""
        return self.inbound.frame_inbound_complete(proto, fin)

    def frame_outbound(self, proto: Any, opcode: Any, rsv: Any, data: bytes,
                       fin: bool) -> Any:
        """Compress an outgoing frame (wsproto's compressor)."""
        return self.outbound.frame_outbound(proto, opcode, rsv, data, fin)


def bounded_deflate(extension: Extension, max_payload_length: int) -> Extension:
    """Wrap the finalized wsproto extension so that inflating is bounded."""
    if not isinstance(extension, PerMessageDeflate):
        return extension
    server_bits = extension.server_max_window_bits or 15
    client_bits = extension.client_max_window_bits or 15
    agreement = Agreement(
        server_no_context_takeover=extension.server_no_context_takeover,
        client_no_context_takeover=extension.client_no_context_takeover,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
        response="",
    )
    inbound = DeflateExtension(agreement, max_payload_length, from_server=True)
    return ClientDeflate(extension, inbound)


@dataclass(frozen=True)
class Target:
    """Where a ``ws://`` / ``wss://`` URL points."""

    url: str
    secure: bool
    host: str  # for connect(): no brackets around IPv6 literals
    port: int
    resource: str  # path?query, as it goes on the request line
    host_header: str


def parse_url(url: object) -> Target:
    """Split a WebSocket URL; ``ValueError`` (naming ``url``) for anything but ws/wss/http/https."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ValueError(f"url {url!r} contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url {url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        # As in Bun and browsers: http(s) stands for ws(s), so that
        # connect(server.url) works.
        scheme = "ws" if scheme == "http" else "wss"
        url = scheme + url[len(parts.scheme):]
    if scheme not in ("ws", "wss"):
        raise ValueError(f"url {url!r} must start with ws://, wss://, http:// or https://")
    if "#" in url:
        raise ValueError(f"url {url!r} must not have a #fragment")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"url {url!r} carries credentials: pass an Authorization header")
    host = parts.hostname
    if not host:
        raise ValueError(f"url {url!r} has no host")
    secure = scheme == "wss"
    default_port = 443 if secure else 80
    if port is None:
        port = default_port
    elif port == 0:
        raise ValueError(f"url {url!r} has port 0")
    # urllib checks what is between brackets only from Python 3.11.4 on.
    ipv6 = ":" in host or parts.netloc.startswith("[")
    if ipv6:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"url {url!r} has an invalid IPv6 address") from None
    elif not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"url {url!r} has an invalid host name") from None
    bracketed = f"[{host}]" if ipv6 else host
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    # As browsers and Bun do (WHATWG URL): characters a request line cannot
    # carry as they are, non-ASCII ones among them, go percent-encoded as UTF-8.
    # (A lone surrogate, which UTF-8 cannot carry, goes as U+FFFD, as in a browser.)
    resource = quote(encode_text(parts.path), safe=_PATH_SAFE) or "/"
    if parts.query:
        resource += "?" + quote(encode_text(parts.query), safe=_QUERY_SAFE)
    return Target(url, secure, host, port, resource, host_header)


# The printable ASCII that WHATWG's path and query percent-encode sets leave as
# it is ("%" included: what is already escaped stays so).
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"#<>?`{}')
_QUERY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "\"#<>'")


def normalize_headers(headers: object) -> list[tuple[str, str]]:
    """Check the user's extra request headers; ``ValueError``/``TypeError`` name ``headers``."""
    pairs = header_pairs(headers)
    for name, _ in pairs:
        if name.lower() in _RESERVED_HEADERS:
            hint = " (use subprotocols=)" if name.lower() == "sec-websocket-protocol" else ""
            raise ValueError(f"headers: {name!r} is set by the handshake itself{hint}")
    return pairs


def normalize_subprotocols(subprotocols: object, argument: str = "subprotocols") -> list[str]:
    """A list of distinct subprotocol tokens; a bare str counts as one."""
    if subprotocols is None:
        return []
    items = [subprotocols] if isinstance(subprotocols, str) else subprotocols
    if not isinstance(items, Sequence):
        raise TypeError(f"{argument} must be a str or a sequence of str, "
                        f"not {type(subprotocols).__name__}")
    result: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{argument} must contain str, not {type(item).__name__}")
        if not item or any(ch not in TOKEN_CHARS for ch in item):
            raise ValueError(f"{argument}: {item!r} is not a valid subprotocol token")
        if item in result:
            raise ValueError(f"{argument}: {item!r} is listed twice")
        result.append(item)
    return result


@dataclass
class HandshakeResult:
    """What the 101 settled."""

    sock: socket.socket
    protocol: str
    headers: Headers
    extension: Extension | None
    extensions_header: str
    trailing: bytes


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the opening handshake timed out")
    return left


def shut_down(sock: socket.socket | None) -> None:
    """Wake whatever blocks on ``sock``; safe from any thread, also for TLS.

    ``SSLSocket.shutdown`` would also drop the TLS state under the thread
    that is using it; the descriptor's own shutdown leaves that alone.
    """
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


# How often a pending TCP connect looks whether it was cancelled.
_CONNECT_SLICE = 0.05


class Cancel:
    """Lets another thread abandon an opening handshake under way.

    Shutting the socket down ends a TLS or HTTP handshake at once, but not a
    TCP connect in progress (Linux ignores it there), so the connect also
    checks ``cancelled`` every ``_CONNECT_SLICE`` seconds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.cancelled = False

    def cancel(self) -> None:
        """Any thread: the handshake fails at once (``ConnectionAbortedError`` or an OSError)."""
        with self._lock:
            self.cancelled = True
            shut_down(self._sock)

    def _watch(self, sock: socket.socket | None) -> None:
        """``sock`` is the one to shut down from now on (None: none)."""
        with self._lock:
            self._sock = sock
            if sock is not None and self.cancelled:
                raise _cancelled()


def _cancelled() -> ConnectionAbortedError:
    return ConnectionAbortedError("the opening handshake was cancelled")


def _connect_tcp(host: str, port: int, deadline: float | None,
                 cancel: Cancel | None) -> socket.socket:
    """``socket.create_connection``, but with one deadline for every address, and cancellable."""
    errors: list[OSError] = []
    for family, kind, proto, _, address in socket.getaddrinfo(host, port,
                                                               type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            if cancel is not None:
                cancel._watch(sock)
            _connect_one(sock, address, deadline, cancel)
            return sock
        except (TimeoutError, ConnectionAbortedError):
            sock.close()
            raise  # no time left for another address, or nobody wants one
        except OSError as exc:
            sock.close()
            errors.append(exc)
        finally:
            if cancel is not None:
                cancel._watch(None)
    if errors:
        raise errors[0]
    raise OSError(f"getaddrinfo returned no address for {host!r}")


def _connect_one(sock: socket.socket, address: Any, deadline: float | None,
                 cancel: Cancel | None) -> None:
    sock.setblocking(False)
    error = sock.connect_ex(address)
    if error in (errno.EINPROGRESS, errno.EWOULDBLOCK):
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_WRITE)
            while True:
                left = _remaining(deadline)
                if cancel is not None:
                    if cancel.cancelled:
                        raise _cancelled()
                    left = _CONNECT_SLICE if left is None else min(left, _CONNECT_SLICE)
                if selector.select(left):
                    break
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))  # ConnectionRefusedError and kin


def open_connection(target: Target, *, headers: list[tuple[str, str]], subprotocols: list[str],
                    timeout: float | None, deflate: bool, ssl: ssl_module.SSLContext | None,
                    cancel: Cancel | None = None) -> HandshakeResult:
    """Connect, run TLS if ``wss``, and complete the opening handshake. Blocks.

    ``cancel.cancel()`` from another thread abandons it at once.

    Raises ``OSError`` (e.g. ``ConnectionRefusedError``) when the server cannot
    be reached, ``ssl.SSLError`` (``ssl.SSLCertVerificationError`` for an
    untrusted certificate) when TLS fails, ``TimeoutError`` when ``timeout``
    passes, and ``HandshakeError`` when the server answers but refuses.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    sock = _connect_tcp(target.host, target.port, deadline, cancel)
    try:
        # Small frames (pongs, chat messages) must not wait for Nagle.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(_remaining(deadline))
        if cancel is not None:
            cancel._watch(sock)
        if target.secure:
            context = ssl if ssl is not None else ssl_module.create_default_context()
            # wrap_socket moves the descriptor to the TLS socket: watch that one
            # before its handshake, so that shutting it down can end it.
            sock = context.wrap_socket(sock, server_hostname=target.host,
                                       do_handshake_on_connect=False)
            if cancel is not None:
                cancel._watch(sock)
            sock.do_handshake()
        result = _handshake(sock, target, headers, subprotocols, deflate, deadline)
        sock.settimeout(None)
        return result
    except BaseException:
        if cancel is not None:
            cancel._watch(None)  # before close: its descriptor number may be reused
        sock.close()
        raise


def _handshake(sock: socket.socket, target: Target, extra: list[tuple[str, str]],
               subprotocols: list[str], deflate: bool, deadline: float | None
               ) -> HandshakeResult:
    key = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
    names = {name.lower() for name, _ in extra}
    request_headers: list[tuple[str, str]] = []
    if "host" not in names:
        request_headers.append(("Host", target.host_header))
    request_headers += [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    if subprotocols:
        request_headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    if deflate:
        request_headers.append(("Sec-WebSocket-Extensions", DEFLATE_OFFER))
    if "user-agent" not in names:
        request_headers.append(("User-Agent", "syncws"))
    request_headers += extra

    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
    try:
        data = conn.send(h11.Request(method="GET", target=target.resource,
                                     headers=request_headers))
        data += conn.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError as exc:
        raise ValueError(f"headers or url make an invalid HTTP request: {exc}") from None
    sock.settimeout(_remaining(deadline))
    sock.sendall(data)

    status = 0
    response_headers = Headers()
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise HandshakeError(f"invalid HTTP response to the WebSocket handshake: {exc}",
                                 status, bytes(body)) from None
        if event is h11.NEED_DATA:
            sock.settimeout(_remaining(deadline))
            chunk = sock.recv(65536)
            if not chunk and status == 0:
                raise HandshakeError("the server closed the connection during the handshake")
            conn.receive_data(chunk)
            continue
        if isinstance(event, h11.InformationalResponse):
            if event.status_code != 101:
                continue  # e.g. 100 Continue: the real answer follows
            response_headers = _decode_headers(event.headers)
            trailing, _ = conn.trailing_data
            return _check_101(sock, key, response_headers, subprotocols, deflate,
                              bytes(trailing))
        if isinstance(event, h11.Response):
            status = event.status_code
            response_headers = _decode_headers(event.headers)
        elif isinstance(event, h11.Data):
            room = MAX_ERROR_BODY - len(body)
            body += event.data[:room]
            if len(body) >= MAX_ERROR_BODY:
                break
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    raise HandshakeError(f"the server refused the WebSocket handshake with status {status}",
                         status, bytes(body))


def _decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    return Headers((name.decode("latin-1"), value.decode("latin-1")) for name, value in raw)


def _refuse(problem: str) -> HandshakeError:
    return HandshakeError(f"invalid 101 response: {problem}", 101)


def _check_101(sock: socket.socket, key: str, headers: Headers, subprotocols: list[str],
               deflate: bool, trailing: bytes) -> HandshakeResult:
    if not any(t.lower() == "websocket" for t in header_tokens(headers, "upgrade")):
        raise _refuse("no 'Upgrade: websocket'")
    if not any(t.lower() == "upgrade" for t in header_tokens(headers, "connection")):
        raise _refuse("no 'Connection: Upgrade'")
    if headers.get("sec-websocket-accept", "").strip() != accept_key(key):
        raise _refuse("wrong Sec-WebSocket-Accept")

    chosen = header_tokens(headers, "sec-websocket-protocol")
    if len(chosen) > 1:
        raise _refuse(f"the server chose several subprotocols {chosen}")
    protocol = chosen[0] if chosen else ""
    if protocol and protocol not in subprotocols:
        raise _refuse(f"the server chose subprotocol {protocol!r}, which was not offered")

    extension: Extension | None = None
    accepted = [value.strip() for raw in headers.get_all("sec-websocket-extensions")
                for value in raw.split(",") if value.strip()]
    for value in accepted:
        name, _, params = value.partition(";")
        if name.strip().lower() != "permessage-deflate" or not deflate or extension is not None:
            raise _refuse(f"the server accepted extension {value!r}, which was not offered")
        extension = _finalize_deflate(params)
    return HandshakeResult(sock, protocol, headers, extension, ", ".join(accepted), trailing)


def _finalize_deflate(params: str) -> Extension:
    """Check the server's permessage-deflate answer (RFC 7692 section 7.1) and apply it."""
    seen: set[str] = set()
    applied: list[str] = []
    sends_plain = False
    for raw in params.split(";"):
        param = raw.strip()
        if not param:
            continue
        name, has_value, value = (part.strip() for part in param.partition("="))
        value = value.strip('"')
        if name in seen:
            raise _refuse(f"permessage-deflate parameter {name!r} repeated")
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if has_value:
                raise _refuse(f"permessage-deflate parameter {name!r} takes no value")
            applied.append(name)
        elif name in ("server_max_window_bits", "client_max_window_bits"):
            bits = window_bits(value)
            if bits is None:
                raise _refuse(f"permessage-deflate {name}={value!r}")
            if bits == 8 and name == "client_max_window_bits":
                sends_plain = True  # zlib cannot compress with a 256-byte window
            # Inflating with a larger window than the sender used is always safe,
            # and zlib's raw inflate wants at least 9 bits.
            applied.append(f"{name}={max(bits, 9)}")
        else:
            raise _refuse(f"unknown permessage-deflate parameter {name!r}")
    extension = SendsPlainDeflate() if sends_plain else make_deflate_extension()
    answer = "; ".join(["permessage-deflate", *applied])
    try:
        extension.finalize(answer)
    except ValueError as exc:
        raise _refuse(f"permessage-deflate parameters: {exc}") from None
    return extension

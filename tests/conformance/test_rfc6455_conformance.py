"""RFC 6455 conformance: raw frames against an echo server, one case per behaviour.

Every case id starts with the RFC 6455 section it checks. The server echoes
each message verbatim (as ``python3 -m syncws echo``) and records what its
``message`` and ``close`` handlers saw, so a case can check the exact reply on
the wire, what the application got, and that the server still serves a fresh
client afterwards.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import RawClient, client_frame, close_body, wait, wait_for

import syncws
import syncws._ws_conn

pytestmark = pytest.mark.timeout(20)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
KEY = b"\x11\x22\x33\x44"


@dataclass
class Echo:
    """An echo server and what its handlers received."""

    server: syncws.Server[Any]
    messages: list[str | bytes] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return self.server.port

    def close_record(self) -> tuple[int, str]:
        """The (code, reason) the one closed connection's ``close`` handler got."""
        wait_for(lambda: bool(self.closes), message="the close handler")
        with self.lock:
            assert len(self.closes) == 1, self.closes
            return self.closes[0]


@pytest.fixture
def echo(make_server: Callable[..., syncws.Server[Any]]) -> Echo:
    holder: list[Echo] = []

    def on_message(ws: Any, message: str | bytes) -> None:
        with holder[0].lock:
            holder[0].messages.append(message)
        ws.send(message)

    def on_close(ws: Any, code: int, reason: str) -> None:
        with holder[0].lock:
            holder[0].closes.append((code, reason))

    server = make_server(websocket={"message": on_message, "close": on_close,
                                    "max_payload_length": 16 * 1024 * 1024,
                                    "backpressure_limit": 64 * 1024 * 1024})
    holder.append(Echo(server))
    return holder[0]


_clients: list[RawClient] = []


@pytest.fixture(autouse=True)
def _close_clients(make_server: Any) -> Iterator[None]:
    # Depends on make_server so that clients close before the servers stop.
    yield
    while _clients:
        _clients.pop().close()


def connect(port: int) -> RawClient:
    """A raw client, upgraded, closed after the test."""
    client = RawClient(port)
    _clients.append(client)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert client.status == 101
    return client


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          mask: bool = True) -> bytes:
    return client_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, key=KEY)


def raw_frame(first: int, length_field: bytes, payload: bytes) -> bytes:
    """A masked frame with a hand-written length field (second byte onwards)."""
    masked = bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))
    return bytes([first]) + bytes([0x80 | length_field[0]]) + length_field[1:] + KEY + masked


def assert_serves(port: int) -> None:
    """A fresh client gets its message echoed and a clean closing handshake."""
    client = connect(port)
    try:
        client.send_frame(OP_TEXT, "still here ✓".encode())
        assert client.recv_frame() == (OP_TEXT, True, 0, "still here ✓".encode())
        client.send_frame(OP_CLOSE, close_body(1000))
        assert client.recv_close() == (1000, b"")
        assert client.at_eof()
    finally:
        client.close()


def expect_failure(echo: Echo, client: RawClient, code: int) -> list[str | bytes]:
    """The server failed the connection with ``code``: close frame, TCP close, handler.

    Returns the messages the handler got on that connection, then checks that a
    fresh client is still served.
    """
    assert client.recv_close()[0] == code
    assert client.at_eof()
    assert echo.close_record()[0] == code
    with echo.lock:
        messages = list(echo.messages)
    assert_serves(echo.port)
    return messages


# -- 5.2: payload lengths at every boundary, in their (minimal) encodings -------------

LENGTHS = [0, 125, 126, 127, 65535, 65536, 4 * 1024 * 1024]


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("length", LENGTHS, ids=[f"5.2-length-{n}" for n in LENGTHS])
def test_payload_length_echoed(echo: Echo, length: int, opcode: int) -> None:
    payload = bytes((0x20 + i % 90) for i in range(min(length, 4096)))
    payload = (payload * (length // 4096 + 1))[:length] if length else b""
    client = connect(echo.port)
    client.send_frame(opcode, payload)
    assert client.recv_frame() == (opcode, True, 0, payload)
    with echo.lock:
        expected = payload.decode() if opcode == OP_TEXT else payload
        assert echo.messages == [expected]
    client.send_frame(OP_CLOSE, close_body(1000))
    assert client.recv_close() == (1000, b"")
    assert client.at_eof()
    assert echo.close_record() == (1000, "")


# -- protocol errors: one raw byte string in, one close code out ---------------------

def _fragmented_then(*rest: bytes) -> bytes:
    return frame(OP_TEXT, b"start", fin=False) + b"".join(rest)


FAILURES: list[tuple[str, bytes, int]] = [
    ("5.1-unmasked-text", frame(OP_TEXT, b"hello", mask=False), 1002),
    ("5.1-unmasked-empty-binary", frame(OP_BINARY, b"", mask=False), 1002),
    ("5.1-unmasked-ping", frame(OP_PING, b"x", mask=False), 1002),
    *[(f"5.2-rsv-{rsv}-without-extension", frame(OP_TEXT, b"hello", rsv=rsv), 1002)
      for rsv in range(1, 8)],
    ("5.2-rsv-on-ping", frame(OP_PING, b"x", rsv=2), 1002),
    ("5.2-rsv-on-continuation", _fragmented_then(frame(OP_CONT, b"x", rsv=4)), 1002),
    *[(f"5.2-reserved-opcode-{op:#x}", frame(op, b"payload"), 1002)
      for op in (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)],
    *[(f"5.2-reserved-opcode-{op:#x}-empty", frame(op), 1002) for op in (0x3, 0xB)],
    ("5.2-non-minimal-16bit-length-0", raw_frame(0x82, b"\x7e\x00\x00", b""), 1002),
    ("5.2-non-minimal-16bit-length-125",
     raw_frame(0x82, b"\x7e" + struct.pack("!H", 125), b"a" * 125), 1002),
    ("5.2-non-minimal-64bit-length-0", raw_frame(0x82, b"\x7f" + bytes(8), b""), 1002),
    ("5.2-non-minimal-64bit-length-126",
     raw_frame(0x82, b"\x7f" + struct.pack("!Q", 126), b"a" * 126), 1002),
    ("5.2-non-minimal-64bit-length-65535",
     raw_frame(0x82, b"\x7f" + struct.pack("!Q", 65535), b"a" * 65535), 1002),
    ("5.2-64bit-length-most-significant-bit-set",
     raw_frame(0x82, b"\x7f" + struct.pack("!Q", 1 << 63), b""), 1002),
    ("5.5-ping-126-bytes", frame(OP_PING, b"p" * 126), 1002),
    ("5.5-pong-126-bytes", frame(OP_PONG, b"p" * 126), 1002),
    ("5.5-close-126-bytes", frame(OP_CLOSE, close_body(1000, b"r" * 124)), 1002),
    ("5.5-ping-16bit-length-field",
     raw_frame(0x89, b"\x7e" + struct.pack("!H", 5), b"hello"), 1002),
    ("5.4-fragmented-ping", frame(OP_PING, b"x", fin=False), 1002),
    ("5.4-fragmented-pong", frame(OP_PONG, b"x", fin=False), 1002),
    ("5.4-fragmented-close", frame(OP_CLOSE, close_body(1000), fin=False), 1002),
    ("5.4-fragmented-ping-inside-message",
     _fragmented_then(frame(OP_PING, b"x", fin=False)), 1002),
    ("5.4-continuation-without-start", frame(OP_CONT, b"orphan"), 1002),
    ("5.4-continuation-without-start-fin-0", frame(OP_CONT, b"orphan", fin=False), 1002),
    ("5.4-continuation-after-complete-message",
     frame(OP_TEXT, b"done") + frame(OP_CONT, b"more"), 1002),
    ("5.4-text-inside-fragmented-message", _fragmented_then(frame(OP_TEXT, b"new")), 1002),
    ("5.4-binary-inside-fragmented-message",
     _fragmented_then(frame(OP_BINARY, b"new", fin=False)), 1002),
    ("5.5.1-close-1-byte-body", frame(OP_CLOSE, b"\x03"), 1002),
    *[(f"7.4.1-invalid-close-code-{code}", frame(OP_CLOSE, close_body(code)), 1002)
      for code in (0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 1100, 2000, 2999, 5000,
                   65535)],
    ("5.5.1-close-reason-invalid-utf8",
     frame(OP_CLOSE, close_body(1000, b"bad \xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
                                      b"\xed\xa0\x80")), 1007),
    ("5.5.1-close-reason-truncated-utf8", frame(OP_CLOSE, close_body(1000, b"\xce")), 1007),
    ("8.1-invalid-utf8-text-whole", frame(OP_TEXT, b"hello \xc0\xaf world"), 1007),
    ("8.1-utf16-surrogate-in-text", frame(OP_TEXT, b"\xed\xa0\x80"), 1007),
    ("8.1-text-ends-inside-code-point", frame(OP_TEXT, b"abc\xe2\x82"), 1007),
    ("8.1-invalid-utf8-across-fragments",
     frame(OP_TEXT, b"valid \xce", fin=False) + frame(OP_CONT, b"\xff rest"), 1007),
    ("8.1-invalid-utf8-in-last-fragment",
     frame(OP_TEXT, b"valid", fin=False) + frame(OP_CONT, b"", fin=False)
     + frame(OP_CONT, b"\xf8\x88\x80\x80\x80"), 1007),
    ("8.1-message-ends-inside-code-point",
     frame(OP_TEXT, b"ok \xf0\x9f", fin=False) + frame(OP_CONT, b"\x98"), 1007),
]


@pytest.mark.parametrize("data,code", [(d, c) for _, d, c in FAILURES],
                         ids=[name for name, _, _ in FAILURES])
def test_protocol_error_fails_connection(echo: Echo, data: bytes, code: int) -> None:
    client = connect(echo.port)
    client.send(data)
    messages = expect_failure(echo, client, code)
    # Nothing malformed reached the application ("done" is a complete message).
    assert messages in ([], ["done"])


BYTEWISE = {"5.1-unmasked-text", "5.2-rsv-1-without-extension", "5.2-reserved-opcode-0x3",
            "5.2-non-minimal-16bit-length-125", "5.5-ping-126-bytes", "5.4-fragmented-ping",
            "5.4-continuation-without-start", "5.4-text-inside-fragmented-message",
            "5.5.1-close-1-byte-body", "7.4.1-invalid-close-code-1004",
            "5.5.1-close-reason-invalid-utf8", "8.1-invalid-utf8-across-fragments",
            "8.1-message-ends-inside-code-point"}
BYTEWISE_CASES = [(name, d, c) for name, d, c in FAILURES if name in BYTEWISE]


@pytest.mark.parametrize("data,code", [(d, c) for _, d, c in BYTEWISE_CASES],
                         ids=[f"{name}-bytewise" for name, _, _ in BYTEWISE_CASES])
def test_protocol_error_one_byte_at_a_time(echo: Echo, data: bytes, code: int) -> None:
    """5.2/5.4: the same verdict however the bytes are split across reads."""
    client = connect(echo.port)
    try:
        for i in range(len(data)):
            client.send(data[i:i + 1])
    except OSError:
        pass  # the server may fail the connection before the last byte
    expect_failure(echo, client, code)


STRICT_ORDER: list[tuple[str, bytes, int]] = [
    ("5.2-echo-then-fail-on-rsv", frame(OP_TEXT, b"first") + frame(OP_TEXT, b"x", rsv=2), 1002),
    ("5.2-echo-then-fail-on-reserved-opcode", frame(OP_TEXT, b"first") + frame(0x5), 1002),
    ("5.4-echo-then-fail-on-orphan-continuation",
     frame(OP_TEXT, b"fir", fin=False) + frame(OP_CONT, b"st") + frame(OP_CONT, b"x"), 1002),
    ("8.1-echo-then-fail-on-invalid-utf8", frame(OP_TEXT, b"first") + frame(OP_TEXT, b"\xff"),
     1007),
]


@pytest.mark.parametrize("data,code", [(d, c) for _, d, c in STRICT_ORDER],
                         ids=[name for name, _, _ in STRICT_ORDER])
def test_messages_before_a_protocol_error_are_answered_first(
        echo: Echo, data: bytes, code: int) -> None:
    """7.1.7: failing the connection stops processing *further* data; a message that
    arrived complete before the bad frame is still handled, and its reply precedes
    the close frame (Autobahn 3.2, 4.1.3, 5.15: strict behaviour)."""
    client = connect(echo.port)
    client.send(data + frame(OP_PING, b"never answered"))
    assert client.recv_frame() == (OP_TEXT, True, 0, b"first")
    assert client.recv_frame()[0] == OP_CLOSE
    assert client.at_eof()
    assert echo.close_record()[0] == code
    with echo.lock:
        assert echo.messages == ["first"]
    assert_serves(echo.port)


def test_protocol_error_behind_a_stuck_handler_still_sends_its_close_code(
        make_server: Callable[..., syncws.Server[Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler that outlives the close timeout does not turn 1007 into a silent 1006."""
    monkeypatch.setattr(syncws._ws_conn, "CLOSE_HANDSHAKE_TIMEOUT", 0.3)
    release = threading.Event()
    closes: list[tuple[int, str]] = []
    server = make_server(websocket={
        "message": lambda ws, m: release.wait(wait(10)) if m == "slow" else ws.send(m),
        "close": lambda ws, code, reason: closes.append((code, reason))})
    client = connect(server.port)
    client.send_frame(OP_TEXT, b"slow")
    client.send_frame(OP_TEXT, b"bad \xff")
    try:
        code, _ = client.recv_close()  # comes after the timeout, the handler still running
        assert code == 1007
        assert client.at_eof()
    finally:
        release.set()
    wait_for(lambda: bool(closes), message="the close handler")
    assert closes[0][0] == 1007
    assert_serves(server.port)


def test_peer_that_closes_and_stops_reading_is_let_go(
        make_server: Callable[..., syncws.Server[Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Our close answer stuck behind megabytes the peer never reads: dropped after the timeout."""
    monkeypatch.setattr(syncws._ws_conn, "CLOSE_HANDSHAKE_TIMEOUT", 0.3)
    opened: list[Any] = []
    closes: list[tuple[int, str]] = []
    server = make_server(websocket={
        "open": opened.append, "message": lambda ws, m: None,
        "close": lambda ws, code, reason: closes.append((code, reason)),
        "backpressure_limit": 64 * 1024 * 1024})
    client = RawClient(server.port, rcvbuf=4096)
    _clients.append(client)
    wait_for(lambda: bool(opened), message="open")
    ws = opened[0]
    # More than the kernel's socket buffers hold, so some stays queued in syncws.
    for _ in range(200):
        ws.send(bytes(64 * 1024))
    wait_for(lambda: ws.buffered_amount > 0 and server.stats()["bytes_out"] > 0,
             message="the kernel buffers full")
    client.send_frame(OP_CLOSE, close_body(1000))
    wait_for(lambda: bool(closes), timeout=5, message="the close handler")
    assert closes == [(1000, "")]
    assert server.stats()["open_websockets"] == 0


# -- 8.1: invalid UTF-8 fails fast, before the message (or frame) ends ---------------

FAIL_FAST: list[tuple[str, list[bytes], bytes]] = [
    # (id, prefix frames that are still valid, bytes holding the first bad byte)
    ("8.1-fail-fast-invalid-byte-in-first-fragment", [],
     frame(OP_TEXT, "κόσμε".encode() + b"\xc0", fin=False)),
    ("8.1-fail-fast-invalid-byte-in-second-fragment",
     [frame(OP_TEXT, b"hello ", fin=False)], frame(OP_CONT, b"w\xffrld", fin=False)),
    ("8.1-fail-fast-split-inside-code-point",
     [frame(OP_TEXT, "κόσμε".encode() + b"\xf4", fin=False)],
     frame(OP_CONT, b"\x90\x80\x80", fin=False)),
    ("8.1-fail-fast-split-inside-code-point-one-byte-fragments",
     [frame(OP_TEXT, b"\xf4", fin=False)], frame(OP_CONT, b"\x90", fin=False)),
    # A frame announcing 1000 bytes: the close comes after 8, not after 1000.
    ("8.1-fail-fast-inside-one-frame", [],
     client_frame(OP_TEXT, b"abcdefg\xff" + bytes(992), key=KEY)[:14 + 8]),
]


@pytest.mark.parametrize("prefix,bad", [(p, b) for _, p, b in FAIL_FAST],
                         ids=[name for name, _, _ in FAIL_FAST])
def test_invalid_utf8_fails_fast(echo: Echo, prefix: list[bytes], bad: bytes) -> None:
    client = connect(echo.port)
    for data in prefix:
        client.send(data)
    # A ping answered proves the valid prefix was parsed and did not fail anything.
    client.send_frame(OP_PING, b"sync")
    assert client.recv_frame() == (OP_PONG, True, 0, b"sync")
    client.send(bad)
    # Nothing more is sent: the close must come from the bytes so far.
    assert expect_failure(echo, client, 1007) == []


def test_valid_utf8_split_inside_code_points_is_reassembled(echo: Echo) -> None:
    """8.1 / 5.6: fragment boundaries may fall inside a character."""
    text = "κόσμε 🎉 ∑ a"
    data = text.encode()
    client = connect(echo.port)
    client.send_frame(OP_TEXT, data[:1], fin=False)
    for i in range(1, len(data) - 1):
        client.send_frame(OP_CONT, data[i:i + 1], fin=False)
    client.send_frame(OP_CONT, data[-1:])
    assert client.recv_frame() == (OP_TEXT, True, 0, data)
    with echo.lock:
        assert echo.messages == [text]


# -- 5.4 / 5.5: fragmentation and control frames --------------------------------------

def test_ping_inside_fragmented_message_answered_before_it_completes(echo: Echo) -> None:
    """5.4: control frames MAY be injected in the middle of a fragmented message."""
    client = connect(echo.port)
    client.send_frame(OP_TEXT, b"frag1", fin=False)
    client.send_frame(OP_PING, b"ping payload")
    # 5.5.2: the Pong carries the Ping's application data, and arrives while the
    # message is still incomplete (nothing else has been sent yet).
    assert client.recv_frame() == (OP_PONG, True, 0, b"ping payload")
    client.send_frame(OP_CONT, b"frag2", fin=False)
    client.send_frame(OP_PING, b"")
    assert client.recv_frame() == (OP_PONG, True, 0, b"")
    client.send_frame(OP_CONT, b"frag3")
    assert client.recv_frame() == (OP_TEXT, True, 0, b"frag1frag2frag3")
    client.send_frame(OP_CLOSE, close_body(1000))
    assert client.recv_close() == (1000, b"")


def test_ping_with_125_byte_payload_answered(echo: Echo) -> None:
    """5.5.2 / 5.5: the largest control payload is echoed in the Pong."""
    client = connect(echo.port)
    payload = bytes(range(125))
    client.send_frame(OP_PING, payload)
    assert client.recv_frame() == (OP_PONG, True, 0, payload)


def test_unsolicited_pong_ignored(echo: Echo) -> None:
    """5.5.3: a Pong MAY be sent unsolicited; no response is expected."""
    client = connect(echo.port)
    client.send_frame(OP_PONG, b"unsolicited")
    client.send_frame(OP_PONG, b"")
    client.send_frame(OP_TEXT, b"after pongs")
    assert client.recv_frame() == (OP_TEXT, True, 0, b"after pongs")
    client.send_frame(OP_PONG, b"inside", fin=True)
    client.send_frame(OP_BINARY, b"\x00\x01")
    assert client.recv_frame() == (OP_BINARY, True, 0, b"\x00\x01")


def test_many_tiny_fragments_reassembled(echo: Echo) -> None:
    """5.4: 10,000 fragments (including empty ones) make one message, in order."""
    pieces = [b"" if i % 7 == 0 else bytes([i % 251]) for i in range(10_000)]
    parts = [frame(OP_BINARY, pieces[0], fin=False)]
    parts += [frame(OP_CONT, piece, fin=False) for piece in pieces[1:-1]]
    parts.append(frame(OP_CONT, pieces[-1]))
    expected = b"".join(pieces)
    client = connect(echo.port)
    client.send(b"".join(parts))
    assert client.recv_frame() == (OP_BINARY, True, 0, expected)
    with echo.lock:
        assert echo.messages == [expected]


def test_text_in_one_byte_fragments_reassembled(echo: Echo) -> None:
    """Thousands of fragments, each code point split across frames."""
    data = ("κόσμε ✓ " * 300).encode()
    parts = [frame(OP_TEXT, data[:1], fin=False)]
    parts += [frame(OP_CONT, data[i:i + 1], fin=False) for i in range(1, len(data) - 1)]
    parts.append(frame(OP_CONT, data[-1:]))
    client = connect(echo.port)
    client.send(b"".join(parts))
    assert client.recv_frame() == (OP_TEXT, True, 0, data)
    with echo.lock:
        assert echo.messages == [data.decode()]


def test_frames_delivered_one_byte_at_a_time(echo: Echo) -> None:
    """5.2: frame boundaries are independent of TCP reads (7-, 16- and 64-bit lengths)."""
    big = bytes(i % 251 for i in range(70000))
    data = (frame(OP_TEXT, "ü".encode(), fin=False) + frame(OP_PING, b"p")
            + frame(OP_CONT, b"ber") + frame(OP_BINARY, b"m" * 300) + frame(OP_BINARY, big))
    client = connect(echo.port)
    head = data[:-len(big) + 100]  # byte by byte up to well into the 64-bit frame
    for i in range(len(head)):
        client.send(head[i:i + 1])
    client.send(data[len(head):])
    assert client.recv_frame() == (OP_PONG, True, 0, b"p")
    assert client.recv_frame() == (OP_TEXT, True, 0, "über".encode())
    assert client.recv_frame() == (OP_BINARY, True, 0, b"m" * 300)
    assert client.recv_frame() == (OP_BINARY, True, 0, big)
    closing = frame(OP_CLOSE, close_body(1000, b"bye"))
    for i in range(len(closing)):
        client.send(closing[i:i + 1])
    assert client.recv_close() == (1000, b"bye")
    assert client.at_eof()
    assert echo.close_record() == (1000, "bye")


# -- 5.5.1 / 7.4: the closing handshake ----------------------------------------------

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
               3000, 3999, 4000, 4999]


@pytest.mark.parametrize("code", VALID_CODES,
                         ids=[f"7.4-valid-close-code-{c}" for c in VALID_CODES])
def test_valid_close_code_echoed(echo: Echo, code: int) -> None:
    """5.5.1: the endpoint typically echoes the status code it received (and, as Bun, the
    reason)."""
    client = connect(echo.port)
    client.send_frame(OP_CLOSE, close_body(code, "reason ✓".encode()))
    assert client.recv_close() == (code, "reason ✓".encode())
    assert client.at_eof()
    assert echo.close_record() == (code, "reason ✓")


def test_close_without_body_answered_without_body(echo: Echo) -> None:
    """5.5.1 / 7.1.5: no status code in, none out; the handler sees 1005."""
    client = connect(echo.port)
    client.send_frame(OP_CLOSE, b"")
    opcode, fin, rsv, payload = client.recv_frame()
    assert (opcode, fin, rsv, payload) == (OP_CLOSE, True, 0, b"")
    assert client.at_eof()
    assert echo.close_record() == (1005, "")


def test_close_with_longest_reason(echo: Echo) -> None:
    """5.5: a 125-byte close payload (code + 123-byte reason) is valid."""
    client = connect(echo.port)
    client.send_frame(OP_CLOSE, close_body(1000, b"r" * 123))
    assert client.recv_close() == (1000, b"r" * 123)
    assert echo.close_record() == (1000, "r" * 123)


def test_data_after_close_ignored(echo: Echo) -> None:
    """5.5.1: after sending a Close frame, the endpoint MUST NOT send any more data frames
    (and the server does not process any)."""
    client = connect(echo.port)
    client.send(frame(OP_TEXT, b"before") + frame(OP_CLOSE, close_body(1000))
                + frame(OP_TEXT, b"after") + frame(OP_PING, b"after")
                + frame(OP_TEXT, b"\xff invalid after"))
    seen: list[tuple[int, bytes]] = []
    while True:
        opcode, _, _, payload = client.recv_frame()
        if opcode == OP_CLOSE:
            assert payload == close_body(1000)
            break
        seen.append((opcode, payload))
    assert seen in ([], [(OP_TEXT, b"before")])
    assert client.at_eof()
    assert echo.close_record() == (1000, "")
    with echo.lock:
        assert echo.messages == ["before"]
    assert_serves(echo.port)


# -- 10.4: a message over max_payload_length ------------------------------------------

@pytest.mark.parametrize("fragmented", [False, True], ids=["10.4-whole", "10.4-fragmented"])
def test_message_too_big(make_server: Callable[..., syncws.Server[Any]],
                         fragmented: bool) -> None:
    closes: list[int] = []
    messages: list[Any] = []
    server = make_server(websocket={
        "message": lambda ws, m: (messages.append(m), ws.send(m)),
        "close": lambda ws, code, reason: closes.append(code),
        "max_payload_length": 1000})
    client = connect(server.port)
    client.send_frame(OP_BINARY, b"x" * 1000)  # the limit is inclusive
    assert client.recv_frame() == (OP_BINARY, True, 0, b"x" * 1000)
    if fragmented:
        client.send_frame(OP_BINARY, b"y" * 600, fin=False)
        client.send_frame(OP_CONT, b"y" * 401, fin=False)
    else:
        client.send_frame(OP_BINARY, b"y" * 1001)
    assert client.recv_close()[0] == 1009
    assert client.at_eof()
    wait_for(lambda: bool(closes))
    assert closes == [1009]
    assert messages == [b"x" * 1000]
    assert_serves(server.port)

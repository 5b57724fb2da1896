"""permessage-deflate (issue 5): negotiation, compressed sends, bounded inflate, publish."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RawClient, client_frame, close_body, wait, wait_for
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.sync.client import connect
from wsproto.frame_protocol import FrameProtocol, ParseFailed

import syncws
from syncws._deflate import (
    MIN_COMPRESS_SIZE,
    Agreement,
    DeflateConfig,
    DeflateExtension,
    make_compressor,
    negotiate,
    parse_config,
    parse_extensions,
)

TAIL = b"\x00\x00\xff\xff"
OFFER = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
RSV1 = 4  # RawClient.recv_frame's rsv bits: RSV1 is the highest of the three


def deflate(data: bytes, wbits: int = 15) -> bytes:
    """A client's compressed message payload (RFC 7692 7.2.1), fresh context."""
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def inflate(payload: bytes, d: Any = None) -> bytes:
    d = d if d is not None else zlib.decompressobj(-15)
    return bytes(d.decompress(payload + TAIL))


def text_of(size: int, seed: int = 0) -> str:
    """Compressible but not trivial text of ``size`` characters."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
             "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa"]
    out: list[str] = []
    n = 0
    x = seed * 7919 + 1
    while n < size:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        word = words[x % len(words)] + (" " if x % 5 else f"{x % 1000} ")
        out.append(word)
        n += len(word)
    return "".join(out)[:size]


def echo_spec(cfg: object = True, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"message": lambda ws, m: ws.send(m, compress=True),
                            "per_message_deflate": cfg}
    spec.update(extra)
    return spec


# -- negotiation, pure ---------------------------------------------------------------

BUN_LIKE = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def test_parse_extensions_syntax() -> None:
    offers = parse_extensions([
        'permessage-deflate; client_max_window_bits, permessage-deflate ; '
        'server_max_window_bits="10"',
        'x-foo; a="b,c", bad;;, , permessage-deflate; q="a\\"b", last',
    ])
    assert offers == [
        ("permessage-deflate", [("client_max_window_bits", None)]),
        ("permessage-deflate", [("server_max_window_bits", "10")]),
        None,  # "b,c" unescaped is not a token (RFC 6455 9.1)
        None,  # ";;" is not an extension-param
        None,  # a"b is not a token either
        ("last", []),
    ]
    assert parse_extensions(['permessage-deflate; x="unterminated']) == [None]
    assert parse_extensions(["", " , "]) == []


@pytest.mark.parametrize(("header", "config", "expected"), [
    # Plain offers, and the browser / python-websockets default offers.
    ("permessage-deflate", True, BUN_LIKE),
    ("permessage-deflate", {}, "permessage-deflate"),
    ("permessage-deflate; client_max_window_bits", {}, "permessage-deflate"),
    ("permessage-deflate; client_max_window_bits", True, BUN_LIKE),
    ("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12", {},
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
    # Quoted values are values (RFC 6455 9.1).
    ('permessage-deflate; server_max_window_bits="10"', {},
     "permessage-deflate; server_max_window_bits=10"),
    ('permessage-deflate; client_max_window_bits="9"', {},
     "permessage-deflate; client_max_window_bits=9"),
    # Offered flags are answered.
    ("permessage-deflate; server_no_context_takeover", {},
     "permessage-deflate; server_no_context_takeover"),
    ("permessage-deflate; client_no_context_takeover", {},
     "permessage-deflate; client_no_context_takeover"),
    # server_max_window_bits=8: zlib cannot honour it, so that offer is declined.
    ("permessage-deflate; server_max_window_bits=8", {}, None),
    ("permessage-deflate; server_max_window_bits=8, permessage-deflate; "
     "server_max_window_bits=9", {}, "permessage-deflate; server_max_window_bits=9"),
    ("permessage-deflate; server_max_window_bits=8", {"server_max_window_bits": 9}, None),
    ("permessage-deflate; client_max_window_bits=8", {},
     "permessage-deflate; client_max_window_bits=8"),
    # Duplicate or unknown parameters make the offer unacceptable; the next one wins.
    ("permessage-deflate; client_max_window_bits; client_max_window_bits", {}, None),
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", {}, None),
    ("permessage-deflate; foo", {}, None),
    ("permessage-deflate; foo=1, permessage-deflate; client_no_context_takeover", {},
     "permessage-deflate; client_no_context_takeover"),
    ("permessage-deflate; client_max_window_bits; client_max_window_bits=10, "
     "permessage-deflate", True, BUN_LIKE),
    # Invalid values.
    ("permessage-deflate; server_max_window_bits", {}, None),
    ("permessage-deflate; server_max_window_bits=16", {}, None),
    ("permessage-deflate; server_max_window_bits=7", {}, None),
    ("permessage-deflate; server_max_window_bits=010", {}, None),
    ("permessage-deflate; server_max_window_bits=abc", {}, None),
    ("permessage-deflate; client_max_window_bits=16", {}, None),
    ("permessage-deflate; server_no_context_takeover=1", {}, None),
    ('permessage-deflate; client_no_context_takeover="x"', {}, None),
    ('permessage-deflate; server_max_window_bits=""', {}, None),
    ("permessage-deflate; server_max_window_bits=\u00b9\u00b2", {}, None),  # not ASCII digits
    ("permessage-deflate; client_max_window_bits=\u0661\u0660", {}, None),
    # Other extensions are skipped; garbage never raises.
    ("x-webkit-deflate-frame, permessage-deflate", {}, "permessage-deflate"),
    ("x-webkit-deflate-frame", True, None),
    (";;;,,=\"", True, None),
    ("", True, None),
    # Our own limits.
    ("permessage-deflate", {"server_max_window_bits": 10},
     "permessage-deflate; server_max_window_bits=10"),
    ("permessage-deflate; server_max_window_bits=12", {"server_max_window_bits": 10},
     "permessage-deflate; server_max_window_bits=10"),
    ("permessage-deflate; server_max_window_bits=9", {"server_max_window_bits": 10},
     "permessage-deflate; server_max_window_bits=9"),
    ("permessage-deflate; client_max_window_bits", {"client_max_window_bits": 10},
     "permessage-deflate; client_max_window_bits=10"),
    ("permessage-deflate; client_max_window_bits=12", {"client_max_window_bits": 10},
     "permessage-deflate; client_max_window_bits=10"),
    ("permessage-deflate; client_max_window_bits=9", {"client_max_window_bits": 10},
     "permessage-deflate; client_max_window_bits=9"),
    # Not offered: the response may not carry it (7.1.2.2); the client uses 15.
    ("permessage-deflate", {"client_max_window_bits": 10}, "permessage-deflate"),
    ("permessage-deflate", {"server_no_context_takeover": True},
     "permessage-deflate; server_no_context_takeover"),
])
def test_negotiate(header: str, config: object, expected: str | None) -> None:
    cfg = parse_config(config)
    assert cfg is not None
    agreement = negotiate([header], cfg)
    assert (agreement.response if agreement else None) == expected


def test_negotiate_never_raises_on_what_a_client_sends() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    # Mostly the characters that matter to the grammar, so that odd corners come up.
    pieces = st.sampled_from(['"', "\\", ",", ";", "=", " ", "\t", "permessage-deflate",
                              "client_max_window_bits", "server_no_context_takeover", "1",
                              "15", "x", "\u00e9"])
    headers = st.lists(st.lists(pieces, max_size=12).map("".join), max_size=3)

    @settings(max_examples=400, deadline=None, database=None)
    @given(values=headers)
    def check(values: list[str]) -> None:
        for config in (parse_config(True), parse_config({})):
            assert config is not None
            negotiate(values, config)  # an unacceptable offer is just not accepted

    check()
    # Found by fuzzing: an escape as the very last character.
    config = parse_config({})
    assert config is not None and negotiate(['"\\'], config) is None


def test_a_broken_offer_opens_the_connection_plain_and_frees_its_slot(make_server: Any) -> None:
    server = make_server(websocket=echo_spec({}), max_connections=1)
    for _ in range(2):  # the second finds the one slot free again
        client = RawClient(server.port, extra='Sec-WebSocket-Extensions: "\\\r\n')
        assert client.header("Sec-WebSocket-Extensions") is None
        client.send_frame(0x1, b"plain")
        assert client.recv_frame() == (0x1, True, 0, b"plain")
        client.send_frame(0x8, close_body(1000))
        assert client.recv_close()[0] == 1000
        client.close()
        wait_for(lambda: server.stats()["connections"] == 0, message="the slot freed")


def test_negotiate_several_headers_and_agreed_values() -> None:
    cfg = parse_config({"client_max_window_bits": 11})
    assert cfg is not None
    agreement = negotiate(["x-other", "permessage-deflate; foo",
                           "permessage-deflate; client_max_window_bits=12; "
                           "server_max_window_bits=13; server_no_context_takeover"], cfg)
    assert agreement == Agreement(
        server_no_context_takeover=True, client_no_context_takeover=False,
        server_max_window_bits=13, client_max_window_bits=11,
        response="permessage-deflate; server_no_context_takeover; "
                 "server_max_window_bits=13; client_max_window_bits=11")
    assert negotiate([], cfg) is None


def test_config_true_and_false() -> None:
    assert parse_config(False) is None
    assert parse_config(True) == DeflateConfig(server_no_context_takeover=True,
                                               client_no_context_takeover=True)
    assert parse_config({}) == DeflateConfig(server_no_context_takeover=False,
                                             client_no_context_takeover=False)


@pytest.mark.parametrize(("value", "error"), [
    ({"compress": True}, TypeError),
    ({"server_no_context_takeover": 1}, TypeError),
    ({"server_max_window_bits": 8}, ValueError),
    ({"server_max_window_bits": 16}, ValueError),
    ({"server_max_window_bits": "10"}, TypeError),
    ({"client_max_window_bits": 7}, ValueError),
    # The RFC allows 8, but zlib cannot deflate with it: a client told to use it
    # (the usual offer leaves the value to the server) could not connect.
    ({"client_max_window_bits": 8}, ValueError),
    ({"server_max_window_bits": 8.0}, TypeError),
    ({"compress_level": 10}, ValueError),
    ({"mem_level": 0}, ValueError),
    (1, TypeError),
    ("shared", TypeError),
])
def test_bad_config_refused_at_serve(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="per_message_deflate"):
        syncws.serve(websocket={"message": print, "per_message_deflate": value},
                     hostname="127.0.0.1", port=0)


def test_good_configs_accepted() -> None:
    parse_config({"server_no_context_takeover": True, "client_no_context_takeover": False,
                  "server_max_window_bits": 9, "client_max_window_bits": 9,
                  "compress_level": 0, "mem_level": 9})


# -- compressor and inflater, pure ----------------------------------------------------------


def test_shared_compressor_output_is_history_free() -> None:
    agreement = negotiate(["permessage-deflate"], DeflateConfig())
    assert agreement is not None
    comp = make_compressor(agreement, DeflateConfig())
    assert comp.shared and comp is make_compressor(agreement, DeflateConfig())
    msg = text_of(3000).encode()
    first, second = comp.compress(msg), comp.compress(msg)
    assert first == second  # no history: same bytes every time, on any thread
    assert inflate(second) == msg  # a fresh inflater reads it
    assert len(first) < len(msg) // 2
    # Incompressible data goes out plain from a shared compressor.
    noise = os.urandom(1000)
    frame = comp.frame(0x2, noise)
    assert frame[0] == 0x82 and frame.endswith(noise)


def test_context_compressor_uses_history() -> None:
    cfg = parse_config({})
    assert cfg is not None
    agreement = negotiate(["permessage-deflate"], cfg)
    assert agreement is not None
    comp = make_compressor(agreement, cfg)
    assert not comp.shared and comp is not make_compressor(agreement, cfg)
    msg = text_of(3000).encode()
    d = zlib.decompressobj(-15)
    first = comp.compress(msg)
    second = comp.compress(msg)
    assert len(second) < len(first) // 4
    assert inflate(first, d) == msg and inflate(second, d) == msg


def feed_ext(ext: DeflateExtension, data: bytes) -> list[Any]:
    proto = FrameProtocol(client=False, extensions=[ext])
    proto.receive_bytes(data)
    return list(proto.received_frames())


def test_inflate_is_bounded_per_chunk() -> None:
    agreement = negotiate(["permessage-deflate"], DeflateConfig())
    assert agreement is not None
    limit = 100_000
    ext = DeflateExtension(agreement, limit)
    exact = bytes(limit)
    frames = feed_ext(ext, client_frame(0x2, deflate(exact), rsv=4))
    assert frames[0].payload == exact  # the limit is inclusive
    # One byte over, in one tiny chunk: refused without inflating the rest.
    seen: list[int] = []
    original = ext._inflate

    def spy(data: bytes) -> Any:
        result = original(data)
        if isinstance(result, bytes):
            seen.append(len(result))
        return result

    ext._inflate = spy  # type: ignore[method-assign]
    with pytest.raises(ParseFailed) as info:
        feed_ext(ext, client_frame(0x2, deflate(bytes(100 * limit)), rsv=4))
    assert info.value.code == 1009
    assert sum(seen) <= limit


def test_context_takeover_survives_a_message_ended_with_bfinal(make_server: Any) -> None:
    """RFC 7692 7.2.3.4 lets a sender end a message with a BFINAL block; with context
    takeover its next message, a new deflate stream, may still refer to the earlier ones."""
    got: list[Any] = []
    closed: list[int] = []
    server = make_server(websocket={"message": lambda ws, m: got.append(m),
                                    "close": lambda ws, code, reason: closed.append(code),
                                    "per_message_deflate": {}})
    client = RawClient(server.port, extra=OFFER)
    messages = [text_of(300, 1).encode(), text_of(50_000, 2).encode(), text_of(200, 2).encode(),
                text_of(40, 1).encode() + text_of(30, 2).encode(), text_of(300, 1).encode()]
    sent = b""  # what the receiver has inflated so far: the window to refer to
    compressor: Any = None
    for n, msg in enumerate(messages):
        if n < 3:
            # Each a whole stream of its own, ended by BFINAL, primed with the window.
            history = sent[-32768:]
            one = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=history) if history else \
                zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = one.compress(msg) + one.flush(zlib.Z_FINISH)
        else:
            # Then back to the usual sync flush, in one stream that goes on.
            compressor = compressor or zlib.compressobj(6, zlib.DEFLATED, -15,
                                                        zdict=sent[-32768:])
            payload = (compressor.compress(msg) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        client.send_frame(0x2, payload, rsv=4)
        sent += msg
    wait_for(lambda: len(got) == len(messages) or bool(closed), message="every message")
    assert (got, closed) == (messages, [])
    client.close()


def test_the_kept_window_costs_about_a_window_whatever_the_messages() -> None:
    import tracemalloc

    agreement = negotiate(["permessage-deflate"], parse_config({}))  # context takeover
    assert agreement is not None
    ext = DeflateExtension(agreement, 1 << 20)
    proto = FrameProtocol(client=False, extensions=[ext])
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    frames = b"".join(
        client_frame(0x2, (compressor.compress(b"%02d" % (n % 100))
                           + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv=4)
        for n in range(20_000))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, len(frames), 4096):
            proto.receive_bytes(frames[start:start + 4096])
            for _ in proto.received_frames():
                pass
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 20,000 tiny messages: about one 32 KiB window kept (and the parser's buffers),
    # not an object per message (that was 750 KB).
    assert grown < 160 * 1024, grown


# -- through the server -----------------------------------------------------------------


def test_101_and_round_trips(make_server: Any) -> None:
    server = make_server(websocket=echo_spec(True))
    with connect(f"ws://127.0.0.1:{server.port}/", compression="deflate",
                 max_size=None, open_timeout=wait(5)) as client:
        assert client.response.headers["Sec-WebSocket-Extensions"] == BUN_LIKE
        for size in (0, 1, 64 * 1024, 4 * 1024 * 1024):
            text = text_of(size, seed=size)
            data = text.encode() + os.urandom(min(size, 100))
            client.send(text)
            assert client.recv(timeout=wait(10)) == text
            client.send(data)
            assert client.recv(timeout=wait(10)) == data


def test_rsv1_on_the_wire(make_server: Any) -> None:
    message = text_of(3000)
    sizes: list[int] = []

    def on_message(ws: Any, msg: str) -> None:
        sizes.append(ws.send(message, compress=msg == "compress"))
        ws.send_text(message, compress=msg == "compress")
        ws.send_binary(message.encode(), compress=msg == "compress")
        ws.send("tiny", compress=True)  # under MIN_COMPRESS_SIZE: plain

    server = make_server(websocket={"message": on_message, "per_message_deflate": True})
    client = RawClient(server.port, extra=OFFER)
    assert client.header("Sec-WebSocket-Extensions") == BUN_LIKE
    client.send_frame(0x1, b"compress")
    for opcode in (0x1, 0x1, 0x2):
        op, fin, rsv, payload = client.recv_frame()
        assert (op, fin, rsv) == (opcode, True, RSV1)
        assert len(payload) < 1000 and inflate(payload) == message.encode()
    assert client.recv_frame() == (0x1, True, 0, b"tiny")
    client.send_frame(0x1, b"plain")
    for opcode in (0x1, 0x1, 0x2):
        assert client.recv_frame() == (opcode, True, 0, message.encode())
    assert client.recv_frame() == (0x1, True, 0, b"tiny")
    assert sizes == [3000, 3000]  # always the uncompressed length
    # Without negotiation compress=True is ignored, as in Bun.
    plain = RawClient(server.port)
    assert plain.header("Sec-WebSocket-Extensions") is None
    plain.send_frame(0x1, b"compress")
    assert plain.recv_frame() == (0x1, True, 0, message.encode())
    client.close()
    plain.close()


def test_compressed_message_from_raw_client_is_inflated(make_server: Any) -> None:
    got: list[Any] = []
    server = make_server(websocket={"message": lambda ws, m: got.append(m),
                                    "per_message_deflate": True})
    client = RawClient(server.port, extra=OFFER)
    body = text_of(5000).encode()
    compressed = deflate(body)
    # Fragmented: RSV1 on the first frame only, a ping in between.
    client.send_frame(0x1, compressed[:100], fin=False, rsv=4)
    client.send_frame(0x9, b"p")
    client.send_frame(0x0, compressed[100:], fin=True)
    client.send_frame(0x2, b"uncompressed")
    wait_for(lambda: len(got) == 2, message="two messages")
    assert got == [body.decode(), b"uncompressed"]
    client.close()


@pytest.mark.parametrize("bits", range(9, 16))
@pytest.mark.parametrize("takeover", [True, False])
def test_window_bits_and_context_takeover(make_server: Any, bits: int, takeover: bool) -> None:
    server = make_server(websocket=echo_spec({
        "server_no_context_takeover": not takeover, "client_no_context_takeover": not takeover,
        "server_max_window_bits": bits, "client_max_window_bits": bits}))
    factory = ClientPerMessageDeflateFactory(
        server_no_context_takeover=not takeover, client_no_context_takeover=not takeover,
        server_max_window_bits=bits, client_max_window_bits=bits)
    with connect(f"ws://127.0.0.1:{server.port}/", extensions=[factory], max_size=None,
                 open_timeout=wait(5)) as client:
        header = client.response.headers["Sec-WebSocket-Extensions"]
        assert f"server_max_window_bits={bits}" in header
        assert f"client_max_window_bits={bits}" in header
        assert ("no_context_takeover" in header) is not takeover
        messages = [text_of(2000, 1), text_of(2000, 1), text_of(100_000, 2), text_of(700, 3),
                    text_of(2000, 1).encode()]
        for msg in messages:
            client.send(msg)
            assert client.recv(timeout=wait(10)) == msg


def test_offers_answered_in_101(make_server: Any) -> None:
    server = make_server(websocket=echo_spec({}))
    cases = {
        'permessage-deflate; server_max_window_bits="10"':
            "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=8, permessage-deflate; "
        "client_max_window_bits": "permessage-deflate",
        "permessage-deflate; foo, permessage-deflate; server_no_context_takeover":
            "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=8": None,
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover": None,
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11": None,
    }
    for offer, expected in cases.items():
        client = RawClient(server.port, extra=f"Sec-WebSocket-Extensions: {offer}\r\n")
        assert client.status == 101
        assert client.header("Sec-WebSocket-Extensions") == expected, offer
        client.send_frame(0x1, text_of(500).encode())
        op, _, rsv, payload = client.recv_frame()
        assert op == 0x1
        assert (inflate(payload) if rsv else payload) == text_of(500).encode()
        client.close()
    # Two header lines: the first acceptable offer across both.
    client = RawClient(server.port, extra="Sec-WebSocket-Extensions: permessage-deflate; x\r\n"
                       "Sec-WebSocket-Extensions: permessage-deflate; "
                       "client_max_window_bits=9\r\n")
    assert client.header("Sec-WebSocket-Extensions") == \
        "permessage-deflate; client_max_window_bits=9"
    client.close()


def closed_with(client: RawClient) -> int | None:
    code, _ = client.recv_close()
    return code


@pytest.mark.parametrize(("negotiated", "frames", "code"), [
    # RSV1 without negotiation.
    (False, [client_frame(0x1, deflate(b"hello hello"), rsv=4)], 1002),
    # RSV1 on a continuation frame.
    (True, [client_frame(0x1, deflate(b"hello"), fin=False, rsv=4),
            client_frame(0x0, b"x", rsv=4)], 1002),
    (True, [client_frame(0x1, b"hel", fin=False), client_frame(0x0, b"lo", rsv=4)], 1002),
    # RSV1 on control frames.
    (True, [client_frame(0x9, b"ping", rsv=4)], 1002),
    (True, [client_frame(0xA, b"", rsv=4)], 1002),
    # RSV2 / RSV3 are still reserved.
    (True, [client_frame(0x1, b"x", rsv=2)], 1002),
    # Bad deflate data (a reserved block type), in one frame or split.
    (True, [client_frame(0x2, b"\xff\xff\xff\xff", rsv=4)], 1007),
    (True, [client_frame(0x2, b"\x00", fin=False, rsv=4),  # stored block, LEN != ~NLEN
            client_frame(0x0, b"\x05\x00\x00\x00")], 1007),
    # Inflates to invalid UTF-8 in a text message.
    (True, [client_frame(0x1, deflate(b"\xff\xfe" * 50), rsv=4)], 1007),
])
def test_protocol_errors(make_server: Any, negotiated: bool, frames: list[bytes],
                         code: int) -> None:
    closes: list[int] = []
    got: list[Any] = []
    server = make_server(websocket={"message": lambda ws, m: got.append(m),
                                    "close": lambda ws, c, r: closes.append(c),
                                    "per_message_deflate": negotiated})
    client = RawClient(server.port, extra=OFFER)
    assert (client.header("Sec-WebSocket-Extensions") is not None) is negotiated
    for frame in frames:
        client.send(frame)
    assert closed_with(client) == code
    wait_for(lambda: closes == [code], message="close handler")
    assert got == []
    client.close()


def test_too_big_after_inflating_is_1009(make_server: Any) -> None:
    got: list[Any] = []
    limit = 64 * 1024
    server = make_server(websocket={"message": lambda ws, m: got.append(len(m)),
                                    "per_message_deflate": {}, "max_payload_length": limit})
    client = RawClient(server.port, extra=OFFER)
    client.send_frame(0x2, deflate(bytes(limit)), rsv=4)  # exactly the limit: delivered
    wait_for(lambda: got == [limit], message="message at the limit")
    # Fragmented, the total passes the limit only in the third frame.
    part = deflate(bytes(limit // 2 + 1) * 3)
    third = len(part) // 3
    client.send_frame(0x2, part[:third], fin=False, rsv=4)
    client.send_frame(0x0, part[third:2 * third], fin=False)
    client.send_frame(0x0, part[2 * third:], fin=True)
    assert client.recv_close() == (1009, b"Message too big")
    assert got == [limit]
    client.close()


def test_uncompressed_frame_announcing_too_much_fails_at_its_header(make_server: Any) -> None:
    """With deflate on, a frame sent plain still fails at its header; a compressed one cannot."""
    got: list[Any] = []
    server = make_server(websocket={"message": lambda ws, m: got.append(m),
                                    "per_message_deflate": {}, "max_payload_length": 1000})
    plain = RawClient(server.port, extra=OFFER)
    plain.send(client_frame(0x2, bytes(2000))[:8 + 10])  # its header and 10 bytes, no more
    assert closed_with(plain) == 1009
    plain.close()
    # Over 1000 bytes on the wire, 800 once inflated: within the limit, delivered.
    packer = zlib.compressobj(0, zlib.DEFLATED, -15)
    wire = b"".join(packer.compress(bytes([i]) * 4) + packer.flush(zlib.Z_SYNC_FLUSH)
                    for i in range(200))[:-4]
    assert len(wire) > 1000
    compressed = RawClient(server.port, extra=OFFER)
    compressed.send(client_frame(0x2, wire, rsv=4))
    wait_for(lambda: got == [b"".join(bytes([i]) * 4 for i in range(200))],
             message="the compressed message")
    compressed.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        match = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M)
    assert match is not None
    return int(match.group(1))


@contextlib.contextmanager
def server_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python *args`` as a server whose memory is its own; yields it and its first line."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc, proc.stdout.readline()
    finally:
        proc.terminate()
        try:
            proc.wait(wait(10))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def bomb(compressed_size: int) -> tuple[bytes, int]:
    """~``compressed_size`` bytes of deflate data inflating to ~1000x as many zeros."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    # After Z_FULL_FLUSH a block refers to nothing before it, so it can be repeated.
    c.compress(b"\0")
    c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    count = compressed_size // len(block)
    return block * count, count << 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.timeout(120)
def test_bomb_is_refused_with_bounded_memory() -> None:
    payload, inflated = bomb(1_000_000)
    assert inflated > 900 * 1024 * 1024  # the bomb really inflates to about a gigabyte
    check = zlib.decompressobj(-15)
    assert check.decompress(payload[: 64 * 1024], 1000) == bytes(1000)
    port = free_port()
    with server_process("-m", "syncws", "echo", "--port", str(port),
                        "--max-payload-length", str(1 << 20)) as (proc, line):
        assert f":{port}" in line, line
        client = RawClient(port, extra=OFFER, timeout=30)
        assert client.header("Sec-WebSocket-Extensions") is not None
        # Warm up: one compressed echo each way, so the baseline includes zlib.
        warm = text_of(50_000).encode()
        client.send_frame(0x1, deflate(warm), rsv=4)
        _, _, rsv, echoed = client.recv_frame()
        assert (inflate(echoed) if rsv else echoed) == warm
        before = vm_hwm_kib(proc.pid)
        frame = client_frame(0x2, payload, rsv=4)

        def push() -> None:
            with contextlib.suppress(OSError):  # the server may close before taking it all
                client.sock.sendall(frame)

        sender = threading.Thread(target=push, daemon=True)
        sender.start()
        assert closed_with(client) == 1009
        sender.join(wait(30))
        after = vm_hwm_kib(proc.pid)
        assert after - before < 20 * 1024, (before, after)
        # The server is still fine.
        other = RawClient(port, extra=OFFER)
        other.send_frame(0x1, b"still here")
        assert other.recv_frame()[3] == b"still here"
        other.close()
        client.close()


SLOW_HANDLER_SERVER = """
import time, syncws

def on_message(ws, message):
    time.sleep(0.05)
    ws.send(str(len(message)))

server = syncws.serve(hostname="127.0.0.1", port=0, websocket={
    "message": on_message, "per_message_deflate": True})
print(server.port, flush=True)
server.serve_forever()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.timeout(120)
def test_compressed_messages_wait_for_a_slow_handler_within_the_inbound_bound() -> None:
    """24 messages of 8 MiB that compress to 8 KiB each arrive in one read.

    Inflating them all at once would queue 192 MiB for the handler; the
    server stops parsing past the ~1 MiB mark instead, holds the compressed
    rest, and still hands every message over, in order.
    """
    with server_process("-c", SLOW_HANDLER_SERVER) as (proc, line):
        port = int(line)
        client = RawClient(port, extra=OFFER, timeout=wait(60))
        assert client.header("Sec-WebSocket-Extensions") is not None
        big = b"a" * (8 << 20)
        client.send_frame(0x2, deflate(big), rsv=4)  # warm up: zlib and one message
        assert client.recv_frame()[3] == str(len(big)).encode()
        before = vm_hwm_kib(proc.pid)
        frames = [client_frame(0x2, deflate(big), rsv=4) for _ in range(24)]
        assert len(b"".join(frames)) < 256 * 1024  # one read's worth
        client.sock.sendall(b"".join(frames))
        replies = [client.recv_frame() for _ in frames]
        assert [(op, rsv, payload) for op, _, rsv, payload in replies] == \
            [(0x1, 0, str(len(big)).encode())] * 24
        after = vm_hwm_kib(proc.pid)
        assert after - before < 48 * 1024, (before, after)
        client.close()


def test_compressed_messages_held_for_a_busy_handler_outlive_the_peer_closing(
        make_server: Any) -> None:
    """A burst that one read takes whole, its close frame, then FIN; the handler is stuck.

    Idle ticks see the peer's side closed while most of the burst still
    waits, compressed, to be parsed: every message is still handled, and
    the close is the peer's own.
    """
    handled: list[str] = []
    closes: list[tuple[int, str]] = []
    closed, release = threading.Event(), threading.Event()

    def on_message(ws: Any, message: str) -> None:
        release.wait(wait(10))
        handled.append(message)

    def on_close(ws: Any, code: int, reason: str) -> None:
        closes.append((code, reason))
        closed.set()

    server = make_server(websocket={"message": on_message, "close": on_close,
                                    "per_message_deflate": True, "idle_timeout": 1,
                                    "send_pings": False})
    client = RawClient(server.port, extra=OFFER)
    messages = [f"{i:03d}" + "x" * 20_000 for i in range(200)]  # 4 MB, past the backlog mark
    burst = b"".join(client_frame(0x1, deflate(m.encode()), rsv=4) for m in messages)
    assert len(burst) < 64 * 1024  # one read takes it all
    client.sock.sendall(burst + client_frame(0x8, close_body(1000)))
    client.sock.shutdown(socket.SHUT_WR)
    assert not closed.wait(2.5)  # idle ticks pass while the handler is stuck
    release.set()
    assert closed.wait(wait(20))
    assert handled == messages
    assert closes == [(1000, "")]
    client.close()


@pytest.mark.parametrize("config", [True, {}])
def test_publish_to_deflate_and_plain_subscribers(make_server: Any, config: object) -> None:
    server = make_server(websocket={"open": lambda ws: ws.subscribe("room"),
                                    "message": lambda ws, m: None,
                                    "per_message_deflate": config}, workers=8)
    deflaters = [RawClient(server.port, extra=OFFER) for _ in range(100)]
    plain = [RawClient(server.port) for _ in range(100)]
    wait_for(lambda: server.subscriber_count("room") == 200, timeout=10, message="subscribers")
    texts = [text_of(4000, 5), text_of(4000, 5), "short"]
    for text in texts:
        assert server.publish("room", text, compress=True) == len(text.encode())
    for client in deflaters:
        d = zlib.decompressobj(-15)  # kept across messages: takeover when config is {}
        for text in texts:
            op, fin, rsv, payload = client.recv_frame()
            assert op == 0x1 and fin
            if len(text) >= MIN_COMPRESS_SIZE:
                assert rsv == RSV1
                assert inflate(payload, d).decode() == text
            else:
                assert (rsv, payload.decode()) == (0, text)
        client.close()
    for client in plain:
        for text in texts:
            assert client.recv_frame() == (0x1, True, 0, text.encode())
        client.close()


def test_cork_and_threads_keep_the_context_in_order(make_server: Any) -> None:
    """With context takeover, compression order must be wire order, whoever sends."""
    texts = [text_of(300 + 50 * i, i) for i in range(40)]

    def on_message(ws: Any, msg: str) -> None:
        if msg == "cork":
            def corked(w: Any) -> None:
                for i, text in enumerate(texts[:10]):
                    w.send(text, compress=i % 3 != 0)
            ws.cork(corked)
            return

        def blast(base: int) -> None:
            for i in range(50):
                ws.send(f"{base}:{i}:" + texts[(base + i) % len(texts)], compress=i % 4 != 0)

        threads = [threading.Thread(target=blast, args=(b,)) for b in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ws.send("done", compress=True)

    server = make_server(websocket={"message": on_message, "per_message_deflate": {}})
    with connect(f"ws://127.0.0.1:{server.port}/", compression="deflate",
                 open_timeout=wait(5)) as client:
        client.send("cork")
        assert [client.recv(timeout=wait(5)) for _ in range(10)] == texts[:10]
        client.send("threads")
        received = []
        while (msg := client.recv(timeout=wait(10))) != "done":
            received.append(msg)
        expected = {f"{b}:{i}:" + texts[(b + i) % len(texts)] for b in range(4)
                    for i in range(50)}
        assert len(received) == 200 and set(received) == expected
        for base in range(4):  # each thread's own sends stay in order
            mine = [int(m.split(":")[1]) for m in received if m.startswith(f"{base}:")]
            assert mine == list(range(50))


def test_echo_cli_negotiates() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "syncws", "echo", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        assert f":{port}" in proc.stdout.readline()
        with connect(f"ws://127.0.0.1:{port}/", compression="deflate",
                     open_timeout=wait(5)) as client:
            assert "permessage-deflate" in client.response.headers["Sec-WebSocket-Extensions"]
            client.send(text_of(10_000))
            assert client.recv(timeout=wait(5)) == text_of(10_000)
    finally:
        proc.terminate()
        proc.wait(wait(10))
        assert proc.stdout is not None
        proc.stdout.close()

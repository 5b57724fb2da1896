"""Differential test: the lean path plus wsproto must equal wsproto alone."""

from __future__ import annotations

import itertools
import os
import socket
import struct
import threading
from typing import Any

import pytest
from conftest import RawClient, client_frame, close_body, wait, wait_for
from hypothesis import example, given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

import syncws
from syncws import _dispatch as dispatch
from syncws import _fastpath, _ws_conn
from syncws._fastpath import parse_simple_frames
from syncws._frames import mask_payload_python
from syncws._loop import EventLoop
from syncws._ws_conn import WsConnection

MAX = 1000


def wsproto_messages(data: bytes) -> tuple[list[tuple[Any, ...]], int | None]:
    """Messages, controls and the failure code wsproto finds in ``data``."""
    proto = FrameProtocol(client=False, extensions=[])
    proto.receive_bytes(data)
    out: list[tuple[Any, ...]] = []
    parts: list[Any] = []
    size = 0
    try:
        for frame in proto.received_frames():
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                payload: Any = frame.payload
                size += len(payload.encode() if isinstance(payload, str) else payload)
                if size > MAX:
                    return out, 1009
                parts.append(payload)
                if frame.message_finished:
                    joined = ("" if isinstance(payload, str) else b"").join(parts)
                    out.append(("msg", joined))
                    parts, size = [], 0
            elif frame.opcode is Opcode.CLOSE:
                out.append(("close", frame.payload))
                break
            else:
                out.append((frame.opcode.name, frame.payload))
    except ParseFailed as exc:
        return out, int(exc.code)
    return out, None


def both_paths(data: bytes) -> tuple[list[tuple[Any, ...]], int | None]:
    consumed, messages, wait = parse_simple_frames(data, MAX)
    rest, code = wsproto_messages(data[consumed:])
    if wait:
        # Held for more bytes: nothing in them may have been due yet.
        assert (rest, code) == ([], None)
    return [("msg", payload) for payload, _ in messages] + rest, code


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, mask: bool = True,
          key: bytes = b"\x01\x02\x03\x04", long: bool = False) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask else 0
    n = len(payload)
    if long or n > 65535:
        head = bytes([first, mbit | 127]) + struct.pack("!Q", n)
    elif n > 125:
        head = bytes([first, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, mbit | n])
    if not mask:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


frames = st.builds(
    frame,
    opcode=st.sampled_from([0, 1, 2, 3, 8, 9, 10, 11]),
    payload=st.one_of(st.binary(max_size=300), st.text(max_size=100).map(str.encode),
                      st.sampled_from([b"\xff", b"\xe2\x82", b"\xed\xa0\x80", b"a" * 1001])),
    fin=st.sampled_from([True, True, True, False]),
    rsv=st.sampled_from([0, 0, 0, 1, 4]),
    mask=st.sampled_from([True, True, True, True, False]),
    key=st.binary(min_size=4, max_size=4),
    long=st.sampled_from([False] * 7 + [True]),
)


@settings(max_examples=int(os.environ.get("SYNCWS_FUZZ_EXAMPLES", "300")), deadline=None)
@given(stream=st.lists(frames, max_size=8), junk=st.binary(max_size=20), cut=st.integers(0, 3000))
def test_fast_path_agrees_with_wsproto(stream: list[bytes], junk: bytes, cut: int) -> None:
    data = b"".join(stream) + junk
    assert both_paths(data) == wsproto_messages(data)
    # Incomplete data at the end: the fast path must stop at the frame boundary.
    assert both_paths(data[:cut]) == wsproto_messages(data[:cut])


def test_fast_path_takes_the_common_case() -> None:
    data = frame(1, "héllo".encode()) + frame(2, b"\x00" * 300) + frame(9, b"p")
    consumed, messages, wait = parse_simple_frames(data, MAX)
    assert messages == [("héllo", 6), (b"\x00" * 300, 300)]
    assert data[consumed:] == frame(9, b"p") and not wait


def test_fast_path_leaves_hard_cases_to_wsproto() -> None:
    for hard in (frame(1, b"a", fin=False), frame(1, b"\xff"), frame(1, b"a", rsv=4),
                 frame(1, b"a", mask=False), frame(2, b"a" * 1001), frame(2, b"ab", long=True),
                 frame(1, b"a" * 300)[:-1],
                 bytes([0x82, 0x80 | 127]) + b"\x80" + bytes(7) + b"\0\0\0\0",
                 bytes([0x81, 0x80 | 126]) + struct.pack("!H", 5) + b"\0\0\0\0hello"):
        assert parse_simple_frames(hard, MAX) == (0, [], False)


@pytest.mark.parametrize("masker", ["installed", "pure-python"])
def test_fast_path_takes_16_and_64_bit_lengths(monkeypatch: pytest.MonkeyPatch,
                                               masker: str) -> None:
    if masker == "pure-python":  # what runs without syncws[speedups]
        monkeypatch.setattr(_fastpath, "mask_payload", mask_payload_python)
    mid = bytes(range(256)) * 200  # 51,200 bytes: a 2-byte length
    big = bytes(range(256)) * 300  # 76,800 bytes: an 8-byte length
    data = frame(2, mid) + frame(2, big) + frame(1, big)
    consumed, messages, wait = parse_simple_frames(data, len(big))
    assert messages == [(mid, len(mid)), (big, len(big))]
    assert data[consumed:] == frame(1, big) and not wait  # not UTF-8
    assert parse_simple_frames(frame(2, mid), len(mid) - 1) == (0, [], False)


def test_fast_path_waits_for_the_rest_of_a_binary_frame_and_of_any_header() -> None:
    """Any cut inside a binary frame says wait; inside a text frame, only a cut in its
    header (wsproto checks a text payload's UTF-8 as it arrives)."""
    head = frame(2, b"ok")
    for payload in (b"x" * 100, b"y" * 300, bytes(70_000)):
        binary = frame(2, payload)
        header_size = len(binary) - len(payload)
        for cut in (1, 2, 5, 7, 9, 13, len(binary) // 2, len(binary) - 1):
            consumed, messages, wait = parse_simple_frames(head + binary[:cut], 100_000)
            assert (consumed, messages, wait) == (len(head), [(b"ok", 2)], True), cut
            text = frame(1, payload)[:cut]
            assert parse_simple_frames(text, 100_000) == (0, [], cut < header_size), cut


def test_fast_path_takes_at_most_max_frames_from_offset() -> None:
    data = b"".join(frame(1, str(i).encode()) for i in range(10))
    first = len(frame(1, b"0"))
    pos, messages, wait = parse_simple_frames(data, MAX, first, 3)
    assert [m for m, _ in messages] == ["1", "2", "3"] and not wait
    assert parse_simple_frames(data, MAX, pos)[1][0] == ("4", 1)


def test_pure_python_masking_matches_the_c_routine() -> None:
    from syncws._frames import mask_payload

    for n in (0, 1, 3, 4, 5, 63, 64, 2047, 2049, 65536 + 3):
        payload = os.urandom(n)
        key = os.urandom(4)
        expected = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        assert mask_payload_python(payload, key) == expected
        assert mask_payload_python(memoryview(payload), key) == expected
        assert mask_payload(memoryview(payload), key) == expected


# -- the connection's own parse: lean parser and wsproto taking turns, on a budget ----

class FeedProbe(WsConnection):
    """A server connection driven by hand: what ``feed`` hands on, and how it ends."""

    __slots__ = ("peer_closed", "seen", "verdict")

    def deliver(self, events: list[Any]) -> None:
        kinds = {dispatch.MESSAGE: "msg", dispatch.PING: "PING", dispatch.PONG: "PONG"}
        self.seen += [(kinds[kind], payload) for kind, payload, _ in events]

    def answer_ping(self, payload: bytes) -> None:
        pass

    def fail(self, code: int, reason: str) -> None:
        self.verdict = code

    def remote_close(self, code: int, reason: str) -> None:
        # The close handler runs after the messages this feed delivers (the real
        # connection queues it once the close echo is flushed): record it then.
        self.peer_closed = (code, reason)


def feed_in_pieces(server: Any, data: bytes,
                   cuts: list[int]) -> tuple[list[tuple[Any, ...]], int | None]:
    """What a connection makes of ``data`` read in pieces, each loop turn run to its end."""
    loop = EventLoop()
    loop._thread_id = threading.get_ident()  # this thread plays the loop thread
    ours, theirs = socket.socketpair()
    with ours, theirs:
        conn = FeedProbe(ours, loop, ("127.0.0.1", 1), threading.Lock(), server, "", [])
        conn.seen, conn.verdict, conn.peer_closed = [], None, None
        for start, end in itertools.pairwise(sorted({0, *cuts, len(data)})):
            conn.feed(memoryview(bytearray(data[start:end])))
            while loop._next_turn and conn.verdict is None and conn.peer_closed is None:
                due, loop._next_turn = loop._next_turn, []
                for resume in due:
                    resume()
            if conn.peer_closed is not None:
                conn.seen.append(("close", conn.peer_closed))
                break
            if conn.verdict is not None:
                break
        loop.selector.close()
        return conn.seen, conn.verdict


@pytest.fixture(scope="module")
def probe_server() -> Any:
    server = syncws.serve(_upgrade, {"message": print, "ping": print, "pong": print,
                                     "max_payload_length": MAX}, hostname="127.0.0.1", port=0)
    yield server
    server.stop()


@settings(max_examples=int(os.environ.get("SYNCWS_FUZZ_EXAMPLES", "300")), deadline=None)
@given(stream=st.lists(frames, max_size=12), cuts=st.lists(st.integers(0, 3000), max_size=6),
       budget=st.sampled_from([1, 3, 16, _ws_conn.PARSE_BUDGET]))
# A message and the close frame in one read: the close handler comes after the message.
@example(stream=[b"\x81\x80\x00\x00\x00\x00", b"\x88\x80\x00\x00\x00\x00"], cuts=[], budget=3)
def test_connection_parse_agrees_with_wsproto(probe_server: Any, stream: list[bytes],
                                              cuts: list[int], budget: int) -> None:
    """Read in any pieces, on any budget, the server sees what wsproto alone sees."""
    data = b"".join(stream)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_ws_conn, "PARSE_BUDGET", budget)
        patch.setattr(_ws_conn, "WSPROTO_FRAME_COST", min(budget, 8))
        assert feed_in_pieces(probe_server, data, cuts) == wsproto_messages(data)


def test_a_flood_of_tiny_frames_is_parsed_over_several_turns(probe_server: Any) -> None:
    """One read of 256 KiB of empty pings is not parsed in one go: other sockets get turns."""
    loop = EventLoop()
    loop._thread_id = threading.get_ident()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        conn = FeedProbe(ours, loop, ("127.0.0.1", 1), threading.Lock(), probe_server, "", [])
        conn.seen, conn.verdict = [], None
        pings = 256 * 1024 // len(frame(9, b""))
        flood = frame(9, b"") * pings + frame(1, b"last")
        conn.feed(memoryview(bytearray(flood)))
        turns = 1
        per_turn = [len(conn.seen)]
        while loop._next_turn:
            resume, = loop._next_turn
            loop._next_turn = []
            resume()
            turns += 1
            per_turn.append(len(conn.seen) - sum(per_turn))
        loop.selector.close()
    assert conn.seen == [("PING", b"")] * pings + [("msg", "last")]
    assert max(per_turn) <= _ws_conn.PARSE_BUDGET // _ws_conn.WSPROTO_FRAME_COST
    assert turns > 100


# -- the held frame, end to end: each piece reaches the server in its own read ------

def _upgrade(req: syncws.Request, server: syncws.Server[None]) -> syncws.Response | None:
    return None if server.upgrade(req) else syncws.Response("upgrade only", status=400)


def _echo_server(make_server: Any, received: list[Any]) -> Any:
    def message(ws: syncws.ServerWebSocket[None], msg: str | bytes) -> None:
        received.append(msg)
        ws.send(msg)

    return make_server(_upgrade,
                       {"message": message})


def _send_in_pieces(server: Any, client: RawClient, data: bytes, cuts: list[int]) -> None:
    """Send ``data`` cut at ``cuts``, each piece only once the server has read the last."""
    for start, end in itertools.pairwise([0, *cuts, len(data)]):
        target = server.stats()["bytes_in"] + end - start
        client.send(data[start:end])
        wait_for(lambda target=target: server.stats()["bytes_in"] >= target,
                 message="the server read the piece")


@pytest.mark.parametrize("cuts", [[1], [5, 9], [13], [14, 70_000], [3, 40_000, 100_000]],
                         ids=["first-byte", "inside-length", "inside-key", "payload", "many"])
def test_binary_frame_arriving_in_pieces_is_one_message(make_server: Any, cuts: list[int]) -> None:
    received: list[Any] = []
    server = _echo_server(make_server, received)
    client = RawClient(server.port)
    payload = os.urandom(150_000)
    data = client_frame(0x2, payload) + client_frame(0x1, b"after")
    _send_in_pieces(server, client, data, cuts)
    assert client.recv_frame() == (0x2, True, 0, payload)
    assert client.recv_frame() == (0x1, True, 0, b"after")
    assert received == [payload, "after"]
    client.close()


def test_peer_vanishing_inside_a_held_frame_closes_1006(make_server: Any) -> None:
    closed: list[tuple[int, str]] = []
    done = threading.Event()

    def close(ws: Any, code: int, reason: str) -> None:
        closed.append((code, reason))
        done.set()

    server = make_server(_upgrade,
                         {"message": lambda ws, msg: None, "close": close})
    client = RawClient(server.port)
    _send_in_pieces(server, client, client_frame(0x2, bytes(100_000))[:50_000], [])
    client.close()
    assert done.wait(wait(5))
    assert closed == [(1006, "")]


def test_close_frame_after_a_held_frame_is_answered(make_server: Any) -> None:
    """The held bytes go back into the stream in order: the message, then the close."""
    received: list[Any] = []
    server = _echo_server(make_server, received)
    client = RawClient(server.port)
    data = client_frame(0x2, b"z" * 1000) + client_frame(0x8, close_body(1000))
    _send_in_pieces(server, client, data, [600])
    # (The echo may or may not precede the close reply: see RFC 6455 section 5.5.1.)
    assert client.recv_close() == (1000, b"")
    wait_for(lambda: received == [b"z" * 1000], message="the message was handled")
    client.close()

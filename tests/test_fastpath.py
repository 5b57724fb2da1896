"""Differential test: the lean path plus wsproto must equal wsproto alone."""

from __future__ import annotations

import os
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from syncws._fastpath import parse_simple_frames

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
    consumed, messages = parse_simple_frames(data, MAX)
    rest, code = wsproto_messages(data[consumed:])
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
    consumed, messages = parse_simple_frames(data, MAX)
    assert messages == [("héllo", 6), (b"\x00" * 300, 300)]
    assert data[consumed:] == frame(9, b"p")


def test_fast_path_leaves_hard_cases_to_wsproto() -> None:
    for hard in (frame(1, b"a", fin=False), frame(1, b"\xff"), frame(1, b"a", rsv=4),
                 frame(1, b"a", mask=False), frame(2, b"a" * 1001), frame(2, b"ab", long=True),
                 frame(2, b"a" * 300)[:-1],
                 bytes([0x81, 0x80 | 126]) + struct.pack("!H", 5) + b"\0\0\0\0hello"):
        assert parse_simple_frames(hard, MAX) == (0, [])


def test_fast_path_takes_16_bit_lengths_and_leaves_64_bit_ones() -> None:
    mid = bytes(range(256)) * 200  # 51,200 bytes: a 2-byte length
    big = bytes(range(256)) * 300  # 76,800 bytes: an 8-byte length
    data = frame(2, mid) + frame(2, big)
    consumed, messages = parse_simple_frames(data, len(big))
    assert messages == [(mid, len(mid))] and data[consumed:] == frame(2, big)
    assert parse_simple_frames(frame(2, mid), len(mid) - 1) == (0, [])

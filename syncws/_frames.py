"""Pure WebSocket frame encoding (RFC 6455 section 5.2) and close-argument rules.

No socket, thread or clock here. Server frames are unmasked, so one encoded
frame can be shared by every subscriber of a publish; any thread may call
these functions before handing the bytes to the loop.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_FIN = 0x80
_RSV1 = 0x40
_MASK = 0x80

_PACK_SHORT = struct.Struct("!BBH").pack
_PACK_LONG = struct.Struct("!BBQ").pack

MAX_CONTROL_PAYLOAD = 125
MAX_CLOSE_REASON_BYTES = MAX_CONTROL_PAYLOAD - 2

# A message arriving in fragments is kept as at most this many pieces.
MAX_FRAGMENT_PIECES = 1024


def frame_header(opcode: int, length: int, *, fin: bool = True, rsv1: bool = False,
                 masked: bool = False) -> bytes:
    """Return the header of a frame carrying ``length`` payload bytes."""
    first = opcode | (_FIN if fin else 0) | (_RSV1 if rsv1 else 0)
    mask_bit = _MASK if masked else 0
    if length < 126:
        return bytes((first, mask_bit | length))
    if length < 65536:
        return _PACK_SHORT(first, mask_bit | 126, length)
    return _PACK_LONG(first, mask_bit | 127, length)


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """Encode one unmasked (server-to-client) frame.

    >>> encode_frame(OP_TEXT, b"hi")
    b'\\x81\\x02hi'
    """
    length = len(payload)
    if length < 126:
        # The common small frame, without frame_header()'s keyword call (hot path).
        return bytes((opcode | (_FIN if fin else 0) | (_RSV1 if rsv1 else 0), length)) + payload
    return frame_header(opcode, length, fin=fin, rsv1=rsv1) + payload


# One 256-byte XOR table per key byte, for masking long payloads with translate().
_XOR_TABLES = [bytes(a ^ b for a in range(256)) for b in range(256)]


def mask_payload_python(payload: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte masking ``key`` (RFC 6455 section 5.3), in Python."""
    if not payload:
        return b""
    length = len(payload)
    if length > 2048:
        # Past a couple of KiB, four strided translate() calls beat big-integer XOR.
        buffer = bytearray(payload)
        for i in range(4):
            buffer[i::4] = buffer[i::4].translate(_XOR_TABLES[key[i]])
        return bytes(buffer)
    # One big-integer XOR is far faster in CPython than a per-byte loop.
    repeated = (key * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")
    return masked.to_bytes(length, "little")


mask_payload: Callable[[bytes | bytearray | memoryview, bytes], bytes] = mask_payload_python
"""XOR a payload with a masking key: python-websockets' C routine when installed.

``pip install 'syncws[speedups]'`` makes it about 40 times faster on 64 KiB
(3.7 us instead of 154 us) and 6 times on 64 bytes (``python benchmarks/micro.py``);
the result is the same.
"""
try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the optional extra is missing
    SPEEDUPS = False
else:
    mask_payload = apply_mask
    SPEEDUPS = True


def encode_masked_frame(opcode: int, payload: bytes, key: bytes, *, fin: bool = True,
                        rsv1: bool = False) -> bytes:
    """Encode one masked (client-to-server) frame with the masking ``key``."""
    header = frame_header(opcode, len(payload), fin=fin, rsv1=rsv1, masked=True)
    return header + key + mask_payload(payload, key)


def is_sendable_close_code(code: int) -> bool:
    """Whether an endpoint may put ``code`` in a close frame it sends.

    1004-1006 and 1015 are reserved for reports, 1014 is for gateways only;
    3000-4999 belong to libraries and applications.
    """
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1013 or 3000 <= code <= 4999


def close_payload(code: int, reason: str) -> bytes:
    """Build the body of a close frame, checking the arguments as API.md says.

    Raises ``ValueError`` for a code that may not be sent or a reason over
    123 UTF-8 bytes, ``TypeError`` for arguments of the wrong type.
    """
    if not isinstance(code, int) or isinstance(code, bool):
        raise TypeError(f"close code must be an int, not {type(code).__name__}")
    if not isinstance(reason, str):
        raise TypeError(f"close reason must be a str, not {type(reason).__name__}")
    if not is_sendable_close_code(code):
        raise ValueError(
            f"close code {code} may not be sent: use 1000-1003, 1007-1013 or 3000-4999"
        )
    encoded = reason.encode("utf-8")
    if len(encoded) > MAX_CLOSE_REASON_BYTES:
        raise ValueError(
            f"close reason is {len(encoded)} UTF-8 bytes; at most "
            f"{MAX_CLOSE_REASON_BYTES} fit in a close frame"
        )
    return struct.pack("!H", code) + encoded


def truncate_reason(reason: str) -> str:
    """Cut ``reason`` to what fits in a close frame, on a character boundary."""
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return encoded[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")


def close_echo(code: int, reason: str) -> bytes:
    """The body of our answer to a peer's close frame (RFC 6455 section 5.5.1).

    The same code and reason, as Bun answers; no status in, no status out;
    a code we may not send ourselves is answered with 1000.
    """
    if code == 1005:
        return b""
    if is_sendable_close_code(code):
        return close_payload(code, truncate_reason(reason))
    return close_payload(1000, "")


def control_payload(data: object, what: str) -> bytes:
    """The payload of a ping or pong: str (as UTF-8) or bytes-like, at most 125 bytes."""
    if isinstance(data, str):
        payload = encode_text(data)
    else:
        found = buffer_bytes(data)
        if found is None:
            raise TypeError(f"{what} data must be str or bytes, not {type(data).__name__}")
        payload = found
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(f"{what} data is {len(payload)} bytes; at most 125 are allowed")
    return payload


def buffer_bytes(data: object) -> bytes | None:
    """The bytes of a bytes-like object (bytes, bytearray, memoryview, array,
    NumPy array: anything with the buffer protocol); None for anything else."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return None
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        return None
    with view:
        return view.tobytes()


def add_fragment(parts: list[Any], payload: str | bytes) -> None:
    """Keep ``payload``, a fragment of a message still arriving, in ``parts``.

    Empty fragments are dropped, and past ``MAX_FRAGMENT_PIECES`` the pieces
    are joined into one: kept one object each, countless tiny fragments
    would cost tens of bytes of memory per byte of message.
    """
    if payload:
        parts.append(payload)
        if len(parts) > MAX_FRAGMENT_PIECES:
            parts[:] = [_join(parts)]


def last_fragment(parts: list[Any], payload: str | bytes) -> str | bytes:
    """The whole message, once its final fragment ``payload`` arrived; empties ``parts``."""
    if not parts:
        return payload
    parts.append(payload)
    message = _join(parts)
    parts.clear()
    return message


def wire_frame_size(data: bytes | bytearray | memoryview, pos: int) -> int | None:
    """Bytes on the wire of the frame at ``data[pos:]``, header and mask included.

    None while its header (masking key included) is cut short.

    >>> wire_frame_size(b"\\x81\\x85mask" + b"hello", 0)
    11
    """
    available = len(data) - pos
    if available < 2:
        return None
    second = data[pos + 1]
    length = second & 0x7F
    header = (2 if length < 126 else 4 if length == 126 else 10) + (4 if second & 0x80 else 0)
    if available < header:
        return None
    if length == 126:
        length = (data[pos + 2] << 8) | data[pos + 3]
    elif length == 127:
        length = int.from_bytes(data[pos + 2:pos + 10], "big")
    return header + length


def unread_payload(proto: Any) -> int:
    """Payload bytes still to come of the data frame a wsproto ``FrameProtocol`` is reading.

    0 between frames, inside a control frame, and wherever the length on the
    wire may say nothing of the message's size: a compressed frame, or any
    continuation once an extension is negotiated. With it a message whose
    frame header announces more than the limit fails at the header, as in
    Bun, instead of once that much has arrived.
    """
    decoder = proto._frame_decoder
    header = decoder.header
    if header is None or header.opcode.iscontrol():
        return 0
    if proto.extensions and (header.rsv.rsv1 or header.opcode == OP_CONTINUATION):
        return 0
    if decoder.payload_consumed == 0 and \
            (header.opcode == OP_CONTINUATION) != (proto._message_decoder.opcode is not None):
        return 0  # a continuation out of place, or a new message inside one: wsproto's 1002
    return int(header.payload_len - decoder.payload_consumed)


def _join(parts: list[Any]) -> str | bytes:
    return ("" if isinstance(parts[0], str) else b"").join(parts)


def encode_text(text: str) -> bytes:
    """``text`` as UTF-8, each lone surrogate replaced by U+FFFD, as Bun does.

    A text frame must be valid UTF-8, and Python strings can hold what UTF-8
    cannot: ``json.loads('"\\ud83d"')`` from a peer's valid JSON, say.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 can carry lone surrogates through; its decoder replaces them.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace") \
            .encode("utf-8")


def message_payload(message: object, argument: str = "message") -> tuple[int, bytes]:
    """Return ``(opcode, payload bytes)`` for a str (text) or bytes-like (binary) message."""
    if isinstance(message, str):
        try:  # (inline: the common case pays no extra call)
            return OP_TEXT, message.encode("utf-8")
        except UnicodeEncodeError:
            return OP_TEXT, encode_text(message)
    payload = buffer_bytes(message)
    if payload is None:
        raise TypeError(
            f"{argument} must be str (text) or bytes-like (binary), not {type(message).__name__}")
    return OP_BINARY, payload

"""A lean parser for the common case: whole, unfragmented, masked client frames.

wsproto costs tens of microseconds per frame in pure Python. Most traffic is
small complete text or binary frames, so the loop first takes those here and
hands wsproto everything else from the first frame it does not take: any
control frame, fragment, reserved bit, non-minimal length, invalid UTF-8, a
frame over the size limit. wsproto stays the engine of record for all of
those (it reports the errors and their close codes);
``tests/test_fastpath.py`` feeds both paths the same fuzzed streams and
requires the same messages and the same verdicts.

A binary frame that has only partly arrived may be held by the caller until
the rest comes (``wait``), so a big message is unmasked once, whole, instead
of chunk by chunk through wsproto; so may a text frame's header cut short.
A text frame's payload is not held: wsproto checks its UTF-8 as the bytes
arrive and fails a bad one without waiting for the end of the frame.

Pure: no socket, thread or clock.
"""

from __future__ import annotations

from ._frames import mask_payload

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82


def parse_simple_frames(data: bytes | bytearray | memoryview, max_payload: int,
                        offset: int = 0, max_frames: int = 1 << 30,
                        ) -> tuple[int, list[tuple[str | bytes, int]], bool]:
    """Take the run of simple frames from ``data[offset:]``, at most ``max_frames``.

    Returns ``(end, messages, wait)``: where the frames taken end, the
    messages as ``(payload, length in bytes)`` (``str`` for text, ``bytes``
    for binary), and whether the bytes left over are the start of a frame
    this parser will take once the rest has arrived (the caller keeps them and
    calls again with more): a header cut short, or a binary frame's payload.
    When ``wait`` is False the leftover belongs to wsproto, unless
    ``max_frames`` were taken. Only call it at a frame boundary with no
    fragmented message in progress.
    """
    messages: list[tuple[str | bytes, int]] = []
    size = len(data)
    pos = offset
    while pos < size and len(messages) < max_frames:
        first = data[pos]
        if first != _FIN_TEXT and first != _FIN_BINARY:
            break
        if size - pos < 2:
            return pos, messages, True
        second = data[pos + 1]
        if second < 0x80:
            break  # unmasked: wsproto fails it
        length = second & 0x7F
        if length < 126:
            start = pos + 6
        elif length == 126:
            start = pos + 8
        else:
            start = pos + 14
        if start > size:
            return pos, messages, True
        if length == 126:
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length < 126:
                break  # not the minimal encoding: wsproto refuses it
        elif length == 127:
            length = int.from_bytes(data[pos + 2:pos + 10], "big")
            if length < 65536:
                break  # not the minimal encoding (a set top bit fails the size check)
        end = start + length
        if length > max_payload:
            break
        if end > size:
            return pos, messages, first == _FIN_BINARY
        payload = mask_payload(data[start:end], bytes(data[start - 4:start]))
        if first == _FIN_TEXT:
            try:
                messages.append((payload.decode("utf-8"), length))
            except UnicodeDecodeError:
                break  # wsproto fails it with 1007
        else:
            messages.append((payload, length))
        pos = end
    return pos, messages, False

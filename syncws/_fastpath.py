"""A lean parser for the common case: whole, unfragmented, masked client frames.

wsproto costs tens of microseconds per frame in pure Python. Most traffic is
small complete text or binary frames, so the loop first takes those here and
hands wsproto everything else from the first frame it does not take: any
control frame, fragment, reserved bit, 64-bit length, invalid UTF-8, a frame
over the size limit, or an incomplete tail. wsproto stays the engine of
record for all of those (it reports the errors and their close codes);
``tests/test_fastpath.py`` feeds both paths the same fuzzed streams and
requires the same messages and the same verdicts.

Pure: no socket, thread or clock.
"""

from __future__ import annotations

from ._frames import mask_payload

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82


def parse_simple_frames(data: bytes | memoryview, max_payload: int,
                        ) -> tuple[int, list[tuple[str | bytes, int]]]:
    """Take the leading run of simple frames from ``data``.

    Returns how many bytes were consumed and the messages as
    ``(payload, length in bytes)``: ``str`` for text, ``bytes`` for binary.
    Only call it at a frame boundary with no fragmented message in progress.
    """
    messages: list[tuple[str | bytes, int]] = []
    size = len(data)
    pos = 0
    while size - pos >= 6:
        first = data[pos]
        second = data[pos + 1]
        if (first != _FIN_TEXT and first != _FIN_BINARY) or second < 0x80:
            break
        length = second & 0x7F
        if length == 126:
            if size - pos < 8:
                break
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length < 126:
                break  # not the minimal encoding: wsproto refuses it
            start = pos + 8
        elif length == 127:
            # 64 KiB and more: wsproto unmasks such frames chunk by chunk as they
            # arrive, which measured faster than waiting for the whole frame here.
            break
        else:
            start = pos + 6
        end = start + length
        if end > size or length > max_payload:
            break
        payload = mask_payload(bytes(data[start:end]), bytes(data[start - 4:start]))
        if first == _FIN_TEXT:
            try:
                messages.append((payload.decode("utf-8"), length))
            except UnicodeDecodeError:
                break  # wsproto fails it with 1007
        else:
            messages.append((payload, length))
        pos = end
    return pos, messages

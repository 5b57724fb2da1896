"""permessage-deflate (RFC 7692) for the server: negotiation, inflate, deflate.

Pure: no sockets and no loop. Three parts:

* ``parse_config`` checks the ``per_message_deflate`` option once, at
  ``serve()``; ``negotiate`` reads a client's ``Sec-WebSocket-Extensions``
  offers (RFC 7692 section 7, written here because wsproto's own parser
  refuses quoted values and accepts duplicate or unknown parameters) and
  returns the agreed parameters and the response header.
* ``DeflateExtension`` plugs into wsproto's ``FrameProtocol`` and inflates
  received messages with a bound: no received chunk ever inflates past
  what is left of ``max_payload_length``, so a compression bomb costs at
  most that much memory before the connection is failed with 1009.
* ``Compressor`` deflates outgoing messages. Without server context
  takeover its output depends only on the payload and the parameters, so one
  compressed frame serves every subscriber of a publish; with context
  takeover each connection has its own, and callers hold its ``lock`` so
  that the order of compression is the order on the wire.

Memory: zlib's deflate state is about ``2**(wbits + 2) + 2**(mem_level + 9)``
bytes (256 KiB at wbits 15, mem_level 8) and inflate needs about
``2**wbits`` plus 7 KiB. Both are created lazily, on the first compressed
message; a context that is not taken over is not kept between messages.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

from ._frames import encode_frame

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

__all__ = [
    "MIN_COMPRESS_SIZE", "Agreement", "Compressor", "DeflateConfig", "DeflateExtension",
    "make_compressor", "negotiate", "parse_config", "parse_extensions",
]

EXTENSION_NAME = "permessage-deflate"

# Messages shorter than this go out uncompressed even with compress=True.
# Measured (benchmarks/deflate_cost.py, zlib level 6): English text and JSON
# under 32 bytes never get smaller (deflate's block overhead), and 32-63
# bytes save 0-11 bytes for about 5 us of CPU per message on each side.
MIN_COMPRESS_SIZE = 64

# RFC 7692 section 7.2.1: a compressed message ends with an empty stored
# block, whose last 4 octets are removed by the sender and appended back by
# the receiver.
_TAIL = b"\x00\x00\xff\xff"

_RSV1_OURS = RsvBits(True, False, False)  # we own RSV1, on the first frame only

_CONFIG_KEYS = ("server_no_context_takeover", "client_no_context_takeover",
                "server_max_window_bits", "client_max_window_bits", "compress_level",
                "mem_level")


# -- configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class DeflateConfig:
    """The server's side of the negotiation, from the ``per_message_deflate`` option.

    ``server_max_window_bits`` / ``client_max_window_bits`` of None mean "no
    limit of ours" (15, or whatever the client asks for).
    """

    server_no_context_takeover: bool = True
    client_no_context_takeover: bool = True
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None
    compress_level: int = 6
    mem_level: int = 8


def _config_int(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"per_message_deflate[{name!r}] must be an int, not "
                        f"{type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"per_message_deflate[{name!r}] must be between {low} and {high}, "
                         f"not {value}")
    return value


def parse_config(value: object) -> DeflateConfig | None:
    """Check the ``per_message_deflate`` option; None when compression is off.

    ``True`` is ``DeflateConfig()``: like Bun, both sides reset their context
    after every message (``server_no_context_takeover;
    client_no_context_takeover``), which keeps no zlib state per connection
    between messages and lets a publish compress once for every subscriber.
    A mapping takes the RFC 7692 parameters ``server_no_context_takeover``,
    ``client_no_context_takeover`` (bools, default False: the RFC's
    defaults), ``server_max_window_bits`` and ``client_max_window_bits``
    (9-15; zlib cannot deflate with 8), and ``compress_level`` (0-9,
    default 6), ``mem_level`` (1-9, default 8). Unknown keys and wrong types
    raise ``TypeError``, values out of range ``ValueError``.
    """
    if isinstance(value, bool):
        return DeflateConfig() if value else None
    if not isinstance(value, Mapping):
        raise TypeError("per_message_deflate must be a bool or a dict of RFC 7692 parameters, "
                        f"not {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in _CONFIG_KEYS)
    if unknown:
        raise TypeError(f"unknown per_message_deflate key(s) {unknown}; known: "
                        f"{', '.join(_CONFIG_KEYS)}")
    flags: dict[str, bool] = {}
    for name in ("server_no_context_takeover", "client_no_context_takeover"):
        flag = value.get(name, False)
        if not isinstance(flag, bool):
            raise TypeError(f"per_message_deflate[{name!r}] must be a bool, not "
                            f"{type(flag).__name__}")
        flags[name] = flag
    window_bits: dict[str, int | None] = {}
    for name in ("server_max_window_bits", "client_max_window_bits"):
        bits = value.get(name)
        if bits is not None:
            bits = _config_int(name, bits, 8, 15)
            if bits == 8:
                # The RFC allows 8, but zlib cannot deflate with it: a client
                # told to use 8 (every client's default offer leaves the value
                # to us) could not connect, nor could we send with 8.
                raise ValueError(f"per_message_deflate[{name!r}] cannot be 8: zlib cannot "
                                 "deflate with an 8-bit window; use 9")
        window_bits[name] = bits
    server_bits = window_bits["server_max_window_bits"]
    client_bits = window_bits["client_max_window_bits"]
    return DeflateConfig(
        server_no_context_takeover=flags["server_no_context_takeover"],
        client_no_context_takeover=flags["client_no_context_takeover"],
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
        compress_level=_config_int("compress_level", value.get("compress_level", 6), 0, 9),
        mem_level=_config_int("mem_level", value.get("mem_level", 8), 1, 9),
    )


# -- parsing Sec-WebSocket-Extensions (RFC 6455 section 9.1) ----------------------

_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789"
                    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

Params = list[tuple[str, "str | None"]]
Offer = tuple[str, Params]


class _SyntaxError(Exception):
    pass


def _is_token(text: str) -> bool:
    return bool(text) and all(c in _TCHARS for c in text)


def _skip_ows(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _token(text: str, pos: int) -> tuple[str, int]:
    end = pos
    while end < len(text) and text[end] in _TCHARS:
        end += 1
    if end == pos:
        raise _SyntaxError
    return text[pos:end], end


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """A quoted-string starting at ``text[pos] == '"'``, unescaped."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        c = text[pos]
        if c == '"':
            return "".join(out), pos + 1
        if c == "\\":
            pos += 1
            if pos == len(text):
                break
            c = text[pos]
        out.append(c)
        pos += 1
    raise _SyntaxError


def _extension(text: str, pos: int) -> tuple[Offer, int]:
    """``extension-token *( ";" extension-param )``, up to a comma or the end."""
    name, pos = _token(text, pos)
    params: Params = []
    while True:
        pos = _skip_ows(text, pos)
        if pos == len(text) or text[pos] == ",":
            return (name, params), pos
        if text[pos] != ";":
            raise _SyntaxError
        pos = _skip_ows(text, pos + 1)
        param, pos = _token(text, pos)
        pos = _skip_ows(text, pos)
        value: str | None = None
        if pos < len(text) and text[pos] == "=":
            pos = _skip_ows(text, pos + 1)
            if pos < len(text) and text[pos] == '"':
                value, pos = _quoted(text, pos)
                # RFC 6455 section 9.1: once unescaped it must still be a token.
                if not _is_token(value):
                    raise _SyntaxError
            else:
                value, pos = _token(text, pos)
        params.append((param, value))


def _skip_element(text: str, pos: int) -> int:
    """After a syntax error: the next comma outside a quoted string (or the end)."""
    quoted = False
    while pos < len(text):
        c = text[pos]
        if quoted and c == "\\":
            pos += 1
        elif c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            return pos
        pos += 1
    return len(text)  # (an escape as the last character stepped past it)


def parse_extensions(values: Iterable[str]) -> list[Offer | None]:
    """Every offer of the ``Sec-WebSocket-Extensions`` header(s), in order.

    An offer is ``(name, [(param, value or None), ...])``; quoted values
    come unescaped. A syntactically broken list element is None (it can be
    no acceptable offer) and parsing goes on at the next comma.
    """
    offers: list[Offer | None] = []
    for text in values:
        pos = 0
        while True:
            pos = _skip_ows(text, pos)
            if pos == len(text):
                break
            if text[pos] == ",":  # empty list elements are allowed (RFC 7230 7)
                pos += 1
                continue
            try:
                offer, pos = _extension(text, pos)
            except _SyntaxError:
                offers.append(None)
                pos = _skip_element(text, pos)
            else:
                offers.append(offer)
    return offers


# -- negotiation (RFC 7692 section 7.1) -------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """What one connection agreed: effective window bits, context takeover, the header."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int
    client_max_window_bits: int
    response: str


def window_bits(value: str | None) -> int | None:
    """A ``*_max_window_bits`` value: an ASCII decimal 8-15 without leading
    zeros (RFC 7692 7.1.2.1), else None."""
    if value is None or len(value) > 2 or not (value.isascii() and value.isdigit()) or \
            value[0] == "0":
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def _accept(params: Params, config: DeflateConfig) -> Agreement | None:
    """The response to one permessage-deflate offer, or None if it is unacceptable."""
    seen: set[str] = set()
    server_nct = client_nct = False
    server_bits: int | None = None
    client_bits: int | None = None
    client_bits_offered = False
    for name, value in params:
        if name in seen:
            return None  # 7.1: duplicate parameter
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                return None
            if name == "server_no_context_takeover":
                server_nct = True
            else:
                client_nct = True
        elif name == "server_max_window_bits":
            server_bits = window_bits(value)
            if server_bits is None:
                return None
        elif name == "client_max_window_bits":
            client_bits_offered = True
            if value is not None:
                client_bits = window_bits(value)
                if client_bits is None:
                    return None
        else:
            return None  # 7.1: unknown parameter
    # 7.1.1.1: the server may always add server_no_context_takeover, and must
    # keep it when offered; 7.1.1.2: it may always add client_no_context_takeover
    # (when offered it is the client's hint, and agreeing lets us drop the
    # inflate context between messages).
    server_nct = server_nct or config.server_no_context_takeover
    client_nct = client_nct or config.client_no_context_takeover
    # 7.1.2.1: answer with the offered value or a smaller one; the server may
    # also announce a limit that was not offered.
    if config.server_max_window_bits is not None:
        server_bits = (config.server_max_window_bits if server_bits is None
                       else min(server_bits, config.server_max_window_bits))
    if server_bits == 8:
        return None  # zlib cannot deflate with an 8-bit window: decline this offer
    # 7.1.2.2: only when offered may the response carry client_max_window_bits,
    # with a value no larger than the offered one. Not offered: the client
    # uses up to 15 bits whatever our configuration says.
    client_response: int | None = None
    if client_bits_offered:
        limits = [b for b in (client_bits, config.client_max_window_bits) if b is not None]
        client_response = min(limits) if limits else None
    parts = [EXTENSION_NAME]
    if server_nct:
        parts.append("server_no_context_takeover")
    if client_nct:
        parts.append("client_no_context_takeover")
    if server_bits is not None:
        parts.append(f"server_max_window_bits={server_bits}")
    if client_response is not None:
        parts.append(f"client_max_window_bits={client_response}")
    return Agreement(
        server_no_context_takeover=server_nct,
        client_no_context_takeover=client_nct,
        server_max_window_bits=server_bits if server_bits is not None else 15,
        client_max_window_bits=client_response if client_response is not None else 15,
        response="; ".join(parts),
    )


def negotiate(header_values: Iterable[str], config: DeflateConfig) -> Agreement | None:
    """Pick the first acceptable permessage-deflate offer; None if there is none.

    ``header_values`` are the ``Sec-WebSocket-Extensions`` header values as
    received. Offers of other extensions are ignored. Never raises on what
    a client sends: an unacceptable offer is simply not accepted.
    """
    for offer in parse_extensions(header_values):
        if offer is None or offer[0] != EXTENSION_NAME:
            continue
        agreement = _accept(offer[1], config)
        if agreement is not None:
            return agreement
    return None


# -- inflating received messages ------------------------------------------------


class DeflateExtension(Extension):
    """wsproto's hook for receiving: RSV1 rules and bounded inflate.

    RSV1 may be set only on the first frame of a data message (1002
    otherwise); bad deflate data fails with 1007; a message inflating past
    ``max_payload_length`` fails with 1009 as soon as it does, and no chunk
    is ever inflated further than one byte past that budget.
    Used by the loop thread only.
    """

    name = EXTENSION_NAME

    def __init__(self, agreement: Agreement, max_payload_length: int, *,
                 from_server: bool = False) -> None:
        self.agreement = agreement
        self.max_payload_length = max_payload_length
        # A server inflates what the client compressed and a client the
        # reverse: each side's window and context takeover apply.
        bits = agreement.server_max_window_bits if from_server else \
            agreement.client_max_window_bits
        self._drop_context = agreement.server_no_context_takeover if from_server else \
            agreement.client_no_context_takeover
        # 8-bit windows inflate fine with a 9-bit one (a larger window reads
        # any smaller one), and zlib has had bugs with 8.
        self._wbits = -max(9, bits)
        self._decompressor: zlib._Decompress | None = None
        # With context takeover: the latest inflated bytes, at least a window's
        # worth when there are that many (see _keep_window).
        self._window: bytearray | None = None if self._drop_context else bytearray()
        self._message_compressed = False
        self._frame_compressed = False
        self._produced = 0

    def enabled(self) -> bool:
        """Always: this object only exists once the extension was negotiated."""
        return True

    def offer(self) -> bool | str:
        """Servers do not offer extensions (part of wsproto's interface)."""
        return False

    def frame_inbound_header(self, proto: FrameDecoder | FrameProtocol, opcode: Opcode,
                             rsv: RsvBits, payload_length: int) -> CloseReason | RsvBits:
        """Check RSV1 and note whether this frame's payload must be inflated."""
        if opcode.iscontrol():
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
            # A control frame between fragments leaves the message's state alone.
            self._frame_compressed = False
            return _RSV1_OURS
        if opcode is Opcode.CONTINUATION:
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
            self._frame_compressed = self._message_compressed
            return _RSV1_OURS
        self._message_compressed = self._frame_compressed = rsv.rsv1
        self._produced = 0
        if rsv.rsv1 and self._decompressor is None:
            window = self._window
            if window:
                # The peer ended its last stream with BFINAL, yet its next message
                # may still refer to what came before (RFC 7692 7.2.2): start the
                # new stream from the same window.
                history = bytes(window[-(1 << -self._wbits):])
                self._decompressor = zlib.decompressobj(self._wbits, zdict=history)
            else:
                self._decompressor = zlib.decompressobj(self._wbits)
        return _RSV1_OURS

    def _keep_window(self, out: bytes) -> None:
        """Remember ``out`` as the latest inflated bytes, dropping what is out of reach.

        One buffer of at most a window and a half: trimmed back to a window
        once past that, so each byte kept is moved about twice, and tiny
        messages cost no object each.
        """
        window = self._window
        if window is None:
            return
        size = 1 << -self._wbits
        window += out[-size:]
        if len(window) > size + size // 2:
            del window[:-size]

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor = self._decompressor
        assert decompressor is not None
        budget = self.max_payload_length - self._produced
        try:
            # max_length caps the output of this one chunk: one byte past the
            # budget is enough to know the message is too big.
            out = decompressor.decompress(data, budget + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._produced += len(out)
        if len(out) > budget:
            return CloseReason.MESSAGE_TOO_BIG
        self._keep_window(out)
        if decompressor.unused_data and decompressor.unused_data != _TAIL:
            # Bytes after a final (BFINAL) deflate block inside one message.
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        return out

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol,
                                   data: bytes) -> bytes | CloseReason:
        """Inflate one received chunk of a compressed frame, within the budget."""
        if not self._frame_compressed:
            return data
        return self._inflate(data)

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol,
                               fin: bool) -> bytes | CloseReason | None:
        """At the end of a compressed message: inflate the tail, maybe drop the context."""
        if not self._frame_compressed or not fin:
            return None
        out = self._inflate(_TAIL)
        self._message_compressed = self._frame_compressed = False
        decompressor = self._decompressor
        if self._drop_context or (
                decompressor is not None and decompressor.eof):
            # No context to keep (free the window now rather than hold it while
            # idle), or the peer ended its stream with BFINAL: the next message
            # starts a new one, primed with self._window.
            self._decompressor = None
        return out or None


# -- deflating sent messages ----------------------------------------------------------

# Without context takeover any compressor with the right parameters will do:
# one per thread and parameter set, reset by Z_FULL_FLUSH after each message
# (which forgets the history, unlike Z_SYNC_FLUSH), is 4-10x cheaper than a
# fresh compressobj per message and needs no lock.
_per_thread = threading.local()


class Compressor:
    """Deflates messages into permessage-deflate payloads (RSV1 frames).

    ``shared`` (no server context takeover): output depends only on the
    payload and ``key``, any thread may call ``frame`` without a lock, and
    one frame serves every connection with the same ``key``. Otherwise the
    compressor belongs to one connection and callers hold ``lock`` around
    ``frame`` *and* the enqueue, so compressed messages reach the wire in
    the order the context saw them.
    """

    __slots__ = ("_zobj", "key", "lock", "shared")

    def __init__(self, wbits: int, level: int, mem_level: int, shared: bool) -> None:
        self.key = (wbits, level, mem_level)
        self.shared = shared
        self.lock = threading.Lock()
        self._zobj: zlib._Compress | None = None

    def _new(self) -> zlib._Compress:
        wbits, level, mem_level = self.key
        return zlib.compressobj(level, zlib.DEFLATED, -wbits, mem_level)

    def compress(self, payload: bytes) -> bytes:
        """The permessage-deflate payload for one whole message."""
        if self.shared:
            cache: dict[tuple[int, int, int], zlib._Compress] | None = getattr(
                _per_thread, "compressors", None)
            if cache is None:
                cache = _per_thread.compressors = {}
            zobj = cache.get(self.key)
            if zobj is None:
                zobj = cache[self.key] = self._new()
            data = zobj.compress(payload) + zobj.flush(zlib.Z_FULL_FLUSH)
        else:
            zobj = self._zobj
            if zobj is None:
                zobj = self._zobj = self._new()  # lazily: idle connections cost nothing
            data = zobj.compress(payload) + zobj.flush(zlib.Z_SYNC_FLUSH)
        # Both flushes end with the empty stored block 00 00 ff ff (7.2.1).
        return data[:-4]

    def frame(self, opcode: int, payload: bytes) -> bytes:
        """One encoded frame carrying ``payload`` compressed.

        Shared compressors send the message plain when deflate does not make
        it smaller (nothing else depends on the history); a per-connection
        context has already taken the bytes in, so it always sends them
        compressed.
        """
        data = self.compress(payload)
        if self.shared and len(data) >= len(payload):
            return encode_frame(opcode, payload)
        return encode_frame(opcode, data, rsv1=True)


_shared_compressors: dict[tuple[int, int, int], Compressor] = {}


def make_compressor(agreement: Agreement, config: DeflateConfig) -> Compressor:
    """The compressor for one connection: a process-wide shared one when the
    server does not take its context over, else a new per-connection one."""
    wbits = agreement.server_max_window_bits
    if not agreement.server_no_context_takeover:
        return Compressor(wbits, config.compress_level, config.mem_level, shared=False)
    key = (wbits, config.compress_level, config.mem_level)
    compressor = _shared_compressors.get(key)
    if compressor is None:
        # setdefault: two threads racing here end up with the same object.
        compressor = _shared_compressors.setdefault(
            key, Compressor(wbits, config.compress_level, config.mem_level, shared=True))
    return compressor

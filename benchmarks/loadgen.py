"""Load generator for the benchmark servers: raw sockets, pre-built masked frames.

Several processes (multiprocessing, fork), each driving many non-blocking
connections with one epoll (``echo``, ``sub``) or ``selectors`` loop. The
WebSocket handshake is done by hand; server frames are scanned with a minimal
parser (data frames counted, pings answered with pongs), except where the
expected bytes can be checked more cheaply: an echo or a run of fan-out
deliveries is counted by length once its headers (and seqs) match, and
anything unexpected falls back to the parser. Each process measures its own
CPU time over the measured window, and the parent reads the server's from
``/proc/PID/stat``, so every result shows the load generator's CPU share
beside the server's.

Roles of a load process:
- ``echo``: ``in_flight`` messages outstanding per connection; on each echo,
  record the round trip and send the next message.
- ``sub``: ``/fanout`` subscribers; count deliveries and record, per message,
  when this process's last subscriber got it.
- ``pub``: one ``/fanout`` connection publishing numbered, time-stamped
  messages, at most ``window`` not yet delivered to every subscriber.
- ``idle``: hold connections open (answering pings) until released.
- ``churn``: ``connections`` sessions at a time, each a fresh connection:
  connect, upgrade, send a close frame, read the server's close frame and
  its FIN, close; count the sessions completed and time each handshake
  (connect to 101).
"""

from __future__ import annotations

import base64
import contextlib
import os
import resource
import select
import selectors
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

MASK = b"\x37\xfa\x21\x3d"
RECV_SIZE = 256 * 1024
# False: subscribers scan every frame (to check their shortcut against).
SUB_SHORTCUT = True


def recv_nowait(sock: socket.socket) -> bytes | None:
    """What a non-blocking socket has: data, b"" once it closed or failed, None for nothing yet."""
    try:
        return sock.recv(RECV_SIZE)
    except BlockingIOError:
        return None
    except OSError:
        return b""
_TICK = os.sysconf("SC_CLK_TCK")
_SEQ = struct.Struct("!qq")  # fan-out payload prefix: sequence number, publish time (ns)


# --------------------------------------------------------------------------- frames

def _mask(payload: bytes, key: bytes = MASK) -> bytes:
    n = len(payload)
    if n == 0:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """A complete masked client frame (FIN set) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + MASK + _mask(payload)


CLOSE_FRAME = client_frame(struct.pack("!H", 1000), opcode=0x8)


class Conn:
    """One client connection: its socket, inbound and outbound bytes, send times."""

    __slots__ = ("buf", "closed", "out", "sent", "sock")

    def __init__(self, sock: socket.socket, leftover: bytes) -> None:
        self.sock = sock
        self.buf = bytearray(leftover)
        self.out = bytearray()
        self.sent: deque[int] = deque()
        self.closed = False


def scan(conn: Conn, prefixes: list[bytes] | None = None) -> int:
    """Consume complete server frames from ``conn.buf``; return complete data messages.

    With ``prefixes``, the first 16 payload bytes of each message are appended.
    Pings are answered (pong queued on ``conn.out``); a close frame marks the
    connection closed.
    """
    buf = conn.buf
    n = len(buf)
    pos = 0
    count = 0
    while n - pos >= 2:
        b0 = buf[pos]
        length = buf[pos + 1] & 0x7F
        hl = 2
        if length == 126:
            if n - pos < 4:
                break
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            hl = 4
        elif length == 127:
            if n - pos < 10:
                break
            length = int.from_bytes(buf[pos + 2:pos + 10], "big")
            hl = 10
        end = pos + hl + length
        if end > n:
            break
        opcode = b0 & 0x0F
        if opcode <= 2:
            if b0 & 0x80:
                count += 1
                if prefixes is not None:
                    prefixes.append(bytes(buf[pos + hl:pos + hl + 16]))
        elif opcode == 0x9:
            conn.out += client_frame(bytes(buf[pos + hl:end]), opcode=0xA)
        elif opcode == 0x8:
            conn.closed = True
        pos = end
    if pos:
        del buf[:pos]
    return count


# ----------------------------------------------------------------------- handshake

def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def _request(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def open_connections(host: str, port: int, path: str, count: int, *, batch: int = 32,
                     timeout: float = 30.0) -> list[Conn]:
    """Open ``count`` WebSocket connections, ``batch`` handshakes in flight at a time."""
    conns: list[Conn] = []
    deadline = time.monotonic() + timeout
    while len(conns) < count:
        socks: list[socket.socket] = []
        for _ in range(min(batch, count - len(conns))):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(max(0.1, deadline - time.monotonic()))
            s.connect((host, port))
            s.sendall(_request(host, port, path))
            socks.append(s)
        for s in socks:
            data = b""
            while b"\r\n\r\n" not in data:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError(f"connection closed during handshake: {data[:80]!r}")
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            if not head.startswith((b"HTTP/1.1 101", b"HTTP/1.0 101")):
                raise ConnectionError(f"handshake refused: {head[:80]!r}")
            s.setblocking(False)
            conns.append(Conn(s, rest))
    return conns


def _send_out(conn: Conn) -> bool:
    """Send what the kernel takes of ``conn.out``; False once the socket failed."""
    try:
        sent = conn.sock.send(conn.out)
    except BlockingIOError:
        sent = 0
    except OSError:
        conn.closed = True
        return False
    del conn.out[:sent]
    return True


def _flush(conn: Conn, sel: selectors.BaseSelector) -> None:
    """Write what ``conn.out`` holds; ask for EVENT_WRITE while some is left."""
    had_pending = bool(conn.out)
    if not _send_out(conn):
        return
    if conn.out and not had_pending:
        sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
    elif not conn.out and had_pending:
        sel.modify(conn.sock, selectors.EVENT_READ, conn)


def _cpu_self() -> float:
    t = os.times()
    return t.user + t.system


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat), to spot other load."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICK


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (bytes) and Threads of process ``pid`` from /proc/PID/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "VmRSS":
                out["rss"] = int(value.split()[0]) * 1024
            elif key == "Threads":
                out["threads"] = int(value)
    return out


# ----------------------------------------------------------------------- load roles

@dataclass
class Spec:
    role: str  # echo | sub | pub | idle | churn
    host: str
    port: int
    path: str
    connections: int
    size: int = 64
    in_flight: int = 1
    window: int = 8
    slot: int = 0
    max_samples: int = 100_000
    connect_timeout: float = 30.0


@dataclass
class _Ctl:
    ready: Any
    results: Any
    go: Any
    release: Any
    times: Any  # shared doubles: start, end (time.monotonic())
    complete: Any  # shared int64 per sub slot: highest seq delivered to all its conns
    notify_r: int
    notify_w: int
    sub_slots: int


def server_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """The unmasked frame a server sends for ``payload`` (what an echo returns)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def _loop_echo(spec: Spec, conns: list[Conn], ctl: _Ctl) -> dict[str, Any]:
    payload = os.urandom(spec.size)
    frames = [client_frame(payload) * k for k in range(spec.in_flight + 1)]
    # Fast path: a recv that holds exactly k echoes and nothing else.
    echo = server_frame(payload)
    echoes = {len(e): (k, e) for k, e in ((k, echo * k) for k in range(1, spec.in_flight + 1))}
    # Otherwise: echoes are counted by length once their header checked (_count_echoes).
    elen = len(echo)
    head = echo[:elen - spec.size]
    # Every recv lands in one reused buffer: no 256 KiB allocation (mmap) per recv.
    rbuf = bytearray(RECV_SIZE)
    ep = select.epoll()
    by_fd = {c.sock.fileno(): c for c in conns}
    left = dict.fromkeys(by_fd, 0)  # bytes still due of an echo whose header was checked
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    start, end = ctl.times[0], ctl.times[1]
    while time.monotonic() < start:
        time.sleep(min(0.01, max(0.0, start - time.monotonic())))
    cpu0 = _cpu_self()
    now_ns = time.monotonic_ns()
    for c in conns:
        c.sent.extend([now_ns] * spec.in_flight)
        c.out += frames[spec.in_flight]
        _flush_epoll(c, ep)
    received = 0
    errors = 0
    rtts: list[int] = []
    append = rtts.append
    end_ns = int(end * 1e9)
    mono_ns = time.monotonic_ns
    epollout = select.EPOLLOUT
    while True:
        now_ns = mono_ns()
        if now_ns >= end_ns:
            break
        for fd, ev in ep.poll(min(0.05, (end_ns - now_ns) / 1e9)):
            c = by_fd[fd]
            if ev & ~epollout:
                try:
                    n = c.sock.recv_into(rbuf)
                except BlockingIOError:
                    n = -1
                except OSError:
                    n = 0
                if n == 0:
                    errors += 1
                    ep.unregister(fd)
                    c.closed = True
                    continue
                if n > 0:
                    hit = None if c.buf or left[fd] else echoes.get(n)
                    if hit is not None and rbuf.startswith(hit[1]):
                        got = hit[0]
                    else:
                        got, left[fd] = _count_echoes(c, rbuf, n, left[fd], elen, head)
                    if got:
                        t = mono_ns()
                        received += got
                        sent = c.sent
                        for _ in range(got):
                            append(t - sent.popleft())
                        sent.extend([t] * got)
                        if c.out:
                            c.out += frames[got]
                        else:
                            fr = frames[got]
                            try:
                                n = c.sock.send(fr)
                            except BlockingIOError:
                                n = 0
                            except OSError:
                                continue
                            if n == len(fr):
                                continue
                            c.out += fr[n:]
                            ep.modify(fd, select.EPOLLIN | epollout)
                            continue
            if c.out and not c.closed:
                _flush_epoll(c, ep)
    cpu = _cpu_self() - cpu0
    if len(rtts) > spec.max_samples:
        step = len(rtts) / spec.max_samples
        rtts = [rtts[int(i * step)] for i in range(spec.max_samples)]
    ep.close()
    return {"received": received, "rtts": rtts, "cpu": cpu, "errors": errors}


def _count_echoes(conn: Conn, data: bytearray, n: int, left: int,
                  echo_len: int, head: bytes) -> tuple[int, int]:
    """Count the echoes that ``data[:n]`` completes, ``left`` bytes being due of one.

    An echo whose header is as expected is skipped by length, its payload never
    copied; anything else (a ping, a close, a split header) goes through
    ``conn.buf`` and ``scan()``. Returns (echoes completed, bytes still due).
    """
    got = 0
    pos = 0
    buf = conn.buf
    if buf:  # a frame of another kind, or a split header, is unfinished
        with memoryview(data) as view:
            buf += view[:n]
        got = scan(conn)
        pos = n
    while pos < n:
        if left:
            take = min(left, n - pos)
            left -= take
            pos += take
            if not left:
                got += 1
        elif data.startswith(head, pos, n):
            left = echo_len
        else:
            with memoryview(data) as view:
                buf += view[pos:n]
            got += scan(conn)
            break
    if buf and len(buf) < echo_len and buf.startswith(head):
        left = echo_len - len(buf)  # an unfinished echo: skip the rest of it by length
        buf.clear()
    return got, left


def _flush_epoll(conn: Conn, ep: select.epoll) -> None:
    """Write what ``conn.out`` holds; watch EPOLLOUT exactly while some is left."""
    if not _send_out(conn):
        return
    ep.modify(conn.sock.fileno(),
              select.EPOLLIN | (select.EPOLLOUT if conn.out else 0))


def _loop_sub(spec: Spec, conns: list[Conn], ctl: _Ctl) -> dict[str, Any]:
    """Count deliveries and record when each seq reached all of this process's connections.

    The server sends every subscriber seq 0, 1, 2, ... in order, each in a frame
    of one size. So k whole frames in a recv are counted without parsing once
    every frame's first byte is the data opcode and the first and last frames
    have the expected header and seqs (the connection's next expected, + k - 1):
    a ping, close or missing message in between breaks one of those. Anything
    else (pings, other frames, a partial frame first) goes through ``scan()``.

    Progress is one number per connection, ``nxt`` (it has seqs 0..nxt-1);
    ``held[v]`` counts connections at nxt == v, so ``low``, the minimum, moves in
    O(1) amortized: seq s reached every connection once ``low > s``. Should a
    connection ever get a seq out of order (a message dropped for it), the
    process switches to counting every seq per connection, as a dict, for good.
    """
    ep = select.epoll()
    by_fd: dict[int, Conn] = {}
    recv_into: dict[int, Callable[[bytearray], int]] = {}
    nxt: dict[int, int] = {}
    for c in conns:
        fd = c.sock.fileno()
        by_fd[fd], recv_into[fd], nxt[fd] = c, c.sock.recv_into, 0
        ep.register(fd, select.EPOLLIN)
    rbuf = bytearray(RECV_SIZE)  # every recv lands here; only a partial frame is copied out
    view = memoryview(rbuf)
    frame = server_frame(bytes(spec.size))
    flen = len(frame)
    hlen = flen - spec.size
    head = frame[:hlen]
    head_seq = struct.Struct(f"!{len(head)}sq")  # a frame's header and seq
    opcodes = head[:1] * (RECV_SIZE // flen + 1)  # the first byte of k frames in a row
    shortcut = SUB_SHORTCUT and spec.size >= _SEQ.size
    start, end = ctl.times[0], ctl.times[1]
    while time.monotonic() < start:
        time.sleep(min(0.01, max(0.0, start - time.monotonic())))
    cpu0 = _cpu_self()
    end_ns = int(end * 1e9)
    nconns = len(conns)
    held: dict[int, int] = {0: nconns}  # nxt value -> connections at it
    low = 0  # min(nxt): seqs below it reached every connection
    got: dict[int, int] | None = None  # seq -> connections that got it, once out of order
    arrive: dict[int, int] = {}  # seq -> time this process's last subscriber got it
    delivered = 0
    errors = 0
    prefixes: list[bytes] = []
    mono_ns = time.monotonic_ns
    unpack = _SEQ.unpack
    unpack_head = head_seq.unpack_from
    held_get = held.get
    epollout = select.EPOLLOUT
    while True:
        now_ns = mono_ns()
        if now_ns >= end_ns:
            break
        advanced = False
        for fd, ev in ep.poll(min(0.05, (end_ns - now_ns) / 1e9)):
            c = by_fd[fd]
            if ev & ~epollout:
                try:
                    n = recv_into[fd](rbuf)
                except BlockingIOError:
                    n = -1
                except OSError:
                    n = 0
                if n == 0:
                    errors += 1
                    ep.unregister(fd)
                    c.closed = True
                    continue
                if n > 0:
                    # The loop starts at ``start``, so all of these fall in the window.
                    buf = c.buf
                    if buf:  # a partial frame from the last recv comes first
                        buf += view[:n]
                        data, size = buf, len(buf)
                    else:
                        data, size = rbuf, n
                    k = size // flen
                    was = nxt[fd]
                    now = was
                    if k and shortcut and got is None:
                        used = k * flen
                        h0, s0 = unpack_head(data, 0)
                        h1, s1 = unpack_head(data, used - flen)
                        # Every frame's first byte (one C-level slice), the first and last
                        # headers and seqs; what follows must start a data frame (not be,
                        # say, a whole ping, which must be answered now).
                        if (h0 == head and h1 == head and s0 == was and s1 == was + k - 1
                                and data[0:used:flen] == opcodes[:k]
                                and (used == size or head.startswith(data[used:used + hlen]))):
                            now = was + k
                    if now != was:
                        delivered += k
                        if data is buf:
                            del buf[:used]
                        elif used < n:
                            buf += view[used:n]
                    else:
                        if data is not buf:
                            buf += view[:n]
                        prefixes.clear()
                        count = scan(c, prefixes)
                        delivered += count
                        seqs = [unpack(p)[0] for p in prefixes]
                        if got is None and seqs != list(range(was, was + count)):
                            got = _per_seq_counts(held, low)
                        if got is None:
                            now = was + count
                        elif seqs:
                            t = mono_ns()
                            for seq in seqs:
                                got[seq] = got.get(seq, 0) + 1
                                if got[seq] == nconns:
                                    arrive[seq] = t
                                    advanced = True
                    if now != was:
                        nxt[fd] = now
                        left = held[was] - 1
                        held[was] = left
                        held[now] = held_get(now, 0) + 1
                        if left == 0 and was == low:  # the last connection at the minimum
                            t = mono_ns()
                            while not held_get(low):
                                held.pop(low, None)
                                arrive[low] = t
                                low += 1
                            advanced = True
            if c.out and not c.closed:
                _flush_epoll(c, ep)
        if advanced:
            if got is not None:
                while got.get(low, 0) == nconns:
                    del got[low]
                    low += 1
            ctl.complete[spec.slot] = low - 1
            with contextlib.suppress(BlockingIOError):
                os.write(ctl.notify_w, b"x")
    cpu = _cpu_self() - cpu0
    ep.close()
    return {"delivered": delivered, "arrive": arrive, "cpu": cpu, "errors": errors,
            "connections": nconns}


def _per_seq_counts(held: dict[int, int], low: int) -> dict[int, int]:
    """Per-seq connection counts (seq -> connections that got it) from ``nxt`` counts."""
    top = max(v for v, n in held.items() if n)
    return {s: sum(n for v, n in held.items() if v > s) for s in range(low, top)}


def _loop_pub(spec: Spec, conns: list[Conn], ctl: _Ctl) -> dict[str, Any]:
    (c,) = conns
    sel = selectors.DefaultSelector()
    sel.register(c.sock, selectors.EVENT_READ, c)
    sel.register(ctl.notify_r, selectors.EVENT_READ, None)
    start, end = ctl.times[0], ctl.times[1]
    while time.monotonic() < start:
        time.sleep(min(0.01, max(0.0, start - time.monotonic())))
    cpu0 = _cpu_self()
    end_ns = int(end * 1e9)
    pad = os.urandom(max(0, spec.size - _SEQ.size))
    published: dict[int, int] = {}
    seq = 0
    own = -1  # highest seq the publisher's own connection got back
    prefixes: list[bytes] = []
    mono_ns = time.monotonic_ns
    complete = ctl.complete
    slots = range(ctl.sub_slots)
    errors = 0
    while True:
        now_ns = mono_ns()
        if now_ns >= end_ns:
            break
        done = min(own, *(complete[i] for i in slots)) if ctl.sub_slots else own
        n = spec.window - (seq - 1 - done)
        if n > 0:
            t = mono_ns()
            for _ in range(n):
                c.out += client_frame(_SEQ.pack(seq, t) + pad)
                published[seq] = t
                seq += 1
            _flush(c, sel)
        for key, mask in sel.select(min(0.05, (end_ns - now_ns) / 1e9)):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    os.read(ctl.notify_r, 65536)
                continue
            if mask & selectors.EVENT_READ:
                data = recv_nowait(c.sock)
                if data == b"":
                    errors += 1
                    end_ns = 0
                    break
                if data:
                    c.buf += data
                    prefixes.clear()
                    if scan(c, prefixes):
                        own = _SEQ.unpack(prefixes[-1])[0]
            if c.out:
                _flush(c, sel)
    cpu = _cpu_self() - cpu0
    sel.close()
    return {"published": published, "cpu": cpu, "errors": errors}


def _loop_idle(spec: Spec, conns: list[Conn], ctl: _Ctl) -> dict[str, Any]:
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    errors = 0
    while not ctl.release.is_set():
        for key, _mask in sel.select(0.2):
            c = key.data
            data = recv_nowait(c.sock)
            if data is None:
                continue
            if not data:
                errors += 1
                sel.unregister(c.sock)
                continue
            c.buf += data
            scan(c)
            if c.out:
                _flush(c, sel)
    sel.close()
    return {"errors": errors}


class _Session:
    """One churn connection: its socket, phase, bytes read and start time."""

    __slots__ = ("buf", "phase", "sock", "t0")

    CONNECTING, UPGRADING, CLOSING = range(3)

    def __init__(self, sock: socket.socket, t0: int) -> None:
        self.sock = sock
        self.t0 = t0
        self.phase = self.CONNECTING
        self.buf = b""


def _loop_churn(spec: Spec, conns: list[Conn], ctl: _Ctl) -> dict[str, Any]:
    sel = selectors.DefaultSelector()
    request = _request(spec.host, spec.port, spec.path)
    completed = errors = 0
    handshakes: list[int] = []

    def begin() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.connect_ex((spec.host, spec.port))  # EINPROGRESS: writable once connected
        sel.register(s, selectors.EVENT_WRITE, _Session(s, time.monotonic_ns()))

    def end_session(session: _Session, ok: bool) -> None:
        nonlocal completed, errors
        sel.unregister(session.sock)
        session.sock.close()
        if ok:
            completed += 1
        else:
            errors += 1
        begin()

    start, end = ctl.times[0], ctl.times[1]
    while time.monotonic() < start:
        time.sleep(min(0.01, max(0.0, start - time.monotonic())))
    cpu0 = _cpu_self()
    for _ in range(spec.connections):
        begin()
    while time.monotonic() < end:
        for key, _mask in sel.select(max(0.0, min(0.05, end - time.monotonic()))):
            session: _Session = key.data
            if session.phase == session.CONNECTING:
                if session.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    end_session(session, False)
                    continue
                try:
                    session.sock.send(request)  # (a few hundred bytes: the buffer takes them)
                except OSError:
                    end_session(session, False)
                    continue
                session.phase = session.UPGRADING
                sel.modify(session.sock, selectors.EVENT_READ, session)
                continue
            data = recv_nowait(session.sock)
            if data is None:
                continue
            if session.phase == session.UPGRADING:
                if not data:
                    end_session(session, False)
                    continue
                session.buf += data
                head, found, rest = session.buf.partition(b"\r\n\r\n")
                if not found:
                    continue
                if not head.startswith(b"HTTP/1.1 101"):
                    end_session(session, False)
                    continue
                handshakes.append(time.monotonic_ns() - session.t0)
                session.buf = rest
                session.phase = session.CLOSING
                try:
                    session.sock.send(CLOSE_FRAME)
                except OSError:
                    end_session(session, False)
            elif data:
                session.buf += data
            else:  # the server's FIN: its close frame must have come first
                end_session(session, session.buf[:1] == b"\x88")
    cpu = _cpu_self() - cpu0
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    sel.close()
    if len(handshakes) > spec.max_samples:
        step = len(handshakes) / spec.max_samples
        handshakes = [handshakes[int(i * step)] for i in range(spec.max_samples)]
    return {"completed": completed, "handshakes": handshakes, "cpu": cpu, "errors": errors}


_LOOPS: dict[str, Callable[[Spec, list[Conn], _Ctl], dict[str, Any]]] = {
    "echo": _loop_echo, "sub": _loop_sub, "pub": _loop_pub, "idle": _loop_idle,
    "churn": _loop_churn,
}


def _child(spec: Spec, ctl: _Ctl) -> None:
    raise_nofile()
    try:
        conns = [] if spec.role == "churn" else open_connections(
            spec.host, spec.port, spec.path, spec.connections, timeout=spec.connect_timeout)
    except Exception as exc:
        ctl.ready.put((spec.slot, spec.role, f"{type(exc).__name__}: {exc}"))
        return
    ctl.ready.put((spec.slot, spec.role, None))
    try:
        if spec.role != "idle":
            ctl.go.wait(120)
        result = _LOOPS[spec.role](spec, conns, ctl)
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["role"] = spec.role
    ctl.results.put(result)
    ctl.release.wait(120)
    for c in conns:
        with contextlib.suppress(OSError):
            c.sock.send(CLOSE_FRAME)
        c.sock.close()


# ------------------------------------------------------------------------- runners

@dataclass
class LoadResult:
    duration: float
    server_cpu: float  # CPU seconds of the server process over the window
    load_cpu: float  # CPU seconds of all load processes over the window
    other_cpu: float = 0.0  # CPU seconds of everything else on the machine
    results: list[dict[str, Any]] = field(default_factory=list)
    probe: dict[str, Any] = field(default_factory=dict)


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(specs: list[Spec], *, server_pid: int, duration: float,
             on_ready: Callable[[], dict[str, Any]] | None = None,
             connect_timeout: float = 120.0) -> LoadResult:
    """Start one process per spec; measure for ``duration`` seconds once all connected.

    With ``on_ready`` (idle runs), call it once every connection is open and
    return what it returned as ``probe``; no traffic is measured.
    """
    raise_nofile()
    ctx = get_context("fork")
    notify_r, notify_w = os.pipe()
    os.set_blocking(notify_w, False)
    os.set_blocking(notify_r, False)
    sub_slots = sum(1 for s in specs if s.role == "sub")
    ctl = _Ctl(ready=ctx.Queue(), results=ctx.Queue(), go=ctx.Event(), release=ctx.Event(),
               times=ctx.Array("d", 2, lock=False),
               complete=ctx.Array("q", [-1] * max(1, sub_slots), lock=False),
               notify_r=notify_r, notify_w=notify_w, sub_slots=sub_slots)
    procs = [ctx.Process(target=_child, args=(spec, ctl), daemon=True) for spec in specs]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + connect_timeout
        for _ in procs:
            _slot, role, err = ctl.ready.get(timeout=max(0.1, deadline - time.monotonic()))
            if err:  # fail fast: the other processes are killed below
                raise RuntimeError(f"{role}: {err}")
        if on_ready is not None:
            probe = on_ready()
            ctl.release.set()
            for _ in procs:
                ctl.results.get(timeout=30)
            return LoadResult(0.0, 0.0, 0.0, 0.0, [], probe)
        start = time.monotonic() + 0.2
        ctl.times[0], ctl.times[1] = start, start + duration
        ctl.go.set()
        time.sleep(max(0.0, start - time.monotonic()))
        cpu0, busy0 = proc_cpu(server_pid), machine_busy()
        time.sleep(max(0.0, start + duration - time.monotonic()))
        cpu1, busy1 = proc_cpu(server_pid), machine_busy()
        results = [ctl.results.get(timeout=duration + 30) for _ in procs]
        errs = [r["error"] for r in results if "error" in r]
        if errs:
            raise RuntimeError("; ".join(errs))
        load_cpu = sum(r["cpu"] for r in results)
        other = max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - load_cpu)
        return LoadResult(duration, cpu1 - cpu0, load_cpu, other, results)
    finally:
        ctl.release.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        os.close(notify_r)
        os.close(notify_w)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


def _shares(r: LoadResult, duration: float) -> dict[str, float]:
    """What every result shows: each side's CPU in cores over the window, and the errors."""
    return {
        "server cpu": r.server_cpu / duration,
        "load cpu": r.load_cpu / duration,
        "other cpu": r.other_cpu / duration,
        "errors": sum(x["errors"] for x in r.results),
    }


def echo(host: str, port: int, *, server_pid: int, connections: int, in_flight: int,
         size: int, duration: float, procs: int) -> dict[str, float]:
    specs = [Spec("echo", host, port, "/echo", n, size=size, in_flight=in_flight, slot=i)
             for i, n in enumerate(split(connections, procs))]
    r = run_load(specs, server_pid=server_pid, duration=duration)
    received = sum(x["received"] for x in r.results)
    rtts = sorted(t for x in r.results for t in x["rtts"])
    return {
        "msg/s": received / duration,
        "p50 ms": percentile(rtts, 50) / 1e6,
        "p99 ms": percentile(rtts, 99) / 1e6,
        **_shares(r, duration),
    }


def fanout(host: str, port: int, *, server_pid: int, subscribers: int, size: int,
           window: int = 8, duration: float, procs: int) -> dict[str, float]:
    subs = [Spec("sub", host, port, "/fanout", n, size=size, slot=i)
            for i, n in enumerate(split(subscribers, procs))]
    pub = Spec("pub", host, port, "/fanout", 1, size=size, window=window)
    r = run_load([*subs, pub], server_pid=server_pid, duration=duration)
    sub_results = [x for x in r.results if x["role"] == "sub"]
    (pub_result,) = [x for x in r.results if x["role"] == "pub"]
    published: dict[int, int] = pub_result["published"]
    times: list[float] = []
    for seq, t0 in published.items():
        arrivals = [x["arrive"].get(seq) for x in sub_results]
        if all(a is not None for a in arrivals):
            times.append((max(arrivals) - t0) / 1e6)
    times.sort()
    delivered = sum(x["delivered"] for x in sub_results)
    return {
        "deliveries/s": delivered / duration,
        "publishes/s": len(times) / duration,
        "all p50 ms": percentile(times, 50),
        "all p99 ms": percentile(times, 99),
        **_shares(r, duration),
    }


def churn(host: str, port: int, *, server_pid: int, in_flight: int, duration: float,
          procs: int) -> dict[str, float]:
    specs = [Spec("churn", host, port, "/echo", n, slot=i)
             for i, n in enumerate(split(in_flight, procs))]
    r = run_load(specs, server_pid=server_pid, duration=duration)
    handshakes = sorted(t for x in r.results for t in x["handshakes"])
    return {
        "conn/s": sum(x["completed"] for x in r.results) / duration,
        "handshake p50 ms": percentile(handshakes, 50) / 1e6,
        "handshake p99 ms": percentile(handshakes, 99) / 1e6,
        **_shares(r, duration),
    }


def idle(host: str, port: int, *, server_pid: int, connections: int, procs: int,
         settle: float = 2.0) -> dict[str, float]:
    # Warm the server up (imports, first-connection allocations) before the baseline.
    warm = open_connections(host, port, "/echo", 1)
    warm[0].sock.setblocking(True)
    warm[0].sock.sendall(client_frame(b"warm"))
    warm[0].sock.recv(100)
    time.sleep(0.3)
    base = proc_status(server_pid)
    t0 = time.monotonic()
    opened: dict[str, float] = {}

    def probe() -> dict[str, Any]:
        opened["s"] = time.monotonic() - t0
        time.sleep(settle)
        return proc_status(server_pid)

    # Thread-per-connection servers accept slowly: allow 10 ms per connection.
    timeout = 30.0 + connections / 100
    specs = [Spec("idle", host, port, "/echo", n, slot=i, connect_timeout=timeout)
             for i, n in enumerate(split(connections, procs))]
    r = run_load(specs, server_pid=server_pid, duration=0.0, on_ready=probe,
                 connect_timeout=timeout + 10)
    warm[0].sock.close()
    after = r.probe
    return {
        "KB/conn": (after["rss"] - base["rss"]) / connections / 1024,
        "threads": after["threads"],
        "threads before": base["threads"],
        "RSS MB": after["rss"] / 2**20,
        "open s": opened["s"],
    }

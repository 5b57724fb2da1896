"""Flow control and limits (issue 4): send's -1/0, drain, cork, pause, timeouts, limits."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RawClient, client_frame, wait, wait_for
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import syncws


class Sockets:
    """Collects the server-side ws objects and handler events."""

    def __init__(self) -> None:
        self.sockets: list[Any] = []
        self.events: list[tuple[Any, ...]] = []
        self.closed = threading.Event()
        self.drained = threading.Event()

    def spec(self, **extra: Any) -> dict[str, Any]:
        def on_close(ws: Any, code: int, reason: str) -> None:
            self.events.append(("close", code, reason))
            self.closed.set()

        def on_drain(ws: Any) -> None:
            self.events.append(("drain", ws.buffered_amount))
            self.drained.set()

        spec: dict[str, Any] = {"open": self.sockets.append,
                                "message": lambda ws, m: self.events.append(("message", m)),
                                "close": on_close, "drain": on_drain}
        spec.update(extra)
        return spec


def one_socket(make_server: Any, **spec: Any) -> tuple[Sockets, Any, RawClient, Any]:
    """A server with ``spec``, one raw client, and the server-side ws once it is open."""
    rec = Sockets()
    server = make_server(websocket=rec.spec(**spec))
    client = RawClient(server.port)
    wait_for(lambda: rec.sockets, message="open")
    return rec, server, client, rec.sockets[0]


def test_send_results_buffer_bound_and_drain(make_server: Any) -> None:
    rec = Sockets()
    limit = 1024 * 1024
    server = make_server(websocket=rec.spec())
    client = RawClient(server.port, rcvbuf=8192)
    wait_for(lambda: rec.sockets, message="open")
    ws = rec.sockets[0]
    chunk = 64 * 1024
    results = []
    peak = 0
    for i in range(200):
        results.append(ws.send(i.to_bytes(4, "big") + b"x" * (chunk - 4)))
        peak = max(peak, ws.buffered_amount)
        if results[-1] == 0:
            break
    assert results[0] == chunk
    assert -1 in results and results[-1] == 0
    first_bp = results.index(-1)
    assert all(r == chunk for r in results[:first_bp])
    assert all(r == -1 for r in results[first_bp:-1])
    assert peak <= limit + chunk + 10
    assert ws.send("more") == 0  # still over the limit: dropped
    accepted = len(results) - 1
    for i in range(accepted):
        opcode, _, _, payload = client.recv_frame()
        assert (opcode, int.from_bytes(payload[:4], "big"), len(payload)) == (2, i, chunk)
    assert rec.drained.wait(wait(5))
    assert len([e for e in rec.events if e[0] == "drain"]) == 1
    assert ws.send("after") == 5
    assert client.recv_frame() == (1, True, 0, b"after")
    client.close()


def test_close_on_backpressure_limit(make_server: Any) -> None:
    rec = Sockets()
    server = make_server(websocket=rec.spec(close_on_backpressure_limit=True,
                                            backpressure_limit=64 * 1024))
    stalled = RawClient(server.port, rcvbuf=4096)
    wait_for(lambda: rec.sockets, message="open")
    ws = rec.sockets[0]
    with connect(f"ws://127.0.0.1:{server.port}/") as healthy:
        wait_for(lambda: len(rec.sockets) == 2, message="second open")
        for _ in range(500):
            if ws.send(b"y" * 16384) == 0:
                break
        assert rec.closed.wait(wait(5))
        assert ("close", 1006, "backpressure limit") in rec.events
        rec.sockets[1].send("fine")
        assert healthy.recv(timeout=wait(5)) == "fine"
    stalled.close()


def test_max_payload_length(make_server: Any) -> None:
    rec = Sockets()
    server = make_server(websocket=rec.spec(max_payload_length=1024))
    exact = RawClient(server.port)
    exact.send_frame(2, b"a" * 1024)
    wait_for(lambda: ("message", b"a" * 1024) in rec.events, message="1024 delivered")
    exact.close()
    assert rec.closed.wait(wait(5))
    for fragments in (1, 10):
        rec.closed.clear()
        client = RawClient(server.port)
        piece = 2000 // fragments
        for i in range(fragments):
            client.send_frame(2 if i == 0 else 0, b"b" * piece, fin=i == fragments - 1)
        assert client.recv_close()[0] == 1009
        assert rec.closed.wait(wait(5))
        assert rec.events[-1][:2] == ("close", 1009)
        client.close()
    assert not any(e[0] == "message" and len(e[1]) > 1024 for e in rec.events)


def test_frame_announcing_too_much_fails_at_its_header(make_server: Any) -> None:
    """As in Bun: 1009 once a header announces more than the limit, not once it all arrived."""
    rec = Sockets()
    server = make_server(websocket=rec.spec(max_payload_length=1024))
    cases = [
        [client_frame(2, b"b" * 1025)],  # one frame, 16-bit length
        [client_frame(1, b"t" * 70000)],  # text, 64-bit length
        # 600 bytes so far, then a continuation announcing 500 more.
        [client_frame(2, b"c" * 600, fin=False), client_frame(0, b"c" * 500)],
    ]
    for frames in cases:
        rec.closed.clear()
        client = RawClient(server.port)
        *whole, announcing = frames
        for frame in whole:
            client.send(frame)
        header = 14 if len(announcing) > 65536 + 14 else 8 if len(announcing) > 131 else 6
        client.send(announcing[:header + 10])  # the header and 10 bytes: nothing more comes
        assert client.recv_close()[0] == 1009
        assert rec.closed.wait(wait(5))
        assert rec.events[-1][:2] == ("close", 1009)
        client.close()
    assert not any(e[0] == "message" for e in rec.events)
    # A frame out of place is a protocol error (1002) whatever length it announces.
    for frames in ([client_frame(0, b"c" * 2000)],  # a continuation with no message begun
                   [client_frame(1, b"t" * 600, fin=False), client_frame(1, b"n" * 500)]):
        client = RawClient(server.port)
        *whole, announcing = frames
        for frame in whole:
            client.send(frame)
        client.send(announcing[:8])  # the header alone first...
        time.sleep(0.1)  # (only so that the server sees it alone; the verdict is the same)
        client.send(announcing[8:9])  # ...then a byte of payload, enough for wsproto to judge
        assert client.recv_close()[0] == 1002
        client.close()


def test_a_peer_still_sending_reads_our_close_frame_not_a_reset(make_server: Any) -> None:
    """We fail at the header of a 16 MiB frame, then take (and discard) the rest until
    the peer's FIN: closing with its bytes unread would reset the connection, which
    breaks the peer's send and can destroy our close frame before it is read."""
    rec = Sockets()
    server = make_server(websocket=rec.spec(max_payload_length=1024))
    client = RawClient(server.port, timeout=10)
    client.send(client_frame(2, bytes(16 * 1024 * 1024)))  # a reset would raise here
    assert client.recv_close() == (1009, b"Message too big")
    assert client.sock.recv(1) == b""  # our FIN, not a reset
    client.sock.shutdown(socket.SHUT_WR)
    assert rec.closed.wait(wait(5))
    assert rec.events == [("close", 1009, "Message too big")]
    client.close()


def test_python_websockets_sending_too_much_sees_1009(make_server: Any) -> None:
    """A real client in the middle of a big send gets the close code, not 1006."""
    server = make_server(websocket={"message": lambda ws, m: ws.send(m),
                                    "max_payload_length": 1024})
    for _ in range(5):
        with connect(f"ws://127.0.0.1:{server.port}/", max_size=None) as client:
            with pytest.raises(ConnectionClosed) as closed:
                client.send(bytes(8 * 1024 * 1024))
                client.recv(timeout=wait(10))
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1009, "Message too big")


def test_idle_timeout_without_pings_closes_silent_peer(make_server: Any) -> None:
    rec = Sockets()
    server = make_server(websocket=rec.spec(idle_timeout=1, send_pings=False))
    client = RawClient(server.port)
    started = time.monotonic()
    assert client.at_eof() or client.at_eof()
    assert time.monotonic() - started < wait(3)
    assert rec.closed.wait(wait(3))
    assert rec.events[-1] == ("close", 1006, "idle timeout")
    client.close()


def test_idle_timeout_with_pings_keeps_live_peer(make_server: Any) -> None:
    rec = Sockets()
    # 2 s: the pong has a whole second to come back even on a loaded machine.
    server = make_server(websocket=rec.spec(idle_timeout=2, send_pings=True))
    with connect(f"ws://127.0.0.1:{server.port}/") as client:
        assert not rec.closed.wait(5)  # python-websockets answers the pings
        client.send("still here")
        wait_for(lambda: ("message", "still here") in rec.events, message="delivered")


def test_idle_timeout_spares_a_slow_reader_whose_pong_waits_behind_data(
        make_server: Any) -> None:
    """API.md: with send_pings a live client is never timed out, even one reading slowly."""
    rec = Sockets()
    server = make_server(websocket=rec.spec(idle_timeout=1, send_pings=True,
                                            backpressure_limit=8 << 20))
    client = RawClient(server.port, rcvbuf=16384)
    wait_for(lambda: rec.sockets, message="open")
    total = 48 * 65536
    for _ in range(48):
        rec.sockets[0].send(b"d" * 65536)
    received = 0
    while received < total:  # about 2.5 s: far past the 1 s idle timeout
        opcode, _, _, payload = client.recv_frame()
        assert opcode == 0x2, f"frame {opcode:#x} after {received} bytes"
        received += len(payload)
        time.sleep(0.05)  # a slow reader, not a silent one
    # The ping came behind the data; the answer keeps the connection.
    opcode, _, _, payload = client.recv_frame()
    assert opcode == 0x9
    client.send_frame(0xA, payload)
    assert not rec.closed.is_set()
    client.close()


def test_idle_timeout_with_pings_still_closes_a_silent_peer(make_server: Any) -> None:
    """A peer that never answers our pings is closed: its kernel acknowledging the ping
    itself is no sign of life."""
    rec = Sockets()
    server = make_server(websocket=rec.spec(idle_timeout=1, send_pings=True))
    client = RawClient(server.port)  # reads nothing, answers nothing
    assert rec.closed.wait(wait(5))
    assert rec.events[-1] == ("close", 1006, "idle timeout")
    client.close()


def paused_connection(make_server: Any) -> tuple[Sockets, RawClient, Any]:
    """A connection paused right after open, with a one-second idle timeout and no pings."""
    rec = Sockets()
    server = make_server(websocket=rec.spec(idle_timeout=1, send_pings=False))
    client = RawClient(server.port)
    wait_for(lambda: rec.sockets, message="open")
    ws = rec.sockets[0]
    ws.pause()
    assert ws.is_paused
    return rec, client, ws


def test_pause_in_a_handler_holds_back_the_rest_of_its_batch(make_server: Any) -> None:
    delivered: list[str] = []
    first_done = threading.Event()

    def on_message(ws: Any, msg: str) -> None:
        delivered.append(msg)
        if msg == "m1":
            ws.pause()
            first_done.set()

    _, server, client, ws = one_socket(make_server, message=on_message)
    # One write: the five messages reach the worker as one batch.
    client.sock.sendall(b"".join(client_frame(0x1, f"m{i}".encode()) for i in range(1, 6)))
    assert first_done.wait(wait(5))
    settled = threading.Event()  # one more loop turn and a worker pass for anything stray
    server._loop.call_soon_threadsafe(settled.set)
    assert settled.wait(wait(5))
    assert delivered == ["m1"] and ws.is_paused
    ws.resume()
    wait_for(lambda: len(delivered) == 5, message="held messages delivered")
    assert delivered == ["m1", "m2", "m3", "m4", "m5"]
    client.close()


def test_a_paused_socket_hears_the_answer_to_its_close(make_server: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import syncws._ws_conn
    monkeypatch.setattr(syncws._ws_conn, "CLOSE_HANDSHAKE_TIMEOUT", 60.0)
    rec, _, client, ws = one_socket(make_server)
    ws.pause()
    ws.close(4000, "bye")
    assert client.recv_close() == (4000, b"bye")
    client.send_frame(0x8, (4000).to_bytes(2, "big"))
    # Not the 60 s deadline: the peer's answer is read although the socket is paused.
    assert rec.closed.wait(wait(5))
    assert rec.events[-1] == ("close", 4000, "bye")
    client.close()


def test_stop_runs_close_handlers_of_different_sockets_in_parallel(make_server: Any) -> None:
    together = threading.Barrier(4)
    met: list[bool] = []

    def on_close(ws: Any, code: int, reason: str) -> None:
        try:
            together.wait(wait(5))  # only passes if all four run at once
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)

    server = make_server(websocket={"message": lambda ws, m: None, "close": on_close},
                         workers=4)
    clients = [RawClient(server.port) for _ in range(4)]
    wait_for(lambda: server.pending_websockets == 4, message="all open")
    for client in clients:  # they never answer: each close ends at its deadline... or TCP end
        client.sock.close()
    server.stop(close_active_connections=True, timeout=wait(10))
    assert met == [True] * 4


def test_paused_connection_is_not_timed_out(make_server: Any) -> None:
    rec, client, ws = paused_connection(make_server)
    client.send_frame(1, b"held")
    assert not rec.closed.wait(2.5)
    assert ("message", "held") not in rec.events
    ws.resume()
    wait_for(lambda: ("message", "held") in rec.events, message="held message delivered")
    client.close()


@pytest.mark.parametrize("how", ["reset", "fin"])
def test_a_paused_connection_whose_peer_goes_is_closed(make_server: Any, how: str) -> None:
    """Paused, the socket is not read; the idle tick still notices the peer gone."""
    rec = Sockets()
    server = make_server(websocket=rec.spec(idle_timeout=1, send_pings=False))
    client = RawClient(server.port)
    wait_for(lambda: rec.sockets, message="open")
    rec.sockets[0].pause()
    paused = threading.Event()  # the loop has stopped reading the socket before it goes
    server._loop.call_soon_threadsafe(paused.set)
    assert paused.wait(wait(5))
    if how == "reset":
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        client.sock.shutdown(socket.SHUT_WR)
    client.sock.close()
    assert rec.closed.wait(wait(5))
    assert rec.events[-1] == ("close", 1006, "")


def test_resume_gives_a_silent_peer_a_whole_idle_period(make_server: Any) -> None:
    """The idle clock is frozen while paused: it does not run out just after resume()."""
    rec, client, ws = paused_connection(make_server)
    # Past an idle tick and just short of the next one (ticks come once a second).
    assert not rec.closed.wait(1.9)
    ws.resume()
    resumed = time.monotonic()
    assert rec.closed.wait(wait(5))
    assert rec.events[-1] == ("close", 1006, "idle timeout")
    assert time.monotonic() - resumed >= 0.8
    client.close()


def test_max_connections_refuses_the_eleventh(make_server: Any) -> None:
    server = make_server(websocket={"message": lambda ws, m: ws.send(m)}, max_connections=10)
    clients = [RawClient(server.port) for _ in range(10)]
    extra = socket.create_connection(("127.0.0.1", server.port), timeout=wait(5))
    reply = extra.recv(1024)
    assert reply.startswith(b"HTTP/1.1 503 ")
    extra.close()
    for i, client in enumerate(clients):
        client.send_frame(1, f"{i}".encode())
        assert client.recv_frame()[3] == f"{i}".encode()
        client.close()


class CountingSocket:
    """Wraps a socket and counts the system calls the loop makes to write."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.writes = 0

    def send(self, data: Any) -> int:
        self.writes += 1
        return self._sock.send(data)

    def sendmsg(self, buffers: Any) -> int:
        self.writes += 1
        return self._sock.sendmsg(buffers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_cork_sends_in_one_write(make_server: Any) -> None:
    """Loop level: each uncorked send is flushed on its own loop turn."""
    rec = Sockets()
    server = make_server(websocket=rec.spec())
    client = RawClient(server.port)
    wait_for(lambda: rec.sockets, message="open")
    ws = rec.sockets[0]
    conn = ws._conn
    counter = CountingSocket(conn.sock)
    done = threading.Event()
    server._loop.call_soon_threadsafe(lambda: (setattr(conn, "sock", counter), done.set()))
    assert done.wait(wait(5))

    def one_per_turn() -> None:
        for i in range(100):
            turn = threading.Event()
            ws.send(f"u{i}")
            server._loop.call_soon_threadsafe(turn.set)
            turn.wait(wait(5))

    one_per_turn()
    wait_for(lambda: counter.writes >= 100, message="uncorked writes")
    uncorked = counter.writes
    for i in range(100):
        assert client.recv_frame()[3] == f"u{i}".encode()

    def corked(w: Any) -> str:
        for i in range(100):
            w.send(f"c{i}")
            server._loop.call_soon_threadsafe(lambda: None)
        return "ret"

    assert ws.cork(corked) == "ret"
    for i in range(100):
        assert client.recv_frame()[3] == f"c{i}".encode()
    assert counter.writes - uncorked == 1
    assert uncorked >= 50
    client.close()


def test_publishes_inside_cork_keep_their_place_among_the_sends(make_server: Any) -> None:
    """Within one connection, sends and publishes arrive in the order they were called."""
    rec = Sockets()

    def on_open(ws: Any) -> None:
        ws.subscribe("t")
        rec.sockets.append(ws)

    server = make_server(websocket=rec.spec(open=on_open, publish_to_self=True))
    client = RawClient(server.port)
    other = RawClient(server.port)
    wait_for(lambda: len(rec.sockets) == 2, message="both open")
    ws = next(w for w in rec.sockets if w.remote_address == "127.0.0.1" and
              w._conn.peer[1] == client.sock.getsockname()[1])

    def corked(w: Any) -> None:
        w.send("1 send")
        server.publish("t", "2 server.publish")
        w.send("3 send")
        w.publish("t", "4 ws.publish")
        w.send("5 send")

    ws.cork(corked)
    assert [client.recv_frame()[3].decode() for _ in range(5)] == [
        "1 send", "2 server.publish", "3 send", "4 ws.publish", "5 send"]
    # The other subscriber gets both publishes too.
    assert [other.recv_frame()[3].decode() for _ in range(2)] == [
        "2 server.publish", "4 ws.publish"]
    client.close()
    other.close()


# The three ways out: plain frames, the shared compressor, a per-connection one.
DEFLATE_MODES = {"plain": False, "deflate-shared": True,
                 "deflate-per-connection": {"server_no_context_takeover": False}}


@pytest.mark.parametrize("deflate", list(DEFLATE_MODES.values()), ids=list(DEFLATE_MODES))
def test_cork_keeps_the_backpressure_limit(make_server: Any, deflate: Any) -> None:
    """Sends inside cork() say -1 and 0 as plain sends do; a dropped one never goes out."""
    rec = Sockets()
    limit = 256 * 1024
    server = make_server(websocket=rec.spec(backpressure_limit=limit,
                                            per_message_deflate=deflate))
    extra = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
    client = RawClient(server.port, extra=extra, rcvbuf=4096)  # reads nothing for now
    assert (client.header("Sec-WebSocket-Extensions") is not None) == bool(deflate)
    wait_for(lambda: rec.sockets, message="open")
    ws = rec.sockets[0]
    chunk = 64 * 1024
    # Random bytes: a frame is as big with deflate as without.
    payloads = [i.to_bytes(4, "big") + os.urandom(chunk - 4) for i in range(160)]

    def corked(w: Any) -> list[int]:
        return [w.send(p, compress=bool(deflate)) for p in payloads]

    results = ws.cork(corked)
    accepted = results.index(0)
    assert results[:accepted - 1] == [chunk] * (accepted - 1)
    assert results[accepted - 1] == -1
    assert set(results[accepted:]) == {0}
    assert accepted <= limit // chunk + 1
    # Headers, and deflate's few bytes per message on random data, count too.
    assert ws.buffered_amount <= limit + chunk + 1024

    inflater = zlib.decompressobj(-15)
    for i in range(accepted):
        _, _, rsv, payload = client.recv_frame()
        if rsv:  # compressed (syncws sends random bytes plain: deflating would grow them)
            payload = inflater.decompress(payload + b"\x00\x00\xff\xff")
        assert payload == payloads[i]
    assert rec.drained.wait(wait(5))
    assert ws.cork(lambda w: w.send("after")) == 5
    assert client.recv_frame()[3] == b"after"
    client.close()


@pytest.mark.parametrize("deflate", list(DEFLATE_MODES.values()), ids=list(DEFLATE_MODES))
def test_corked_sends_keep_their_place_and_count_against_the_limit(make_server: Any,
                                                                   deflate: Any) -> None:
    """A corked send is queued when made: later sends of other threads come after it."""
    rec = Sockets()
    limit = 256 * 1024
    server = make_server(websocket=rec.spec(backpressure_limit=limit,
                                            per_message_deflate=deflate))
    extra = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
    client = RawClient(server.port, extra=extra)
    wait_for(lambda: rec.sockets, message="open")
    ws = rec.sockets[0]
    chunk = 64 * 1024
    payloads = [i.to_bytes(4, "big") + os.urandom(chunk - 4) for i in range(8)]
    # Hold the loop so nothing leaves the buffer while the cork runs.
    stalled, release = threading.Event(), threading.Event()
    server._loop.call_soon_threadsafe(lambda: (stalled.set(), release.wait(wait(10))))
    assert stalled.wait(wait(5))
    other: list[int] = []

    def corked(w: Any) -> list[int]:
        mine = [w.send(p, compress=bool(deflate)) for p in payloads[:2]]
        filler = threading.Thread(
            target=lambda: other.extend(w.send(p, compress=bool(deflate)) for p in payloads[2:]))
        filler.start()
        filler.join()
        return mine

    try:
        assert ws.cork(corked) == [chunk, chunk]
    finally:
        release.set()
    # The two corked frames (and their headers) already fill half the limit.
    assert other == [chunk, -1, 0, 0, 0, 0]
    inflater = zlib.decompressobj(-15)
    received = []
    for _ in range(4):
        _, _, rsv, payload = client.recv_frame()
        if rsv:
            payload = inflater.decompress(payload + b"\x00\x00\xff\xff")
        received.append(payloads.index(payload))
    assert received == [0, 1, 2, 3]
    client.close()


def test_corked_sends_go_out_before_a_close_made_inside_the_cork(make_server: Any) -> None:
    _, _, client, ws = one_socket(make_server)

    def last_words(w: Any) -> list[int]:
        sent = [w.send("last"), w.send(b"words")]
        w.close(4000, "bye")
        return [*sent, w.send("too late")]

    assert ws.cork(last_words) == [4, 5, 0]
    assert client.recv_frame()[::3] == (0x1, b"last")
    assert client.recv_frame()[::3] == (0x2, b"words")
    assert client.recv_close() == (4000, b"bye")
    client.close()


def test_corked_sends_go_out_before_a_close_from_another_thread(make_server: Any) -> None:
    _, server, client, ws = one_socket(make_server)
    closed_meanwhile = threading.Event()

    def corked(w: Any) -> list[int]:
        sent = [w.send(f"corked {i}") for i in range(3)]
        closer = threading.Thread(target=lambda: (ws.close(4001, "from elsewhere"),
                                                  closed_meanwhile.set()))
        closer.start()
        closer.join()
        # Let the loop take the close before the cork ends.
        turn = threading.Event()
        server._loop.call_soon_threadsafe(turn.set)
        assert turn.wait(wait(5))
        return sent

    assert ws.cork(corked) == [8, 8, 8]
    assert closed_meanwhile.is_set()
    assert [client.recv_frame()[3] for _ in range(3)] == [b"corked 0", b"corked 1", b"corked 2"]
    assert client.recv_close() == (4001, b"from elsewhere")
    client.close()


def test_stats_counts(make_server: Any) -> None:
    def on_message(ws: Any, message: str) -> None:
        ws.send(message)
        ws.cork(lambda w: w.send("corked"))
        server.publish("t", "to both")

    server = make_server(websocket={"open": lambda ws: ws.subscribe("t"),
                                    "message": on_message})
    with connect(f"ws://127.0.0.1:{server.port}/") as client, \
            connect(f"ws://127.0.0.1:{server.port}/") as other:
        for _ in range(5):
            client.send("hello")
            assert [client.recv(timeout=wait(5)) for _ in range(3)] == [
                "hello", "corked", "to both"]
            assert other.recv(timeout=wait(5)) == "to both"
        stats = server.stats()
    assert stats["open_websockets"] == 2
    assert stats["messages_in"] == 5
    assert stats["messages_out"] == 5 * 4  # send, corked send, publish to two sockets
    assert stats["bytes_out"] >= 5 * 7
    assert stats["workers"] == 4


FLOOD_SERVER = """
import sys, time, syncws
def slow(ws, msg):
    time.sleep(0.0005)
    n = int.from_bytes(msg[:4], "big")
    if n % 1000 == 999: ws.send(str(n))
server = syncws.serve(websocket={"message": slow}, hostname="127.0.0.1", port=0, workers=2)
print(server.port, flush=True)
server.serve_forever()
"""


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@contextlib.contextmanager
def server_process(script: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Run ``script`` (a server printing its port first) in a process of its own.

    Killed at the end: a graceful stop would run every handler still queued.
    """
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        yield proc, int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait(wait(10))
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.timeout(120)
def test_flood_keeps_server_memory_bounded() -> None:
    with server_process(FLOOD_SERVER) as (proc, port):
        client = RawClient(port, timeout=60)
        baseline = vm_hwm_kib(proc.pid)
        payload = b"z" * (64 * 1024 - 4)
        count = 200 * 1024 * 1024 // (64 * 1024)  # 200 MiB of messages

        def reader() -> None:
            for n in range(999, count, 1000):
                assert client.recv_frame()[3] == str(n).encode()

        thread = threading.Thread(target=reader)
        thread.start()
        for n in range(count):
            client.send(client_frame(2, n.to_bytes(4, "big") + payload))
        thread.join(wait(90))
        assert not thread.is_alive()
        growth_mib = (vm_hwm_kib(proc.pid) - baseline) / 1024
        print(f"flood: server peak RSS grew {growth_mib:.1f} MiB")
        assert growth_mib < 24, f"server peak RSS grew {growth_mib:.1f} MiB"
        client.close()


def test_ping_flood_from_a_peer_that_never_reads_stays_bounded(make_server: Any) -> None:
    """Pongs respect the limit: over it, only the latest ping is answered, once there is room."""
    rec = Sockets()
    limit = 64 * 1024
    server = make_server(websocket=rec.spec(backpressure_limit=limit))
    client = RawClient(server.port, rcvbuf=4096, timeout=20)
    wait_for(lambda: rec.sockets, message="open")
    ws = rec.sockets[0]
    count = 40_000  # about 5 MB of pongs: more than the kernel buffers take
    pings = b"".join(client_frame(9, i.to_bytes(4, "big") + bytes(121)) for i in range(count))
    client.send(pings)
    wait_for(lambda: server.stats()["bytes_in"] >= len(pings), timeout=wait(30),
             message="every ping read")
    assert ws.buffered_amount <= limit + 127
    last = -1
    while last != count - 1:  # the peer reads again: answers come in order, the last one too
        opcode, _, _, payload = client.recv_frame()
        assert opcode == 0xA
        number = int.from_bytes(payload[:4], "big")
        assert number > last
        last = number
    client.close()


HOSTILE_SERVER = """
import sys, time, syncws
slow = lambda *args: time.sleep(0.01)
server = syncws.serve(websocket={"message": slow, "ping": slow, "pong": slow},
                      hostname="127.0.0.1", port=0, workers=2)
print(server.port, flush=True)
server.serve_forever()
"""


def flood_growth_mib(frames: bytes, volume: int, until_parsed: bool = False) -> float:
    """Send ``frames`` over and over (up to ``volume`` bytes, or until the server
    stops reading for 2 s) to a server whose handlers are slow and which we never
    read from; the server process's peak RSS growth. ``until_parsed``: then wait
    for the pong to a ping sent behind it all."""
    with server_process(HOSTILE_SERVER) as (proc, port):
        client = RawClient(port, rcvbuf=4096, timeout=2)
        baseline = vm_hwm_kib(proc.pid)
        sent = 0
        with contextlib.suppress(TimeoutError):
            while sent < volume:
                client.send(frames)
                sent += len(frames)
        if until_parsed:
            client.sock.settimeout(wait(60))
            client.send_frame(9, b"parsed?")
            assert client.recv_frame() == (0xA, True, 0, b"parsed?")
        else:
            time.sleep(1)  # let the server parse what the kernel still held
        growth = (vm_hwm_kib(proc.pid) - baseline) / 1024
        client.close()
        return growth


@pytest.mark.timeout(120)
@pytest.mark.parametrize("frame", [
    client_frame(2, b""),   # empty messages: no payload, but each is an event to queue
    client_frame(9, b""),   # empty pings for a slow ping handler
    client_frame(10, b""),  # empty pongs for a slow pong handler
], ids=["empty-messages", "empty-pings", "empty-pongs"])
def test_flood_of_empty_events_keeps_server_memory_bounded(frame: bytes) -> None:
    """The inbound bound counts what a queued event costs, not just its payload."""
    growth = flood_growth_mib(frame * 10_000, 60 * 1024 * 1024)
    assert growth < 24, f"server peak RSS grew {growth:.1f} MiB"


@pytest.mark.timeout(120)
def test_message_in_countless_tiny_fragments_keeps_server_memory_bounded() -> None:
    """A 250 KB message in one-byte fragments must not cost ~40 bytes of memory per byte."""
    frames = (client_frame(2, b"start", fin=False) + client_frame(0, b"x", fin=False) * 250_000
              + client_frame(0, b"", fin=False) * 50_000 + client_frame(0, b"end"))
    growth = flood_growth_mib(frames, len(frames), until_parsed=True)
    assert growth < 6, f"server peak RSS grew {growth:.1f} MiB"


TINY_SENDS_SERVER = """
import sys, syncws
def flood(ws):
    sent = 0
    while ws.send(b"x") > 0:  # 3-byte frames until the limit says stop
        sent += 1
    print(sent, ws.buffered_amount, flush=True)
server = syncws.serve(websocket={"open": flood, "message": lambda ws, m: None,
                                 "backpressure_limit": 2 * 1024 * 1024},
                      hostname="127.0.0.1", port=0, workers=2)
print(server.port, flush=True)
server.serve_forever()
"""


@pytest.mark.timeout(60)
def test_tiny_sends_to_a_stalled_peer_cost_their_bytes_not_more() -> None:
    """backpressure_limit bounds memory too: 700,000 one-byte messages are not 700,000 objects."""
    with server_process(TINY_SENDS_SERVER) as (proc, port):
        assert proc.stdout is not None
        baseline = vm_hwm_kib(proc.pid)
        client = RawClient(port, rcvbuf=4096)
        sent, buffered = map(int, proc.stdout.readline().split())
        growth = (vm_hwm_kib(proc.pid) - baseline) / 1024
        client.close()
        assert sent > 500_000 and buffered > 1024 * 1024
        assert growth < 16, f"server peak RSS grew {growth:.1f} MiB for {sent} tiny sends"


def test_ready_state_and_pause_right_after_close_as_in_bun(make_server: Any) -> None:
    """Bun: readyState is 3 as soon as close()/terminate() returns; pause() then does nothing."""
    sockets: list[Any] = []
    server = make_server(websocket={"open": sockets.append, "message": lambda ws, m: None})
    clients = [RawClient(server.port), RawClient(server.port)]
    wait_for(lambda: len(sockets) == 2, message="both open")
    closed, terminated = sockets
    closed.close(4000, "bye")
    assert closed.ready_state is syncws.ReadyState.CLOSED
    closed.pause()
    assert closed.is_paused is False
    terminated.terminate()
    assert terminated.ready_state is syncws.ReadyState.CLOSED
    assert clients[0].recv_close()[0] == 4000
    for client in clients:
        client.close()


def test_messages_queued_behind_our_close_get_no_handler(make_server: Any) -> None:
    """As in Bun, where close() runs the close handler at once: nothing else runs after it."""
    rec = Sockets()

    def on_message(ws: Any, msg: Any) -> None:
        rec.events.append(("message", msg))
        if msg == "kick":
            ws.close(4000, "kicked")

    server = make_server(websocket=rec.spec(message=on_message))
    client = RawClient(server.port)
    # One write: all four are read, and queued, before the handler of "kick" runs.
    client.send(b"".join(client_frame(1, m) for m in (b"a", b"kick", b"b", b"c")))
    assert client.recv_close() == (4000, b"kicked")
    client.send_frame(0x8, struct.pack("!H", 4000))
    assert rec.closed.wait(wait(5))
    assert [e for e in rec.events if e[0] in ("message", "close")] == [
        ("message", "a"), ("message", "kick"), ("close", 4000, "kicked")]
    client.close()


def test_open_runs_even_when_our_close_began_before_it(make_server: Any) -> None:
    """open, then close exactly once (API.md), also when stop() closes a socket whose open
    is still queued behind a busy handler (one worker)."""
    events: list[tuple[Any, ...]] = []
    release, b_fetch_go = threading.Event(), threading.Event()

    def fetch(req: Any, server: Any) -> None:
        if req.path == "/B":
            assert b_fetch_go.wait(wait(5))
        server.upgrade(req, data=req.path)

    def on_message(ws: Any, msg: Any) -> None:
        events.append(("message", ws.data))
        assert release.wait(wait(5))

    server = make_server(fetch, {"open": lambda ws: events.append(("open", ws.data)),
                                 "message": on_message,
                                 "close": lambda ws, c, r: events.append(("close", ws.data, c))},
                         workers=1)
    a = RawClient(server.port, path="/A")
    wait_for(lambda: ("open", "/A") in events, message="A open")
    clients: dict[str, RawClient] = {}
    opener = threading.Thread(
        target=lambda: clients.setdefault("b", RawClient(server.port, path="/B")))
    opener.start()
    wait_for(lambda: server.pending_requests == 1, message="B's fetch on the only worker")
    a.send_frame(1, b"hi")  # queued: A's handler waits for the worker, B's open behind it
    wait_for(lambda: server.stats()["messages_in"] == 1, message="A's message read")
    b_fetch_go.set()
    opener.join(wait(5))
    b = clients["b"]
    wait_for(lambda: ("message", "/A") in events, message="A's handler holds the worker")
    stopper = threading.Thread(target=server.stop, args=(True,), kwargs={"timeout": wait(10)})
    stopper.start()
    for client in (a, b):  # our close reaches both before B's open has run
        assert client.recv_close()[0] == 1001
        client.send_frame(0x8, struct.pack("!H", 1001))
    release.set()
    stopper.join(wait(10))
    assert [e for e in events if e[1] == "/B"] == [("open", "/B"), ("close", "/B", 1001)]
    a.close()
    b.close()


def test_send_after_close_returns_zero(make_server: Any) -> None:
    rec = Sockets()
    server = make_server(websocket=rec.spec())
    with connect(f"ws://127.0.0.1:{server.port}/"):
        wait_for(lambda: rec.sockets, message="open")
    assert rec.closed.wait(wait(5))
    ws = rec.sockets[0]
    assert ws.send("late") == 0
    assert ws.ping(b"x") == 0
    assert int(ws.ready_state) == 3


def test_drain_runs_while_paused_so_pause_on_minus_one_resume_on_drain_works(
        make_server: Any) -> None:
    # The usual flow-control pattern: a send returns -1, stop reading that peer
    # (pause), start again once what we queued is out (drain). A pause holds
    # back what is read, not drain, or the connection would stay paused for good.
    events: list[Any] = []

    def on_message(ws: Any, msg: bytes) -> None:
        result = ws.send(msg * 2)
        events.append(("sent", result))
        if result == -1:
            ws.pause()

    def on_drain(ws: Any) -> None:
        events.append("drain")
        ws.resume()

    server = make_server(websocket={"message": on_message, "drain": on_drain,
                                    "backpressure_limit": 1000})
    client = RawClient(server.port)
    try:
        client.sock.sendall(b"".join(client_frame(0x2, bytes([i]) * 600) for i in range(3)))
        for i in range(3):  # read every answer: the buffer drains each time
            assert client.recv_frame() == (0x2, True, 0, bytes([i]) * 1200)
        wait_for(lambda: len(events) == 6, message="three sends, three drains")
        assert events == [("sent", -1), "drain"] * 3
    finally:
        client.close()

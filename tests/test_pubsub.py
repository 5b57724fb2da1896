"""Topic pub/sub (issue 3)."""

from __future__ import annotations

import contextlib
import random
import threading
from typing import Any

import pytest
from conftest import RawClient, wait, wait_for
from websockets.sync.client import connect

import syncws


class Room:
    """A server whose sockets join "chat-room" on open; records publish results."""

    def __init__(self, make_server: Any, **options: Any) -> None:
        self.stack = contextlib.ExitStack()
        self.sockets: list[Any] = []
        self.results: list[int] = []
        self.lock = threading.Lock()

        def on_open(ws: Any) -> None:
            ws.subscribe("chat-room")
            with self.lock:
                self.sockets.append(ws)

        def on_message(ws: Any, msg: Any) -> None:
            if msg == "count":
                ws.send(str(self.server.subscriber_count("chat-room")))
            else:
                self.results.append(ws.publish("chat-room", msg))

        self.server = make_server(websocket={"open": on_open, "message": on_message,
                                             **options})

    def connect(self, n: int) -> list[Any]:
        clients = [self.stack.enter_context(connect(f"ws://127.0.0.1:{self.server.port}/"))
                   for _ in range(n)]
        wait_for(lambda: len(self.sockets) == n, message="all subscribed")
        return clients


def test_ws_publish_skips_sender_and_server_publish_reaches_all(make_server: Any) -> None:
    room = Room(make_server)
    a, b, c = room.connect(3)
    try:
        a.send("from a")
        assert b.recv(timeout=wait(5)) == "from a"
        assert c.recv(timeout=wait(5)) == "from a"
        assert room.server.publish("chat-room", "Server announcement!") == 20
        for client in (a, b, c):
            assert client.recv(timeout=wait(5)) == "Server announcement!"
        assert room.results == [6]
        with pytest.raises(TimeoutError):
            a.recv(timeout=0.2)
    finally:
        room.stack.close()


def test_publish_to_self(make_server: Any) -> None:
    room = Room(make_server, publish_to_self=True)
    a, b = room.connect(2)
    try:
        a.send(b"\x01\x02")
        assert a.recv(timeout=wait(5)) == b"\x01\x02"
        assert b.recv(timeout=wait(5)) == b"\x01\x02"
    finally:
        room.stack.close()


def test_subscriber_count_drops_on_close_and_on_tcp_drop(make_server: Any) -> None:
    room = Room(make_server)
    _, _, c = room.connect(3)
    assert room.server.subscriber_count("chat-room") == 3
    c.close()
    wait_for(lambda: room.server.subscriber_count("chat-room") == 2, message="count 2")
    raw = RawClient(room.server.port)
    wait_for(lambda: room.server.subscriber_count("chat-room") == 3, message="count 3")
    raw.close()  # a TCP drop, no close frame
    wait_for(lambda: room.server.subscriber_count("chat-room") == 2, message="count 2 again")
    assert room.server.subscriber_count("nobody") == 0
    room.stack.close()


def test_a_closing_socket_leaves_its_topics_at_once(make_server: Any) -> None:
    """As in Bun, where the close handler runs inside close(): a socket whose peer has not
    answered our close yet is no subscriber, and publishing is no drop because of it."""
    sockets: list[Any] = []
    server = make_server(websocket={"open": lambda ws: (ws.subscribe("t"), sockets.append(ws)),
                                    "message": lambda ws, m: None})
    listener = RawClient(server.port)
    slow = RawClient(server.port)  # reads nothing, never answers our close
    wait_for(lambda: len(sockets) == 2, message="both subscribed")
    closing = next(ws for ws in sockets
                   if ws._conn.peer[1] == slow.sock.getsockname()[1])
    closing.close(4000, "bye")
    assert closing.ready_state is syncws.ReadyState.CLOSED  # as in Bun, at once
    assert not closing.is_subscribed("t") and closing.subscriptions == []
    assert server.subscriber_count("t") == 1
    assert closing.subscribe("t") is False
    assert server.publish("t", "after") == 5
    assert listener.recv_frame()[3] == b"after"
    listener.close()
    slow.close()


def test_subscription_methods(make_server: Any) -> None:
    answers: list[Any] = []
    closed = threading.Event()

    def on_open(ws: Any) -> None:
        answers.append(ws.subscribe("t"))
        answers.append(ws.subscribe("t"))
        answers.append(ws.subscribe("u"))
        answers.append(ws.subscriptions)
        answers.append(ws.is_subscribed("u"))
        answers.append(ws.unsubscribe("u"))
        answers.append(ws.unsubscribe("u"))
        answers.append(ws.is_subscribed("u"))
        for bad in ("", 5):
            try:
                ws.subscribe(bad)
            except (TypeError, ValueError) as exc:
                answers.append(type(exc).__name__)
        ws.close()

    def on_close(ws: Any, code: int, reason: str) -> None:
        answers.append(("in close", ws.subscriptions, ws.is_subscribed("t"), ws.subscribe("t")))
        closed.set()

    server = make_server(websocket={"open": on_open, "message": lambda ws, m: None,
                                    "close": on_close})
    with connect(f"ws://127.0.0.1:{server.port}/"):
        assert closed.wait(wait(5))
    assert answers == [True, True, True, ["t", "u"], True, True, False, False,
                       "ValueError", "TypeError", ("in close", [], False, False)]


def test_chat_join_and_leave_in_order(make_server: Any) -> None:
    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response | None:
        if server.upgrade(req, data={"username": req.query.get("name", "Anonymous")}):
            return None
        return syncws.Response("Expected WebSocket", status=400)

    server: syncws.Server[Any]

    def on_open(ws: Any) -> None:
        ws.subscribe("chat")
        server.publish("chat", f"{ws.data['username']} joined")

    def on_message(ws: Any, msg: Any) -> None:
        server.publish("chat", f"{ws.data['username']}: {msg}")

    def on_close(ws: Any, code: int, reason: str) -> None:
        server.publish("chat", f"{ws.data['username']} left")

    server = make_server(fetch, {"open": on_open, "message": on_message, "close": on_close})
    with connect(f"ws://127.0.0.1:{server.port}/?name=ada") as ada:
        assert ada.recv(timeout=wait(5)) == "ada joined"
        with connect(f"ws://127.0.0.1:{server.port}/?name=bob") as bob:
            assert ada.recv(timeout=wait(5)) == "bob joined"
            assert bob.recv(timeout=wait(5)) == "bob joined"
            bob.send("hi")
            assert ada.recv(timeout=wait(5)) == "bob: hi"
            assert bob.recv(timeout=wait(5)) == "bob: hi"
        assert ada.recv(timeout=wait(5)) == "bob left"


def test_500_subscribers_get_2000_messages_in_order(make_server: Any) -> None:
    room = Room(make_server)
    clients = []
    try:
        for _ in range(500):
            clients.append(RawClient(room.server.port))
        wait_for(lambda: len(room.sockets) == 500, timeout=20, message="500 subscribed")
        for i in range(2000):
            assert room.server.publish("chat-room", f"{i:04d}") == 4
        for client in clients:
            for i in range(2000):
                assert client.recv_frame() == (0x1, True, 0, f"{i:04d}".encode())
    finally:
        for client in clients:
            client.close()


def test_a_subscriber_that_never_reads_does_not_hold_up_others(make_server: Any) -> None:
    limit = 512 * 1024
    room = Room(make_server, backpressure_limit=limit)
    stalled = RawClient(room.server.port, rcvbuf=4096)
    wait_for(lambda: len(room.sockets) == 1, message="stalled subscribed")
    reader = RawClient(room.server.port)
    wait_for(lambda: len(room.sockets) == 2, message="both subscribed")
    stalled_ws = room.sockets[0]
    count, message = 2000, "x" * 8000
    results = []
    got: list[bytes] = []

    def read_all() -> None:
        for _ in range(count):
            got.append(reader.recv_frame()[3])

    thread = threading.Thread(target=read_all)
    thread.start()
    peak = 0
    for i in range(count):
        # Pace the publisher by the healthy reader only.
        wait_for(lambda i=i: len(got) >= i - 20, message="reader keeps up")
        results.append(room.server.publish("chat-room", f"{i:04d}" + message))
        peak = max(peak, stalled_ws.buffered_amount)
    thread.join(wait(20))
    assert got == [(f"{i:04d}" + message).encode() for i in range(count)]
    assert results[0] == 8004 and results[-1] == 0
    assert peak <= limit + 8004 + 4
    stalled.close()
    reader.close()


def test_publish_return_values(make_server: Any) -> None:
    server = make_server(websocket={"message": lambda ws, m: None})
    assert server.publish("nobody", "x") == 0
    with pytest.raises(ValueError):
        server.publish("", "x")
    with pytest.raises(TypeError):
        server.publish("t", 5)
    with pytest.raises(TypeError):
        server.publish("t", "x", compress=1)


def test_sixteen_threads_churn_without_deadlock(make_server: Any) -> None:
    sockets: list[Any] = []
    server = make_server(websocket={"open": sockets.append, "message": lambda ws, m: None})
    clients = [RawClient(server.port, rcvbuf=1 << 20) for _ in range(8)]
    wait_for(lambda: len(sockets) == 8, message="8 open")
    errors: list[BaseException] = []
    stop = threading.Event()
    topics = [f"t{i}" for i in range(4)]

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                ws = rng.choice(sockets)
                topic = rng.choice(topics)
                action = rng.random()
                if action < 0.4:
                    ws.subscribe(topic)
                elif action < 0.7:
                    ws.unsubscribe(topic)
                elif action < 0.85:
                    ws.publish(topic, "m")
                else:
                    server.publish(topic, b"m")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    stop.wait(2)
    stop.set()
    for t in threads:
        t.join(wait(10))
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    for topic in topics:
        expected = sum(1 for ws in sockets if ws.is_subscribed(topic))
        assert server.subscriber_count(topic) == expected
    for client in clients:
        client.close()


def test_publish_returns_0_when_dropped_for_one_even_if_another_is_backpressured(
        make_server: Any) -> None:
    """API.md: 0 when dropped for at least one receiver, whatever the others said."""
    sockets: list[Any] = []
    server = make_server(websocket={"open": sockets.append, "message": lambda ws, m: None,
                                    "backpressure_limit": 1000})
    first, second = RawClient(server.port, rcvbuf=4096), RawClient(server.port, rcvbuf=4096)
    wait_for(lambda: len(sockets) == 2, message="both open")
    stalled, filling = sockets
    assert stalled.subscribe("t") and filling.subscribe("t")
    blocked, release = threading.Event(), threading.Event()
    # Hold the loop thread so nothing is written out while the buffers are set up.
    server._loop.call_soon_threadsafe(lambda: (blocked.set(), release.wait(wait(5))))
    try:
        assert blocked.wait(wait(5))
        assert stalled.send(b"x" * 1001) == -1   # now over its limit: the next copy drops
        assert filling.send(b"x" * 500) == 500   # under its limit: the next copy crosses it
        assert server.publish("t", b"y" * 600) == 0
    finally:
        release.set()
        first.close()
        second.close()


def test_publishing_to_topics_nobody_follows_keeps_nothing() -> None:
    from syncws._pubsub import TopicRegistry

    registry: TopicRegistry[str] = TopicRegistry()
    registry.subscribe("alice", "room")
    for i in range(1000):
        assert registry.subscribers(f"user:{i}") == ()  # offline users' notifications
    assert registry.subscribers("room") == ("alice",)
    registry.unsubscribe("alice", "room")
    assert registry.subscribers("room") == ()
    # Nothing is remembered of topics without subscribers (the snapshot cache included).
    assert registry.topic_count() == 0 and not registry._snapshots


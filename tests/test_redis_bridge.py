"""Pub/sub across processes through a real redis-server (issue 10).

The fixtures start ``redis-server`` themselves on a free port of 127.0.0.1.
When redis-server or the redis package is missing these tests skip, except
in CI (``CI=true``), where they fail: CI must run them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait, wait_for

import syncws
from syncws._pubsub import TopicRegistry
from syncws.redis_bridge import MAX_BATCH_BYTES, encode_message

NODE = Path(__file__).resolve().parent / "_bridge_node.py"
IN_CI = os.environ.get("CI") == "true"


def _missing(what: str) -> None:
    message = f"{what} is missing: apt-get install redis-server; pip install 'syncws[redis]'"
    if IN_CI:
        pytest.fail(message + " (CI runs these tests, never skips them)")
    pytest.skip(message)


def _redis_module() -> Any:
    try:
        import redis
    except ImportError:
        _missing("the redis package")
    return redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server child process on 127.0.0.1, startable again on the same port."""

    def __init__(self) -> None:
        self.redis = _redis_module()
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            _missing("redis-server")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        for _ in range(5):  # Another process may grab the free port first.
            self.port = _free_port()
            if self.start(raise_on_failure=False):
                break
        else:
            raise RuntimeError("could not start redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        return self.redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=wait(5))

    def start(self, raise_on_failure: bool = True) -> bool:
        assert self.binary is not None
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + wait(10)
        client = self.client()
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if client.ping():
                        return True
                except self.redis.exceptions.ConnectionError:
                    threading.Event().wait(0.02)
        finally:
            client.close()
        self.stop()
        if raise_on_failure:
            raise RuntimeError(f"redis-server did not answer PING on port {self.port}")
        return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(wait(10))
            self.proc = None

    def numsub(self, channel: str) -> int:
        client = self.client()
        try:
            return int(client.pubsub_numsub(channel)[0][1])
        finally:
            client.close()

    def wait_subscribed(self, topic: str, count: int) -> None:
        """Wait until ``count`` bridges are subscribed to ``topic`` on Redis."""
        channel = "syncws:" + topic
        wait_for(lambda: self.numsub(channel) == count, 10,
                 f"{count} Redis subscribers on {channel}")


class Node:
    """One server process (tests/_bridge_node.py)."""

    def __init__(self, redis_url: str | None, port: int = 0, reuse_port: bool = False) -> None:
        command = [sys.executable, str(NODE), "--redis", redis_url or "none",
                   "--port", str(port)]
        if reuse_port:
            command.append("--reuse-port")
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(wait(15)):
                self.close()
                raise AssertionError("the server process did not start")
        line = self.proc.stdout.readline().split()
        assert line[:1] == ["PORT"], line
        self.port = int(line[1])
        self.pid = int(line[3])

    def connect(self, sub: str = "", pub: str = "") -> syncws.ClientWebSocket:
        client = syncws.connect(f"ws://127.0.0.1:{self.port}/?sub={sub}&pub={pub}",
                                timeout=wait(10))
        assert client.recv(timeout=wait(10)) == "ready"
        return client

    def get(self, path: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=wait(10))
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.get("/stats"))
        return result

    def close(self) -> None:
        self.proc.terminate()
        try:
            assert self.proc.wait(wait(15)) == 0
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pair(redis_server: RedisServer) -> Iterator[tuple[Node, Node]]:
    """Two bridged server processes, A and B."""
    a = Node(redis_server.url)
    try:
        b = Node(redis_server.url)
    except BaseException:
        a.close()
        raise
    yield a, b
    a.close()
    b.close()


def recv_all(client: syncws.ClientWebSocket, n: int) -> list[str | bytes]:
    return [client.recv(timeout=wait(10)) for _ in range(n)]


def close_all(*clients: syncws.ClientWebSocket) -> None:
    for client in clients:
        client.close()


# -- two processes --------------------------------------------------------------


def test_publish_reaches_every_process_exactly_once(redis_server: RedisServer,
                                                    pair: tuple[Node, Node]) -> None:
    a, b = pair
    sub_a, sub_b = a.connect(sub="once"), b.connect(sub="once")
    # The publisher is subscribed too: ws.publish skips it here and in B.
    pub_a = a.connect(sub="once", pub="once")
    redis_server.wait_subscribed("once", 2)
    before_a, before_b = a.stats()["stats"], b.stats()["stats"]

    pub_a.send("hello")
    pub_a.send(b"\x00\xffbinary")
    pub_a.send("end of A")
    expected: list[str | bytes] = ["hello", b"\x00\xffbinary", "end of A"]
    got_b = recv_all(sub_b, 3)
    assert got_b == expected
    assert [type(m) for m in got_b] == [str, bytes, str]
    assert recv_all(sub_a, 3) == expected

    # A fence from B through Redis: Redis orders it after A's messages, so a
    # duplicate of those (an echo of A's own) would arrive at A before it.
    pub_b = b.connect(pub="once")
    pub_b.send("fence from B")
    assert sub_a.recv(timeout=wait(10)) == "fence from B"
    assert pub_a.recv(timeout=wait(10)) == "fence from B"  # never its own messages
    assert sub_b.recv(timeout=wait(10)) == "fence from B"

    after_a, after_b = a.stats()["stats"], b.stats()["stats"]
    assert after_a["bridge_received"] - before_a["bridge_received"] == 1
    assert after_b["bridge_received"] - before_b["bridge_received"] == 3
    assert after_a["bridge_published"] - before_a["bridge_published"] == 3
    assert after_a["bridge_dropped"] == after_b["bridge_dropped"] == 0
    close_all(sub_a, sub_b, pub_a, pub_b)


def test_thousand_messages_keep_their_order(redis_server: RedisServer,
                                            pair: tuple[Node, Node]) -> None:
    a, b = pair
    sub_a, sub_b = a.connect(sub="order"), b.connect(sub="order")
    pub_a, pub_b = a.connect(pub="order"), b.connect(pub="order")
    redis_server.wait_subscribed("order", 2)
    count = 1000
    # Two publishers at once, one in each process: each one's order is kept.
    senders = [threading.Thread(target=lambda c=c, tag=tag: [  # type: ignore[misc]
        c.send(f"{tag}{i}") if i % 2 else c.send(f"{tag}{i}".encode())
        for i in range(count)]) for c, tag in ((pub_a, "a"), (pub_b, "b"))]
    for sender in senders:
        sender.start()
    for client in (sub_a, sub_b):
        got = recv_all(client, 2 * count)
        for tag in "ab":
            mine = [m if isinstance(m, str) else m.decode() for m in got
                    if (m if isinstance(m, str) else m.decode()).startswith(tag)]
            assert mine == [f"{tag}{i}" for i in range(count)]
            typed = [type(m) for m in got
                     if (m if isinstance(m, str) else m.decode()).startswith(tag)]
            assert typed == [bytes if i % 2 == 0 else str for i in range(count)]
    for sender in senders:
        sender.join(wait(10))
    close_all(sub_a, sub_b, pub_a, pub_b)


def test_redis_publisher_from_a_plain_script(redis_server: RedisServer,
                                             pair: tuple[Node, Node]) -> None:
    a, b = pair
    sub_a, sub_b = a.connect(sub="news"), b.connect(sub="news")
    redis_server.wait_subscribed("news", 2)
    script = (
        "import sys, syncws\n"
        "with syncws.RedisPublisher(sys.argv[1]) as news:\n"
        "    print(news.publish('news', 'the build is green'))\n"
        "    print(news.publish('news', b'\\x01\\x02'))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, redis_server.url],
                            capture_output=True, text=True, timeout=wait(30), check=True)
    assert result.stdout.split() == ["2", "2"]  # two bridged processes heard it
    for client in (sub_a, sub_b):
        assert recv_all(client, 2) == ["the build is green", b"\x01\x02"]
    close_all(sub_a, sub_b)


def _flood(port: int, channel: str, stop: threading.Event) -> None:
    """PUBLISH small messages in syncws' format as fast as Redis takes them (raw RESP)."""
    data = encode_message(os.urandom(8), 1, b"flood", False)
    command = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel), channel.encode(), len(data), data)
    burst = command * 1000
    with socket.create_connection(("127.0.0.1", port), timeout=wait(10)) as sock:
        sock.setblocking(False)
        while not stop.is_set():
            with contextlib.suppress(BlockingIOError):
                sock.send(burst)
            with contextlib.suppress(BlockingIOError):
                while sock.recv(1 << 20):  # the replies: read and forget
                    pass
            stop.wait(0.001)


def test_a_busy_topic_does_not_hold_up_new_subscriptions(redis_server: RedisServer,
                                                         pair: tuple[Node, Node]) -> None:
    a, _ = pair
    busy = a.connect(sub="busy")
    redis_server.wait_subscribed("busy", 1)
    stop = threading.Event()
    flooder = threading.Thread(target=_flood, args=(redis_server.port, "syncws:busy", stop))
    flooder.start()
    try:
        busy.recv(timeout=wait(10))  # the flood is arriving
        quiet = a.connect(sub="quiet")
        # While the flood lasts: the subscriber thread syncs between messages too.
        wait_for(lambda: redis_server.numsub("syncws:quiet") == 1, 3,
                 "the new topic subscribed on Redis during the flood")
        assert flooder.is_alive()
        quiet.close()
    finally:
        stop.set()
        flooder.join(wait(10))
        busy.close()


def test_pending_messages_are_bounded_in_bytes_too(make_server: Any) -> None:
    _redis_module()
    bridge = syncws.RedisBridge(f"redis://127.0.0.1:{_free_port()}/0",
                                max_pending_bytes=250_000)
    server = make_server(websocket=_echo_publisher(), bridge=bridge)
    for _ in range(20):  # 2 MB for a Redis that is not there
        server.publish("t", bytes(100_000))
    stats = server.stats()
    assert stats["bridge_pending_bytes"] <= 250_000 and stats["bridge_pending"] <= 2
    assert stats["bridge_dropped"] >= 18
    server.stop(close_active_connections=True, timeout=wait(5))


def test_one_round_trip_carries_at_most_max_batch_bytes() -> None:
    _redis_module()
    bridge = syncws.RedisBridge(f"redis://127.0.0.1:{_free_port()}/0")
    for _ in range(10):
        bridge._publish("t", 2, bytes(1_000_000), False)
    with bridge._lock:
        sizes = [len(data) for _, data in bridge._take_batch()]
    # Not all ten (10 MB): Redis cuts off a subscriber that falls 32 MB behind.
    assert len(sizes) == 4 and sum(sizes) <= MAX_BATCH_BYTES
    assert bridge._stats()["bridge_pending_bytes"] == 6 * sizes[0]


def test_a_password_in_the_url_stays_out_of_logs_and_reprs(
        caplog: pytest.LogCaptureFixture) -> None:
    _redis_module()
    url = f"redis://:S3cret@127.0.0.1:{_free_port()}/0"
    bridge, publisher = syncws.RedisBridge(url), syncws.RedisPublisher(url)
    assert "S3cret" not in repr(bridge) and ":***@" in repr(bridge)
    assert "S3cret" not in repr(publisher)
    publisher.close()
    in_query = syncws.RedisBridge(f"redis://127.0.0.1:{_free_port()}/0?password=S3cret")
    assert "S3cret" not in repr(in_query) and "password=***" in repr(in_query)
    with pytest.raises(ValueError, match="scheme") as info:
        syncws.RedisBridge("http://:S3cret@127.0.0.1/0")  # never works: said at once
    assert "S3cret" not in str(info.value)
    server = syncws.serve(websocket=_echo_publisher(), bridge=bridge, port=0,
                          hostname="127.0.0.1")
    try:
        wait_for(lambda: server.stats()["bridge_errors"] >= 1, 10, "a logged Redis error")
    finally:
        server.stop(close_active_connections=True, timeout=wait(5))
    assert caplog.records and "S3cret" not in caplog.text


def test_only_topics_with_local_subscribers_are_subscribed(redis_server: RedisServer,
                                                           pair: tuple[Node, Node]) -> None:
    a, _ = pair
    first, second = a.connect(sub="lazy"), a.connect(sub="lazy")
    redis_server.wait_subscribed("lazy", 1)
    first.close()
    # Still one local subscriber: still subscribed; checked after the close took effect.
    wait_for(lambda: a.stats()["stats"]["open_websockets"] == 1, 10, "the close")
    assert redis_server.numsub("syncws:lazy") == 1
    second.close()
    redis_server.wait_subscribed("lazy", 0)


# -- Redis down and back -------------------------------------------------------------


def test_redis_outage_and_restart() -> None:
    redis_server = RedisServer()
    a = b = None
    clients: list[syncws.ClientWebSocket] = []
    try:
        a, b = Node(redis_server.url), Node(redis_server.url)
        sub_a, sub_b = a.connect(sub="up"), b.connect(sub="up")
        pub_a, pub_b = a.connect(pub="up"), b.connect(pub="up")
        clients += [sub_a, sub_b, pub_a, pub_b]
        redis_server.wait_subscribed("up", 2)
        pub_a.send("before")
        assert sub_b.recv(timeout=wait(10)) == "before"
        assert sub_a.recv(timeout=wait(10)) == "before"

        redis_server.stop()
        # Two seconds without Redis: local delivery goes on, promptly.
        outage_ends = time.monotonic() + 2.0
        sent = 0
        while time.monotonic() < outage_ends:
            pub_a.send(f"during {sent}")
            assert sub_a.recv(timeout=wait(2)) == f"during {sent}"
            sent += 1
        assert sent >= 10
        redis_server.start()

        # Both bridges reconnect and resubscribe; messages flow both ways again.
        redis_server.wait_subscribed("up", 2)
        for source, target, word in ((pub_a, sub_b, "after A"), (pub_b, sub_a, "after B")):
            source.send(word)
            deadline = time.monotonic() + wait(15)
            while True:  # Queued "during" messages may arrive first (or were lost).
                got = target.recv(timeout=max(0.01, deadline - time.monotonic()))
                if got == word:
                    break
                assert got == "after A" or str(got).startswith("during "), got

        for node in (a, b):
            info = node.stats()
            names = info["threads"]
            assert any(n.startswith("syncws-redis-pub") for n in names), names
            assert any(n.startswith("syncws-redis-sub") for n in names), names
            assert info["stats"]["bridge_errors"] >= 1  # the outage was noticed
    finally:
        close_all(*clients)
        for node in (a, b):
            if node is not None:
                node.close()
        redis_server.stop()


# -- reuse_port ----------------------------------------------------------------------


def test_reuse_port_two_processes_share_one_port() -> None:
    port = _free_port()
    first = Node(None, port=port, reuse_port=True)
    try:
        second = Node(None, port=port, reuse_port=True)
    except BaseException:
        first.close()
        raise
    try:
        assert first.port == second.port == port
        seen: set[int] = set()
        for _ in range(500):  # The kernel hashes each new connection to one of them.
            seen.add(int(first.get("/pid")))
            if len(seen) == 2:
                break
        assert seen == {first.pid, second.pid}
    finally:
        first.close()
        second.close()


# -- in one process ------------------------------------------------------------------


def test_registry_reports_first_and_last_subscriber() -> None:
    events: list[tuple[str, bool]] = []
    registry: TopicRegistry[str] = TopicRegistry(lambda t, active: events.append((t, active)))
    registry.subscribe("x", "t")
    registry.subscribe("x", "t")
    registry.subscribe("y", "t")
    registry.subscribe("y", "u")
    assert events == [("t", True), ("u", True)]
    assert registry.unsubscribe("x", "t")
    assert not registry.unsubscribe("x", "t")
    assert events == [("t", True), ("u", True)]
    registry.unsubscribe_all("y")
    assert events == [("t", True), ("u", True), ("t", False), ("u", False)]


def test_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r"pip install 'syncws\[redis\]'"):
        syncws.RedisBridge()
    with pytest.raises(ImportError, match=r"pip install 'syncws\[redis\]'"):
        syncws.RedisPublisher()


def _echo_publisher() -> dict[str, Any]:
    return {"open": lambda ws: ws.subscribe("t"),
            "message": lambda ws, msg: ws.publish("t", msg)}


def test_redis_unreachable_bounds_the_queue_and_never_blocks(make_server: Any) -> None:
    _redis_module()
    bridge = syncws.RedisBridge(f"redis://127.0.0.1:{_free_port()}/0", max_pending=5)
    server = make_server(websocket=_echo_publisher(), bridge=bridge)
    with syncws.connect(f"ws://127.0.0.1:{server.port}/") as listener:
        wait_for(lambda: server.subscriber_count("t") == 1, 5, "the subscription")
        started = time.monotonic()
        results = [server.publish("t", f"m{i}") for i in range(20)]
        elapsed = time.monotonic() - started
        assert results == [len(f"m{i}") for i in range(20)]  # local delivery's result
        assert [listener.recv(timeout=wait(5)) for _ in range(20)] == \
            [f"m{i}" for i in range(20)]
    assert elapsed < wait(1.0)  # twenty appends to a queue, never a Redis round trip
    wait_for(lambda: server.stats()["bridge_errors"] >= 1, 10, "a counted Redis error")
    stats = server.stats()
    assert stats["bridge_pending"] <= 5
    assert stats["bridge_dropped"] >= 15
    assert stats["bridge_published"] == 0
    server.stop(close_active_connections=True, timeout=wait(5))
    wait_for(lambda: not bridge.running, 5, "the bridge's threads to end")


def test_in_process_bridges_and_stop(redis_server: RedisServer, make_server: Any) -> None:
    first, second = syncws.RedisBridge(redis_server.url), syncws.RedisBridge(redis_server.url)
    a = make_server(websocket=_echo_publisher(), bridge=first)
    b = make_server(websocket=_echo_publisher(), bridge=second)
    with pytest.raises(ValueError, match="one bridge per server"):
        make_server(websocket=_echo_publisher(), bridge=first)
    with syncws.connect(f"ws://127.0.0.1:{a.port}/") as on_a, \
            syncws.connect(f"ws://127.0.0.1:{b.port}/") as on_b:
        redis_server.wait_subscribed("t", 2)
        assert b.publish("t", "from B's server", compress=True) == len("from B's server")
        assert on_a.recv(timeout=wait(10)) == "from B's server"
        assert on_b.recv(timeout=wait(10)) == "from B's server"
        # Garbage on the channel is counted and ignored; the bridge lives on.
        client = redis_server.client()
        client.publish("syncws:t", b"not ours")
        client.close()
        wait_for(lambda: a.stats()["bridge_errors"] >= 1, 10, "the counted bad message")
        on_b.send("still there")
        assert on_a.recv(timeout=wait(10)) == "still there"
    a.stop(close_active_connections=True, timeout=wait(5))
    wait_for(lambda: not first.running, 5, "the bridge's threads to end")
    assert not any(t.name.startswith("syncws-redis-") and first.origin.hex()[:6] in t.name
                   for t in threading.enumerate())


# -- examples/cluster.py ---------------------------------------------------------------


def test_cluster_example(redis_server: RedisServer) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "cluster.py"
    proc = subprocess.Popen([sys.executable, str(example), "--processes", "2", "--port", "0",
                             "--redis", redis_server.url], stdout=subprocess.PIPE, text=True)
    clients: list[syncws.ClientWebSocket] = []
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            assert selector.select(wait(20)), "cluster.py did not start"
        line = proc.stdout.readline()
        assert line.startswith("Listening on ws://127.0.0.1:"), line
        url = line.split()[2]
        # Connect until two clients sit in different processes (bounded).
        by_process: dict[str, syncws.ClientWebSocket] = {}
        for i in range(100):
            client = syncws.connect(f"{url}/?name=user{i}", timeout=wait(10))
            clients.append(client)
            joined = client.recv(timeout=wait(10))
            while not str(joined).startswith(f"user{i} joined (process "):
                # An earlier user's join, from the other process through Redis.
                assert "joined" in str(joined), joined
                joined = client.recv(timeout=wait(10))
            by_process.setdefault(joined.split()[-1], client)
            if len(by_process) == 2:
                break
        assert len(by_process) == 2
        first, second = by_process.values()
        redis_server.wait_subscribed("chat", 2)
        first.send("hello other process")
        deadline = time.monotonic() + wait(10)
        while (got := second.recv(timeout=max(0.01, deadline - time.monotonic()))) \
                != f"user{clients.index(first)}: hello other process":
            assert "joined" in str(got), got
    finally:
        close_all(*clients)
        proc.terminate()
        assert proc.wait(wait(20)) == 0
        if proc.stdout is not None:
            proc.stdout.close()

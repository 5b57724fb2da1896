"""Pub/sub across processes and machines through Redis: ``RedisBridge``, ``RedisPublisher``.

In-process pub/sub needs no broker. When one process is not enough (several
processes on one port with ``reuse_port=True``, several machines behind a
load balancer), give every server a bridge::

    server = syncws.serve(fetch, websocket, reuse_port=True,
                          bridge=syncws.RedisBridge("redis://127.0.0.1:6379/0"))

Semantics:

- ``server.publish`` and ``ws.publish`` deliver to this process's
  subscribers at once (and return what that local delivery returned, as
  API.md says), then hand the message to the bridge, which publishes it on
  the Redis channel ``channel_prefix + topic``. Every other bridged process
  that has subscribers for the topic delivers it to them. A process skips
  its own messages, so nobody gets one twice; ``ws.publish`` skips only the
  sender, so the sender's own process may still reach its other sockets and
  every other process reaches all of its sockets.
- At most once across processes; the order of one publisher (one thread
  calling publish) is kept. Text stays text, binary stays binary, and the
  ``compress`` flag travels with the message.
- A bridge subscribes on Redis only to the topics that have local
  subscribers, and unsubscribes when the last one leaves.
  ``server.subscriber_count(topic)`` stays this process's count.
- Redis I/O runs on the bridge's own two threads (``syncws-redis-pub``,
  ``syncws-redis-sub``); ``publish`` only appends to a bounded queue and never
  blocks the loop or a handler. When Redis is down or restarts, local
  delivery goes on, the bridge logs a warning, reconnects with backoff and
  resubscribes; messages waiting for Redis are bounded by ``max_pending``
  (the oldest is dropped and counted). Messages published on Redis while a
  bridge is disconnected do not reach that bridge.
- ``server.stats()`` gains ``bridge_published``, ``bridge_received``,
  ``bridge_dropped``, ``bridge_errors`` and ``bridge_pending``.

Wire format, one Redis message per publish: a 10-byte header (version 1,
flags: bit 0 binary, bit 1 compress; then the publisher's random 8-byte
origin id) followed by the payload bytes (UTF-8 for text).

The ``redis`` package is an optional dependency: ``pip install 'syncws[redis]'``.
It is imported when a bridge or publisher is created, not with syncws.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._frames import OP_BINARY, OP_TEXT, message_payload
from ._pubsub import check_topic

__all__ = ["RedisBridge", "RedisPublisher"]

logger = logging.getLogger("syncws")

VERSION = 1
FLAG_BINARY = 0x01
FLAG_COMPRESS = 0x02
HEADER_SIZE = 10
DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "syncws:"

# How often the subscriber thread applies subscription changes and checks
# for stop while no message arrives (messages themselves wake it at once).
SUBSCRIBER_POLL = 0.05
# Reconnect backoff: doubles from the first value up to the second, with jitter.
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
# At most this many messages, and about this many bytes, go to Redis in one
# pipelined round trip: Redis cuts off a subscriber that falls 32 MB behind
# (client-output-buffer-limit pubsub), and a huge batch is how one does.
MAX_BATCH = 512
MAX_BATCH_BYTES = 4 * 1024 * 1024
# A publisher connection idle for longer is pinged before it is used again.
IDLE_CHECK = 1.0

# (topic, opcode, payload, compress): what a bridge hands to its server.
Deliver = Callable[[str, int, bytes, bool], int]


def _import_redis() -> ModuleType:
    try:
        import redis
    except ImportError as exc:
        raise ImportError(
            "syncws's Redis bridge needs the redis package: pip install 'syncws[redis]'"
        ) from exc
    return redis


def redacted(url: str) -> str:
    """``url`` with its password hidden (``:pw@`` or ``?password=``), for logs and reprs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<a Redis URL>"
    if password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if "password" in parts.query.lower():
        query = [(name, "***" if name.lower() == "password" else value)
                 for name, value in parse_qsl(parts.query, keep_blank_values=True)]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)


def check_url(redis: ModuleType, url: object) -> str:
    """``url`` if redis-py can connect with it, else ``TypeError``/``ValueError`` now."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    try:
        redis.connection.parse_url(url)
    except ValueError as exc:
        raise ValueError(f"url {redacted(url)!r}: {exc}") from None
    return url


def _client(redis: ModuleType, url: str, **options: Any) -> Any:
    """A client that never retries on its own: the bridge decides (at most once)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options.setdefault("socket_connect_timeout", 2.0)
    options.setdefault("socket_timeout", 10.0)
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)


def _check_prefix(channel_prefix: object) -> str:
    if not isinstance(channel_prefix, str):
        raise TypeError(f"channel_prefix must be a str, not {type(channel_prefix).__name__}")
    return channel_prefix


def encode_message(origin: bytes, opcode: int, payload: bytes, compress: bool) -> bytes:
    """The bytes published on Redis for one message (header + payload)."""
    flags = (FLAG_BINARY if opcode == OP_BINARY else 0) | (FLAG_COMPRESS if compress else 0)
    return bytes((VERSION, flags)) + origin + payload


def decode_message(data: bytes) -> tuple[bytes, int, bytes, bool] | None:
    """``(origin, opcode, payload, compress)``, or None for a message not in our format."""
    if len(data) < HEADER_SIZE or data[0] != VERSION:
        return None
    flags = data[1]
    opcode = OP_BINARY if flags & FLAG_BINARY else OP_TEXT
    return data[2:HEADER_SIZE], opcode, data[HEADER_SIZE:], bool(flags & FLAG_COMPRESS)


class _Backoff:
    """Exponential backoff with jitter, reset after a success."""

    def __init__(self) -> None:
        self.delay = BACKOFF_MIN

    def next(self) -> float:
        delay = self.delay
        self.delay = min(BACKOFF_MAX, self.delay * 2)
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.delay = BACKOFF_MIN


class RedisBridge:
    """Carries a server's publishes to other processes through Redis pub/sub, and back.

    Pass it to ``syncws.serve(..., bridge=RedisBridge(url))``; one bridge
    serves one server. Creating it does no I/O (it only checks that the
    ``redis`` package is installed, ``ImportError`` otherwise); the server
    starts its threads and stops them when it is done. Redis failures are
    logged and counted, never raised to the application. The methods are
    thread-safe and never block on Redis.

    ``url`` is a redis-py URL (``redis://``, ``rediss://``, ``unix://``);
    ``channel_prefix + topic`` names the Redis channel of a topic, so
    unrelated applications sharing one Redis should use different
    prefixes; ``max_pending`` and ``max_pending_bytes`` bound the messages
    waiting for Redis (past either, the oldest are dropped and counted).
    """

    def __init__(self, url: str = DEFAULT_URL, *, channel_prefix: str = DEFAULT_PREFIX,
                 max_pending: int = 10_000, max_pending_bytes: int = 64 * 1024 * 1024) -> None:
        for name, value in (("max_pending", max_pending),
                            ("max_pending_bytes", max_pending_bytes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        self._redis = _import_redis()
        self.url = check_url(self._redis, url)
        self._shown_url = redacted(url)
        self.channel_prefix = _check_prefix(channel_prefix)
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        #: This bridge's random id, carried by its messages so it can skip them.
        self.origin = os.urandom(8)
        self._prefix_bytes = self.channel_prefix.encode("utf-8")
        self._deliver: Deliver | None = None
        self._topic_active: Callable[[str], bool] | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        # Guards _queue, _dirty, _counters and _started.
        self._lock = threading.Lock()
        self._queue_ready = threading.Condition(self._lock)
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._queue_bytes = 0
        self._dirty: set[str] = set()
        self._started = False
        self._counters = {"bridge_published": 0, "bridge_received": 0,
                          "bridge_dropped": 0, "bridge_errors": 0}

    def __repr__(self) -> str:
        return f"<syncws.RedisBridge {self._shown_url} prefix={self.channel_prefix!r}>"

    # -- called by the server ----------------------------------------------------

    def _check_unused(self) -> None:
        if self._started:
            raise ValueError("this RedisBridge is already used by a server; "
                             "create one bridge per server")

    def _start(self, deliver: Deliver, topic_active: Callable[[str], bool]) -> None:
        """Start the Redis threads; ``deliver`` takes messages from other processes."""
        with self._lock:
            if self._started:
                raise ValueError("this RedisBridge is already used by a server; "
                                 "create one bridge per server")
            self._started = True
        self._deliver = deliver
        self._topic_active = topic_active
        suffix = self.origin.hex()[:6]
        self._threads = [
            threading.Thread(target=self._publisher_main, name=f"syncws-redis-pub-{suffix}",
                             daemon=True),
            threading.Thread(target=self._subscriber_main, name=f"syncws-redis-sub-{suffix}",
                             daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _publish(self, topic: str, opcode: int, payload: bytes, compress: bool) -> None:
        """Queue one message for Redis; never blocks (the oldest is dropped when full)."""
        data = encode_message(self.origin, opcode, payload, compress)
        with self._lock:
            if self._stop.is_set():
                self._counters["bridge_dropped"] += 1
                return
            queue = self._queue
            # Both bounds: many small messages, or a few big ones.
            while queue and (len(queue) >= self.max_pending or
                             self._queue_bytes + len(data) > self.max_pending_bytes):
                self._queue_bytes -= len(queue.popleft()[1])
                self._counters["bridge_dropped"] += 1
            queue.append((self.channel_prefix + topic, data))
            self._queue_bytes += len(data)
            if len(queue) == 1:
                self._queue_ready.notify()

    def _topic_changed(self, topic: str, active: bool) -> None:
        """The registry's hint that ``topic`` gained or lost its local subscribers."""
        with self._lock:
            self._dirty.add(topic)

    def _stats(self) -> dict[str, int]:
        with self._lock:
            snapshot = dict(self._counters)
            snapshot["bridge_pending"] = len(self._queue)
            snapshot["bridge_pending_bytes"] = self._queue_bytes
        return snapshot

    def _signal_stop(self) -> None:
        """Ask the threads to end: what is queued is still flushed if Redis is up."""
        with self._lock:
            self._stop.set()
            self._queue_ready.notify_all()

    def _join(self, timeout: float) -> None:
        """Wait (bounded) for the threads to end once they were told to stop."""
        if not self._stop.is_set():
            return
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def running(self) -> bool:
        """Whether the bridge's threads are alive."""
        return any(thread.is_alive() for thread in self._threads)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    # -- publisher thread ------------------------------------------------------------

    def _publisher_main(self) -> None:
        backoff = _Backoff()
        client: Any = None
        failing = False
        last_used = 0.0
        while True:
            try:
                if client is None:
                    if self._stop.is_set():
                        break
                    client = _client(self._redis, self.url)
                    client.ping()
                    if failing:
                        logger.warning("syncws: Redis bridge publisher reconnected to %s",
                                       self._shown_url)
                    failing = False
                    backoff.reset()
                    last_used = time.monotonic()
                with self._lock:
                    while not self._queue and not self._stop.is_set():
                        self._queue_ready.wait()
                    if not self._queue:
                        break
                    batch = self._take_batch()
                if time.monotonic() - last_used > IDLE_CHECK:
                    # An idle connection may have died with a Redis restart:
                    # find out before sending, so nothing is lost to it.
                    try:
                        client.ping()
                    except Exception:
                        self._requeue(batch)
                        raise
                try:
                    if len(batch) == 1:
                        client.publish(*batch[0])
                    else:
                        pipe = client.pipeline(transaction=False)
                        for channel, data in batch:
                            pipe.publish(channel, data)
                        pipe.execute()
                except Exception:
                    # Perhaps sent, perhaps not: never resent (at most once).
                    self._count("bridge_dropped", len(batch))
                    raise
                self._count("bridge_published", len(batch))
                last_used = time.monotonic()
            except Exception as exc:
                self._count("bridge_errors")
                if not failing:
                    logger.warning("syncws: Redis bridge cannot publish to %s (%s); "
                                   "retrying with backoff", self._shown_url, exc)
                failing = True
                client = self._close_client(client)
                if self._stop.wait(backoff.next()):
                    break
        self._close_client(client)
        with self._lock:
            left = len(self._queue)
            self._queue.clear()
            self._queue_bytes = 0
            self._counters["bridge_dropped"] += left

    def _take_batch(self) -> list[tuple[str, bytes]]:
        """The next messages for one round trip (lock held, queue not empty)."""
        queue = self._queue
        batch = [queue.popleft()]
        size = len(batch[0][1])
        while queue and len(batch) < MAX_BATCH and size + len(queue[0][1]) <= MAX_BATCH_BYTES:
            batch.append(queue.popleft())
            size += len(batch[-1][1])
        self._queue_bytes -= size
        return batch

    def _requeue(self, batch: list[tuple[str, bytes]]) -> None:
        """Put an unsent batch back in front, keeping the bounds (newest kept)."""
        with self._lock:
            queue = self._queue
            kept: list[tuple[str, bytes]] = []
            for item in reversed(batch):
                if (len(queue) + len(kept) >= self.max_pending or
                        self._queue_bytes + len(item[1]) > self.max_pending_bytes):
                    break
                kept.append(item)
                self._queue_bytes += len(item[1])
            self._counters["bridge_dropped"] += len(batch) - len(kept)
            queue.extendleft(kept)

    @staticmethod
    def _close_client(client: Any) -> None:
        if client is not None:
            try:
                client.close()
            except Exception:  # pragma: no cover - closing a broken client
                logger.debug("syncws: closing a Redis client failed", exc_info=True)

    # -- subscriber thread ------------------------------------------------------------

    def _subscriber_main(self) -> None:
        backoff = _Backoff()
        failing = False
        subscribed: set[str] = set()
        while not self._stop.is_set():
            client: Any = None
            pubsub: Any = None
            try:
                client = _client(self._redis, self.url, health_check_interval=5)
                client.ping()  # Redis answers: only then count it as connected.
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                if subscribed:
                    # A new connection: everything subscribed before must be again.
                    with self._lock:
                        self._dirty |= subscribed
                    subscribed = set()
                    self._sync_subscriptions(pubsub, subscribed)
                if failing:
                    logger.warning("syncws: Redis bridge subscriber reconnected to %s "
                                   "(%d topics)", self._shown_url, len(subscribed))
                failing = False
                backoff.reset()
                while not self._stop.is_set():
                    self._sync_subscriptions(pubsub, subscribed)
                    synced = time.monotonic()
                    message = pubsub.get_message(timeout=SUBSCRIBER_POLL)
                    while message is not None:
                        self._on_message(message)
                        if time.monotonic() - synced >= SUBSCRIBER_POLL:
                            # A busy topic must not keep new subscriptions waiting.
                            self._sync_subscriptions(pubsub, subscribed)
                            synced = time.monotonic()
                        message = pubsub.get_message(timeout=0.0)
            except Exception as exc:
                self._count("bridge_errors")
                if not failing:
                    logger.warning("syncws: Redis bridge lost its subscription connection "
                                   "to %s (%s); reconnecting with backoff", self._shown_url, exc)
                failing = True
                self._stop.wait(backoff.next())
            finally:
                self._close_client(pubsub)
                self._close_client(client)

    def _sync_subscriptions(self, pubsub: Any, subscribed: set[str]) -> None:
        """SUBSCRIBE / UNSUBSCRIBE the topics whose local subscribers changed."""
        with self._lock:
            if not self._dirty:
                return
            dirty, self._dirty = self._dirty, set()
        assert self._topic_active is not None
        try:
            add = [t for t in dirty if t not in subscribed and self._topic_active(t)]
            remove = [t for t in dirty if t in subscribed and not self._topic_active(t)]
            prefix = self.channel_prefix
            if add:
                pubsub.subscribe(*[prefix + t for t in add])
                subscribed.update(add)
            if remove:
                pubsub.unsubscribe(*[prefix + t for t in remove])
                subscribed.difference_update(remove)
        except BaseException:
            with self._lock:
                self._dirty |= dirty
            raise

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        channel: bytes = message["channel"]
        data: bytes = message["data"]
        decoded = decode_message(data)
        if decoded is None or not channel.startswith(self._prefix_bytes):
            self._count("bridge_errors")
            logger.warning("syncws: Redis bridge ignored a message on %r that is not in "
                           "syncws's format", channel)
            return
        origin, opcode, payload, compress = decoded
        if origin == self.origin:
            return  # Ours: delivered locally when it was published.
        try:
            topic = channel[len(self._prefix_bytes):].decode("utf-8")
            if opcode == OP_TEXT:
                payload.decode("utf-8")  # Never put invalid UTF-8 in a text frame.
        except UnicodeDecodeError:
            self._count("bridge_errors")
            logger.warning("syncws: Redis bridge ignored a message on %r with invalid UTF-8",
                           channel)
            return
        self._count("bridge_received")
        assert self._deliver is not None
        try:
            self._deliver(topic, opcode, payload, compress)
        except Exception:
            self._count("bridge_errors")
            logger.exception("syncws: Redis bridge could not deliver a message on %r", topic)


class RedisPublisher:
    """A write-only publisher for processes that are not WebSocket servers.

    A Flask or Django view, a cron job or a Celery task publishes to the
    subscribers of every bridged server::

        news = syncws.RedisPublisher("redis://127.0.0.1:6379/0")
        news.publish("chat", "The build is green")

    Unlike a bridge, ``publish`` blocks for one Redis round trip and raises
    redis-py's exceptions (``redis.exceptions.ConnectionError`` ...) when
    Redis is unreachable. Thread-safe (redis-py's connection pool).
    ``channel_prefix`` must match the servers' bridges.
    """

    def __init__(self, url: str = DEFAULT_URL, *, channel_prefix: str = DEFAULT_PREFIX) -> None:
        redis = _import_redis()
        self.url = check_url(redis, url)
        self._shown_url = redacted(url)
        self.channel_prefix = _check_prefix(channel_prefix)
        self.origin = os.urandom(8)
        self._client = redis.Redis.from_url(url, socket_connect_timeout=5.0, socket_timeout=10.0)

    def publish(self, topic: str, message: str | bytes | bytearray | memoryview,
                compress: bool = False) -> int:
        """Publish ``message`` (str: text, bytes-like: binary) on ``topic``.

        Returns how many bridged processes were subscribed to the topic (Redis's
        count, not the number of sockets). Blocks for one round trip.
        """
        check_topic(topic)
        if not isinstance(compress, bool):
            raise TypeError(f"compress must be a bool, not {type(compress).__name__}")
        opcode, payload = message_payload(message)
        data = encode_message(self.origin, opcode, payload, compress)
        return int(self._client.publish(self.channel_prefix + topic, data))

    def close(self) -> None:
        """Close the connections to Redis."""
        self._client.close()

    def __enter__(self) -> RedisPublisher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<syncws.RedisPublisher {self._shown_url} prefix={self.channel_prefix!r}>"

"""The topic registry: which connections are subscribed to which topics.

Thread-safe: one lock guards both directions of the mapping. Publishing
reads a cached snapshot tuple per topic, so a publish holds the lock only
long enough to fetch it, never while frames are queued to subscribers.

An optional ``on_topic_change(topic, active)`` callback hears when a topic
gets its first subscriber (True) or loses its last one (False), e.g. so a
cross-process bridge subscribes only to the topics that have local
subscribers. It is called outside the lock, on the thread that changed the
registry; two threads racing on one topic may report out of order, so a
listener should treat it as a hint and read ``count(topic)`` for the truth.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

S = TypeVar("S", bound=Hashable)


def check_topic(topic: object) -> str:
    """Topics are non-empty plain strings, matched literally (no wildcards, as Bun)."""
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, not {type(topic).__name__}")
    if not topic:
        raise ValueError("topic must be a non-empty string")
    return topic


class TopicRegistry(Generic[S]):
    """Topic -> subscribers and subscriber -> topics, both in subscribe order."""

    def __init__(self, on_topic_change: Callable[[str, bool], None] | None = None) -> None:
        self._on_topic_change = on_topic_change
        # Guards _topics, _by_subscriber and _snapshots.
        self._lock = threading.Lock()
        self._topics: dict[str, dict[S, None]] = {}
        self._by_subscriber: dict[S, dict[str, None]] = {}
        self._snapshots: dict[str, tuple[S, ...]] = {}

    def subscribe(self, subscriber: S, topic: str) -> None:
        """Add ``subscriber`` to ``topic`` (a no-op when it already is)."""
        with self._lock:
            members = self._topics.setdefault(topic, {})
            if subscriber in members:
                return
            members[subscriber] = None
            self._by_subscriber.setdefault(subscriber, {})[topic] = None
            self._snapshots.pop(topic, None)
            activated = len(members) == 1
        if activated and self._on_topic_change is not None:
            self._on_topic_change(topic, True)

    def unsubscribe(self, subscriber: S, topic: str) -> bool:
        """Remove ``subscriber`` from ``topic``; True if it was subscribed."""
        with self._lock:
            members = self._topics.get(topic)
            if members is None or subscriber not in members:
                return False
            deactivated = self._remove(subscriber, topic, members)
        if deactivated and self._on_topic_change is not None:
            self._on_topic_change(topic, False)
        return True

    def unsubscribe_all(self, subscriber: S) -> None:
        """Remove ``subscriber`` from every topic."""
        with self._lock:
            emptied = [topic for topic in list(self._by_subscriber.get(subscriber, ()))
                       if self._remove(subscriber, topic, self._topics[topic])]
        if self._on_topic_change is not None:
            for topic in emptied:
                self._on_topic_change(topic, False)

    def _remove(self, subscriber: S, topic: str, members: dict[S, None]) -> bool:
        """Remove one subscription; True if ``topic`` has no subscriber left."""
        assert self._lock.locked()
        del members[subscriber]
        emptied = not members
        if emptied:
            del self._topics[topic]
        self._snapshots.pop(topic, None)
        topics = self._by_subscriber[subscriber]
        del topics[topic]
        if not topics:
            del self._by_subscriber[subscriber]
        return emptied

    def is_subscribed(self, subscriber: S, topic: str) -> bool:
        """Whether ``subscriber`` is subscribed to ``topic``."""
        with self._lock:
            return topic in self._by_subscriber.get(subscriber, ())

    def topics_of(self, subscriber: S) -> list[str]:
        """The topics of ``subscriber``, in subscribe order."""
        with self._lock:
            return list(self._by_subscriber.get(subscriber, ()))

    def subscribers(self, topic: str) -> tuple[S, ...]:
        """The subscribers of ``topic`` now, as an immutable snapshot."""
        with self._lock:
            snapshot = self._snapshots.get(topic)
            if snapshot is None:
                members = self._topics.get(topic)
                if members is None:
                    # Not cached: publishes to topics nobody follows (offline
                    # users, names clients chose) must not fill memory.
                    return ()
                snapshot = self._snapshots[topic] = tuple(members)
            return snapshot

    def count(self, topic: str) -> int:
        """How many subscribers ``topic`` has."""
        with self._lock:
            return len(self._topics.get(topic, ()))

    def topic_count(self) -> int:
        """How many topics have at least one subscriber."""
        with self._lock:
            return len(self._topics)

"""Webhook events on their way to the application's backend (no I/O).

`Events` is told what happens (connections, subscriptions, presence, filters occupied and
vacated) and keeps the events the config wants in a bounded `WebhookQueue`, in order;
the node's sender (`broker.node.webhooks`) posts them in signed batches, retrying a
failing batch with `Retry`'s backoff. The shapes are a contract (docs/operations.md).
"""

import collections
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Collection
from typing import Any

SIGNATURE_HEADER = "X-Trio-Broker-Signature"


class WebhookQueue:
    """Events waiting, oldest first; beyond ``max_queued`` the oldest are dropped."""

    def __init__(self, max_queued: int) -> None:
        self.max_queued = max_queued
        self.dropped = 0  # ever
        self._events: collections.deque[dict[str, Any]] = collections.deque()
        self.on_added: Callable[[], None] | None = None  # the sender's wake-up

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        while len(self._events) > self.max_queued:
            self._events.popleft()
            self.dropped += 1
        if self.on_added is not None:
            self.on_added()

    def take(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` of the oldest events, which leave the queue."""
        events = self._events
        return [events.popleft() for _ in range(min(limit, len(events)))]


def encode_batch(events: list[dict[str, Any]], time_ms: int) -> bytes:
    return json.dumps({"time_ms": time_ms, "events": events}, separators=(",", ":")).encode()


def signature(secret: bytes, body: bytes) -> str:
    """The value of `SIGNATURE_HEADER` for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Retry:
    """The backoff of one failing batch: ``first`` seconds, doubling up to ``ceiling``,
    until ``retry_for`` seconds have passed since its first failure."""

    def __init__(self, retry_for: float, first: float = 0.1, ceiling: float = 30.0) -> None:
        self.retry_for = retry_for
        self._delay = first
        self._ceiling = ceiling
        self._given_up_at: float | None = None

    def next_delay(self, now: float) -> float | None:
        """Seconds to wait before the next try, or None: give the batch up."""
        if self._given_up_at is None:
            self._given_up_at = now + self.retry_for
        if now >= self._given_up_at:
            return None
        delay = min(self._delay, self._given_up_at - now)
        self._delay = min(self._delay * 2, self._ceiling)
        return delay


def now_ms() -> int:
    """Wall-clock Unix milliseconds, as events and batches carry them."""
    return int(time.time() * 1000)


class Events:
    """Where the broker says what happened; each call adds one event if the webhooks
    want it (nothing otherwise: a set lookup)."""

    def __init__(self) -> None:
        self.wanted: frozenset[str] = frozenset()
        self.queue = WebhookQueue(1)

    def configure(self, wanted: Collection[str], max_queued: int) -> None:
        self.wanted = frozenset(wanted)
        self.queue.max_queued = max_queued

    def connected(self, client_id: str, user: str | None, remote: str) -> None:
        if "connect" in self.wanted:
            self.queue.add(
                {
                    "event": "connect",
                    "client_id": client_id,
                    "user": user,
                    "remote": remote,
                    "time_ms": now_ms(),
                }
            )

    def disconnected(self, client_id: str, user: str | None, code: int | None) -> None:
        if "disconnect" in self.wanted:
            self.queue.add(
                {
                    "event": "disconnect",
                    "client_id": client_id,
                    "user": user,
                    "code": code,
                    "time_ms": now_ms(),
                }
            )

    def subscription(self, event: str, client_id: str, user: str | None, topic: str) -> None:
        """``subscribe``, ``unsubscribe`` (a filter) or ``join``, ``leave`` (a topic with
        presence)."""
        if event in self.wanted:
            self.queue.add(
                {
                    "event": event,
                    "client_id": client_id,
                    "user": user,
                    "topic": topic,
                    "time_ms": now_ms(),
                }
            )

    def filter(self, event: str, topic_filter: str) -> None:
        """``occupied`` or ``vacated``: the first subscription to a filter in the cluster,
        or the last one gone."""
        if event in self.wanted:
            self.queue.add({"event": event, "topic": topic_filter, "time_ms": now_ms()})

"""Local fan-out: the one place a published message meets its subscribers.

A cluster backplane plugs in here: it forwards what `publish` is given to other
nodes and feeds what they publish back into the local `publish`.
"""

import collections
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..core.subscriptions import SubscriptionIndex
from ..plugin import Client


class Subscriber(Protocol):
    client: Client

    def offer(self, frame: bytes) -> bool:
        """Queue without waiting; False when the subscriber's queue is full."""

    async def deliver(self, frame: bytes) -> None:
        """Queue, waiting while the subscriber is full (bounded by its slow-consumer timeout)."""


class LocalRouter:
    def __init__(self) -> None:
        self._index: SubscriptionIndex[Subscriber] = SubscriptionIndex()
        # Connections subscribe to a filter once and unsubscribe only what they hold.
        self.subscription_count = 0
        self._holders: collections.Counter[str] = collections.Counter()  # per filter

    def subscribe(self, topic_filter: str, subscriber: Subscriber) -> bool:
        """Whether it is the filter's first subscriber here."""
        self._index.add(topic_filter, subscriber)
        self.subscription_count += 1
        self._holders[topic_filter] += 1
        return self._holders[topic_filter] == 1

    def unsubscribe(self, topic_filter: str, subscriber: Subscriber) -> bool:
        """Whether it was the filter's last subscriber here."""
        self._index.remove(topic_filter, subscriber)
        self.subscription_count -= 1
        self._holders[topic_filter] -= 1
        if self._holders[topic_filter] > 0:
            return False
        del self._holders[topic_filter]
        return True

    def filters(self) -> list[str]:
        """The filters someone here subscribes to."""
        return list(self._holders)

    def holders(self, prefix: str = "") -> dict[str, int]:
        """How many subscribers here hold each filter starting with ``prefix``."""
        return {f: count for f, count in self._holders.items() if f.startswith(prefix)}

    def offer_all(self, topic: str, frame: bytes) -> None:
        """Hand ``frame`` to every subscriber with room; the others miss it (no waiting)."""
        for subscriber in self._index.match(topic):
            subscriber.offer(frame)

    def busiest(self, count: int) -> list[tuple[str, int]]:
        """The filters with the most subscribers here, most first."""
        return self._index.busiest(count)

    def filter_count(self) -> int:
        """Distinct filters someone subscribes to."""
        return self._index.filter_count()

    async def publish(
        self,
        topic: str,
        frame: bytes,
        accepts: Callable[[Subscriber], Awaitable[bool]] | None = None,
    ) -> int:
        """Hand one encoded frame to every matching subscriber, once each; how many.

        ``accepts`` (plugins' delivery filters) may withhold it from some. Subscribers
        with room get it at once; then the publisher waits for the full ones, each for
        at most its slow-consumer timeout, counted from when it became full. That wait
        is the backpressure a publisher feels.
        """
        subscribers = self._index.match(topic)
        if accepts is not None:
            subscribers = {s for s in subscribers if await accepts(s)}
        full = [s for s in subscribers if not s.offer(frame)]
        for subscriber in full:
            await subscriber.deliver(frame)
        return len(subscribers)

"""Local fan-out: the one place a published message meets its subscribers.

A cluster backplane plugs in here: it forwards what `publish` is given to other
nodes and feeds what they publish back into the local `publish`.
"""

from typing import Protocol

from .subscriptions import SubscriptionIndex


class Subscriber(Protocol):
    def offer(self, frame: bytes) -> bool:
        """Queue without waiting; False when the subscriber's queue is full."""

    async def deliver(self, frame: bytes) -> None:
        """Queue, waiting while the subscriber is full (bounded by its slow-consumer timeout)."""


class LocalRouter:
    def __init__(self) -> None:
        self._index: SubscriptionIndex[Subscriber] = SubscriptionIndex()

    def subscribe(self, topic_filter: str, subscriber: Subscriber) -> None:
        self._index.add(topic_filter, subscriber)

    def unsubscribe(self, topic_filter: str, subscriber: Subscriber) -> None:
        self._index.remove(topic_filter, subscriber)

    async def publish(self, topic: str, frame: bytes) -> None:
        """Hand one encoded frame to every matching subscriber, once each.

        Subscribers with room get it at once; then the publisher waits for the
        full ones, each for at most its slow-consumer timeout, counted from when
        it became full. That wait is the backpressure a publisher feels.
        """
        full = [s for s in self._index.match(topic) if not s.offer(frame)]
        for subscriber in full:
            await subscriber.deliver(frame)

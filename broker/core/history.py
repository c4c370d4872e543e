"""Retained messages per topic, with global positions, for recovery and `history` (no I/O).

Every message published on a topic with history gets the next *offset*, one counter
for all topics, so that one position says "everything up to here" for a wildcard
filter spanning many topics. Each topic keeps its newest ``history_size`` messages
for ``history_ttl`` seconds, and all topics together at most ``max_bytes`` of frames
(the oldest anywhere goes first).

Whether a recovery is complete: every topic remembers the highest offset it has
dropped (``evicted_upto``), also after its last message is gone (a *tombstone*); a
position older than that lost something. Tombstones are bounded too: forgetting one
raises ``forgotten_upto``, and positions older than that are incomplete wherever they
point, which is never wrong, only cautious.
"""

import heapq
import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Iterator

import attrs

from .topics import has_wildcard, matches


@attrs.define(slots=True)
class Retained:
    offset: int
    topic: str
    frame: bytes  # the delivery, framed, its position inside
    expires_at: float  # math.inf without a TTL


class _Topic:
    __slots__ = ("evicted_upto", "messages")

    def __init__(self, evicted_upto: int = 0) -> None:
        self.messages: deque[Retained] = deque()
        self.evicted_upto = evicted_upto


class HistoryStore:
    def __init__(self, max_bytes: int, max_tombstones: int = 100_000) -> None:
        self.max_bytes = max_bytes
        self.max_tombstones = max_tombstones
        self.offset = 0  # the last one given
        self.bytes = 0
        self.forgotten_upto = 0
        self._topics: dict[str, _Topic] = {}
        self._tombstones: OrderedDict[str, int] = OrderedDict()  # topic: evicted_upto
        self._order: OrderedDict[int, str] = OrderedDict()  # every retained offset: topic
        # (when, topic): the topic's oldest message expires then, or later.
        self._expiries: list[tuple[float, str]] = []
        self._expiring: set[str] = set()

    def __len__(self) -> int:
        return len(self._order)

    def next_offset(self) -> int:
        self.offset += 1
        return self.offset

    def append(
        self, topic: str, offset: int, frame: bytes, size: int, ttl: float, now: float
    ) -> None:
        """Keep ``frame`` (published at ``offset``, the newest) on ``topic``."""
        entry = self._topics.get(topic)
        if entry is None:
            entry = self._topics[topic] = _Topic(self._tombstones.pop(topic, 0))
        expires_at = now + ttl if ttl > 0 else math.inf
        entry.messages.append(Retained(offset, topic, frame, expires_at))
        self._order[offset] = topic
        self.bytes += len(frame)
        if expires_at != math.inf and topic not in self._expiring:
            self._expiring.add(topic)
            heapq.heappush(self._expiries, (expires_at, topic))
        while len(entry.messages) > size:
            self._evict_oldest(topic, entry)
        while self.bytes > self.max_bytes and self._order:
            oldest_topic = next(iter(self._order.values()))
            self._evict_oldest(oldest_topic, self._topics[oldest_topic])

    def _evict_oldest(self, topic: str, entry: _Topic) -> None:
        message = entry.messages.popleft()
        del self._order[message.offset]
        self.bytes -= len(message.frame)
        entry.evicted_upto = max(entry.evicted_upto, message.offset)
        if not entry.messages:
            del self._topics[topic]
            self._tombstones[topic] = entry.evicted_upto
            if len(self._tombstones) > self.max_tombstones:
                _, forgotten = self._tombstones.popitem(last=False)
                self.forgotten_upto = max(self.forgotten_upto, forgotten)

    @property
    def next_expiry(self) -> float:
        """When `expire` next has something to do (inf: never)."""
        return self._expiries[0][0] if self._expiries else math.inf

    def expire(self, now: float) -> None:
        """Drop every message whose TTL has run out."""
        while self._expiries and self._expiries[0][0] <= now:
            _, topic = heapq.heappop(self._expiries)
            self._expiring.discard(topic)
            entry = self._topics.get(topic)
            if entry is None:
                continue
            while entry.messages and entry.messages[0].expires_at <= now:
                self._evict_oldest(topic, entry)
            if entry.messages and entry.messages[0].expires_at != math.inf:
                self._expiring.add(topic)
                heapq.heappush(self._expiries, (entry.messages[0].expires_at, topic))

    def _matching(self, topic_filter: str) -> Iterator[tuple[str, _Topic]]:
        if not has_wildcard(topic_filter):
            entry = self._topics.get(topic_filter)
            if entry is not None:
                yield topic_filter, entry
            return
        for topic, entry in self._topics.items():
            if matches(topic_filter, topic):
                yield topic, entry

    def after(self, topic_filter: str, offset: int, now: float) -> tuple[list[Retained], bool]:
        """Retained messages on topics matching the filter published after ``offset``,
        oldest first; and whether they are all there were (nothing after it was dropped)."""
        self.expire(now)
        found: list[Retained] = []
        complete = offset >= self.forgotten_upto
        for _, entry in self._matching(topic_filter):
            complete = complete and entry.evicted_upto <= offset
            for message in reversed(entry.messages):
                if message.offset <= offset:
                    break
                found.append(message)
        if complete:
            complete = not self._tombstones_lost(topic_filter, offset)
        found.sort(key=lambda message: message.offset)
        return found, complete

    def _tombstones_lost(self, topic_filter: str, offset: int) -> bool:
        """Whether a topic with no message left dropped one after ``offset``."""
        if not has_wildcard(topic_filter):
            return self._tombstones.get(topic_filter, 0) > offset
        return any(
            evicted > offset and matches(topic_filter, topic)
            for topic, evicted in self._tombstones.items()
        )

    def newest(self, topic_filter: str, limit: int, now: float) -> list[Retained]:
        """The newest ``limit`` retained messages on matching topics, oldest first."""
        self.expire(now)
        found: list[Retained] = []
        for _, entry in self._matching(topic_filter):
            found.extend(itertools.islice(reversed(entry.messages), limit))
        found.sort(key=lambda message: message.offset)
        return found[-limit:] if limit else []

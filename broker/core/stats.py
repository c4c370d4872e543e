"""What the broker counts as it works: plain integers, read by the metrics at scrape time.

Counting happens where the work happens, once per publish (never per delivery), and
costs an integer addition; turning the numbers into Prometheus families is
`broker.admin.metrics`' job, done only when scraped.
"""

import bisect
import collections
from typing import Any

import attrs

# Filters the admin listener's demo dashboard lists.
BUSIEST = 10
# Seconds; a plugin hook is usually microseconds (in memory) or milliseconds (I/O).
PLUGIN_SECONDS_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


@attrs.define
class Histogram:
    """Observations counted into fixed buckets (upper bounds), plus their sum."""

    bounds: tuple[float, ...]
    counts: list[int] = attrs.field()
    total: float = 0.0

    @counts.default
    def _counts(self) -> list[int]:
        return [0] * (len(self.bounds) + 1)  # the last one: above every bound

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


# A plugin's own metric: its name and its labels, sorted by label name.
MetricKey = tuple[str, tuple[tuple[str, str], ...]]


def _histograms_to_json(histograms: dict[Any, Histogram]) -> list[list[Any]]:
    return [[key, list(h.bounds), h.counts, h.total] for key, h in histograms.items()]


def _add_histograms(mine: dict[Any, Histogram], other: dict[Any, Histogram]) -> None:
    for key, histogram in other.items():
        into = mine.get(key)
        if into is None:
            into = mine[key] = Histogram(histogram.bounds)
        into.counts = [a + b for a, b in zip(into.counts, histogram.counts, strict=True)]
        into.total += histogram.total


def _metric_key(data: Any) -> MetricKey:
    name, labels = data
    return name, tuple((label, value) for label, value in labels)


@attrs.define
class Stats:
    published: int = 0
    deliveries: int = 0
    delivered_bytes: int = 0
    slow_consumer_disconnects: int = 0
    throttled_connections: int = 0
    http_publishes: int = 0
    webhook_events_sent: int = 0
    webhook_events_dropped: int = 0  # the queue full, or a batch given up
    webhook_posts_failed: int = 0
    handshake_refusals: collections.Counter[int] = attrs.field(factory=collections.Counter)
    errors: collections.Counter[str] = attrs.field(factory=collections.Counter)
    plugin_refusals: collections.Counter[str] = attrs.field(factory=collections.Counter)
    plugin_seconds: dict[tuple[str, str], Histogram] = attrs.field(factory=dict)
    # What plugins count and time themselves (`broker.plugin.Metrics`).
    plugin_counts: collections.Counter[MetricKey] = attrs.field(factory=collections.Counter)
    plugin_histograms: dict[MetricKey, Histogram] = attrs.field(factory=dict)

    def delivered(self, subscribers: int, frame_bytes: int) -> None:
        """One publish reached ``subscribers``, each getting a frame of ``frame_bytes``."""
        self.published += 1
        self.deliveries += subscribers
        self.delivered_bytes += subscribers * frame_bytes

    def fanned_out(self, subscribers: int, frame_bytes: int) -> None:
        """Another node's publish reached ``subscribers`` here (it counted the publish)."""
        self.deliveries += subscribers
        self.delivered_bytes += subscribers * frame_bytes

    def plugin_call(self, plugin: str, hook: str, seconds: float) -> None:
        histogram = self.plugin_seconds.get((plugin, hook))
        if histogram is None:
            histogram = self.plugin_seconds[plugin, hook] = Histogram(PLUGIN_SECONDS_BUCKETS)
        histogram.observe(seconds)

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["handshake_refusals"] = {str(k): v for k, v in self.handshake_refusals.items()}
        data["plugin_seconds"] = _histograms_to_json(self.plugin_seconds)
        data["plugin_counts"] = [[key, count] for key, count in self.plugin_counts.items()]
        data["plugin_histograms"] = _histograms_to_json(self.plugin_histograms)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Stats":
        stats = cls(
            **{
                key: value
                for key, value in data.items()
                if key
                not in (
                    "handshake_refusals",
                    "errors",
                    "plugin_refusals",
                    "plugin_seconds",
                    "plugin_counts",
                    "plugin_histograms",
                )
            }
        )
        stats.handshake_refusals.update({int(k): v for k, v in data["handshake_refusals"].items()})
        stats.errors.update(data["errors"])
        stats.plugin_refusals.update(data["plugin_refusals"])
        for (plugin, hook), bounds, counts, total in data["plugin_seconds"]:
            stats.plugin_seconds[plugin, hook] = Histogram(tuple(bounds), counts, total)
        for key, count in data["plugin_counts"]:
            stats.plugin_counts[_metric_key(key)] = count
        for key, bounds, counts, total in data["plugin_histograms"]:
            stats.plugin_histograms[_metric_key(key)] = Histogram(tuple(bounds), counts, total)
        return stats

    def add(self, other: "Stats") -> None:
        """Count ``other``'s numbers in too (a node's workers, seen as one)."""
        for field in (
            "published",
            "deliveries",
            "delivered_bytes",
            "slow_consumer_disconnects",
            "throttled_connections",
            "http_publishes",
            "webhook_events_sent",
            "webhook_events_dropped",
            "webhook_posts_failed",
        ):
            setattr(self, field, getattr(self, field) + getattr(other, field))
        self.handshake_refusals.update(other.handshake_refusals)
        self.errors.update(other.errors)
        self.plugin_refusals.update(other.plugin_refusals)
        _add_histograms(self.plugin_seconds, other.plugin_seconds)
        self.plugin_counts.update(other.plugin_counts)
        _add_histograms(self.plugin_histograms, other.plugin_histograms)


@attrs.frozen
class Link:
    """Something shared the engine depends on (a Redis shard)."""

    name: str
    up: bool
    outages: int  # times it went down


@attrs.define
class Snapshot:
    """What the admin listener reports of a node: one process, or all its workers."""

    stats: Stats
    connections: int
    subscriptions: int
    topics: int
    retained_messages: int
    retained_bytes: int
    links: list[Link]
    unready_reason: str | None
    busiest: list[tuple[str, int]] = attrs.field(factory=list)  # filters, most subscribers first
    streams: int = 0  # of the connections, the event streams (Server-Sent Events)

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["stats"] = self.stats.to_json()
        data["links"] = [attrs.asdict(link) for link in self.links]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Snapshot":
        data = dict(data)
        data["stats"] = Stats.from_json(data["stats"])
        data["links"] = [Link(**link) for link in data["links"]]
        data["busiest"] = [(name, count) for name, count in data.get("busiest", [])]
        return cls(**data)

    def add(self, other: "Snapshot", name: str) -> None:
        """Take in a worker's numbers; ``name`` tells its links and reason apart."""
        self.stats.add(other.stats)
        self.connections += other.connections
        self.streams += other.streams
        self.subscriptions += other.subscriptions
        self.topics += other.topics  # distinct per worker: workers may share filters
        self.retained_messages += other.retained_messages
        self.retained_bytes += other.retained_bytes
        self.links += [attrs.evolve(link, name=f"{name}/{link.name}") for link in other.links]
        subscribers = collections.Counter(dict(self.busiest))
        subscribers.update(dict(other.busiest))
        self.busiest = subscribers.most_common(BUSIEST)
        if self.unready_reason is None and other.unready_reason is not None:
            self.unready_reason = f"{name}: {other.unready_reason}"

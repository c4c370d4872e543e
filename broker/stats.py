"""What the broker counts as it works: plain integers, read by the metrics at scrape time.

Counting happens where the work happens, once per publish (never per delivery), and
costs an integer addition; turning the numbers into Prometheus families is
`broker.metrics`' job, done only when scraped.
"""

import bisect
import collections

import attrs

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


@attrs.define
class Stats:
    published: int = 0
    deliveries: int = 0
    delivered_bytes: int = 0
    slow_consumer_disconnects: int = 0
    throttled_connections: int = 0
    http_publishes: int = 0
    handshake_refusals: collections.Counter[int] = attrs.field(factory=collections.Counter)
    errors: collections.Counter[str] = attrs.field(factory=collections.Counter)
    plugin_refusals: collections.Counter[str] = attrs.field(factory=collections.Counter)
    plugin_seconds: dict[tuple[str, str], Histogram] = attrs.field(factory=dict)

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

"""Prometheus metrics, read from the broker's plain counters when scraped.

Nothing here runs on the hot path: at scrape time the admin listener takes a
`Snapshot` of the node (its workers' summed up) and `render` turns it into metric
families; prometheus-client writes the text format and adds its process collector
(memory, CPU, open files: of the process serving the admin listener).
"""

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ..core.stats import Histogram, Snapshot, Stats

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "trio_broker_"


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)


def _labelled(name: str, documentation: str, label: str, counts: dict[str, int]) -> Metric:
    family = CounterMetricFamily(PREFIX + name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


class BrokerCollector(Collector):
    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None  # set before each rendering

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        if snapshot is None:
            return
        stats = snapshot.stats
        yield GaugeMetricFamily(
            PREFIX + "connections",
            "Open client connections: WebSockets and event streams.",
            value=snapshot.connections,
        )
        by_transport = GaugeMetricFamily(
            PREFIX + "connections_by_transport",
            "Open client connections by transport.",
            labels=["transport"],
        )
        by_transport.add_metric(["websocket"], snapshot.connections - snapshot.streams)
        by_transport.add_metric(["sse"], snapshot.streams)
        yield by_transport
        yield GaugeMetricFamily(
            PREFIX + "subscriptions",
            "Subscriptions held by all connections.",
            value=snapshot.subscriptions,
        )
        yield GaugeMetricFamily(
            PREFIX + "retained_messages",
            "Messages kept for history.",
            value=snapshot.retained_messages,
        )
        yield GaugeMetricFamily(
            PREFIX + "retained_bytes",
            "Bytes of messages kept for history.",
            value=snapshot.retained_bytes,
        )
        yield _counter("messages_published", "Publishes fanned out.", stats.published)
        yield _counter("deliveries", "Messages handed to subscribers.", stats.deliveries)
        yield _counter(
            "delivered_bytes",
            "Bytes of WebSocket frames handed to subscribers.",
            stats.delivered_bytes,
        )
        yield _counter(
            "slow_consumer_disconnects",
            "Connections closed with 1008 because their queue stayed full.",
            stats.slow_consumer_disconnects,
        )
        yield _counter(
            "throttled_connections",
            "Connections read more slowly for sending over max_incoming_rate.",
            stats.throttled_connections,
        )
        yield _counter(
            "http_publishes", "Messages published through the HTTP API.", stats.http_publishes
        )
        yield _counter(
            "webhook_events_sent", "Webhook events the backend took.", stats.webhook_events_sent
        )
        yield _counter(
            "webhook_events_dropped",
            "Webhook events dropped: the queue was full, or a batch failed for retry_for.",
            stats.webhook_events_dropped,
        )
        yield _counter(
            "webhook_posts_failed",
            "Webhook POSTs that failed (then retried).",
            stats.webhook_posts_failed,
        )
        yield _labelled(
            "handshake_refusals",
            "WebSocket handshakes refused, by HTTP status.",
            "status",
            {str(status): count for status, count in stats.handshake_refusals.items()},
        )
        yield _labelled("errors", "Error replies sent to clients, by code.", "code", stats.errors)
        yield _labelled(
            "plugin_refusals", "Operations refused by a plugin.", "plugin", stats.plugin_refusals
        )
        links = snapshot.links
        if links:
            up = GaugeMetricFamily(
                PREFIX + "redis_up",
                "Whether the Redis shard answers (1) or not (0).",
                labels=["shard"],
            )
            outages = CounterMetricFamily(
                PREFIX + "redis_outages",
                "Times the Redis shard became unavailable.",
                labels=["shard"],
            )
            for link in links:
                up.add_metric([link.name], int(link.up))
                outages.add_metric([link.name], link.outages)
            yield up
            yield outages
        seconds = HistogramMetricFamily(
            PREFIX + "plugin_seconds", "Time spent in plugin hooks.", labels=["plugin", "hook"]
        )
        for (plugin, hook), histogram in sorted(stats.plugin_seconds.items()):
            seconds.add_metric([plugin, hook], _buckets(histogram), sum_value=histogram.total)
        yield seconds
        yield from _plugins_own(stats)


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    cumulative, buckets = 0, []
    for bound, count in zip((*map(str, histogram.bounds), "+Inf"), histogram.counts, strict=True):
        cumulative += count
        buckets.append((bound, float(cumulative)))
    return buckets


def _plugins_own(stats: Stats) -> Iterator[Metric]:
    """What plugins counted themselves (`broker.plugin.Metrics`), a family per name; a
    series whose label names differ from its family's first is left out."""
    counters: dict[str, CounterMetricFamily] = {}
    histograms: dict[str, HistogramMetricFamily] = {}
    labels_of: dict[str, tuple[str, ...]] = {}

    def fits(name: str, labels: tuple[tuple[str, str], ...]) -> list[str] | None:
        names = tuple(label for label, _ in labels)
        if labels_of.setdefault(name, names) != names:
            return None
        return [value for _, value in labels]

    for (name, labels), count in sorted(stats.plugin_counts.items()):
        values = fits(name, labels)
        if values is not None:
            if name not in counters:
                counters[name] = CounterMetricFamily(
                    PREFIX + name, f"Counted by a plugin ({name}).", labels=labels_of[name]
                )
            counters[name].add_metric(values, count)
    for (name, labels), histogram in sorted(stats.plugin_histograms.items()):
        values = fits(name, labels)
        if values is not None and name not in counters:
            if name not in histograms:
                histograms[name] = HistogramMetricFamily(
                    PREFIX + name, f"Timed by a plugin ({name}).", labels=labels_of[name]
                )
            histograms[name].add_metric(values, _buckets(histogram), sum_value=histogram.total)
    yield from counters.values()
    yield from histograms.values()


class Metrics:
    def __init__(self) -> None:
        self._collector = BrokerCollector()
        self._registry = CollectorRegistry()
        self._registry.register(self._collector)
        ProcessCollector(registry=self._registry)

    def render(self, snapshot: Snapshot) -> bytes:
        """The Prometheus text exposition of ``snapshot`` and this process."""
        self._collector.snapshot = snapshot
        try:
            return generate_latest(self._registry)
        finally:
            self._collector.snapshot = None

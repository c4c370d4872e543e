"""Prometheus metrics, read from the broker's plain counters when scraped.

Nothing here runs on the hot path: `BrokerCollector.collect` turns `broker.stats`
and a few gauges into metric families at scrape time; prometheus-client writes
the text format and adds its process collector (memory, CPU, open files).
"""

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .engine import Engine
from .stats import Stats

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "trio_broker_"


class Observed(Protocol):
    """What the metrics read of a broker."""

    stats: Stats
    engine: Engine

    @property
    def connection_count(self) -> int: ...


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)


def _labelled(name: str, documentation: str, label: str, counts: dict[str, int]) -> Metric:
    family = CounterMetricFamily(PREFIX + name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


class BrokerCollector(Collector):
    def __init__(self, broker: Observed) -> None:
        self._broker = broker

    def collect(self) -> Iterator[Metric]:
        broker, stats = self._broker, self._broker.stats
        yield GaugeMetricFamily(
            PREFIX + "connections", "Open WebSocket connections.", value=broker.connection_count
        )
        yield GaugeMetricFamily(
            PREFIX + "subscriptions",
            "Subscriptions held by all connections.",
            value=broker.engine.subscription_count,
        )
        messages, retained_bytes = broker.engine.retained
        yield GaugeMetricFamily(
            PREFIX + "retained_messages", "Messages kept for history.", value=messages
        )
        yield GaugeMetricFamily(
            PREFIX + "retained_bytes", "Bytes of messages kept for history.", value=retained_bytes
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
        links = broker.engine.links()
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
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*map(str, histogram.bounds), "+Inf"), histogram.counts, strict=True
            ):
                cumulative += count
                buckets.append((bound, cumulative))
            seconds.add_metric([plugin, hook], buckets, sum_value=histogram.total)
        yield seconds


def make_registry(broker: Observed) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(BrokerCollector(broker))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of everything registered."""
    return generate_latest(registry)

"""A plugin's own numbers (broker.plugin.Metrics): kept in the broker's Stats, summed over
workers, rendered at /metrics (no sockets here)."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.admin.metrics import Metrics as Renderer
from broker.core.stats import Snapshot, Stats
from broker.plugin import Metrics


def rendered(stats: Stats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = Renderer().render(Snapshot(stats, 0, 0, 0, 0, 0, [], None)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counts_and_durations_reach_the_metrics_summed_over_workers() -> None:
    node, worker = Stats(), Stats()
    for stats in (node, worker):
        metrics = Metrics(stats)
        metrics.count("hook_failures", hook="connect", reason="timeout")
        metrics.observe("hook_seconds", 0.002, hook="connect")
    # A worker's numbers travel as JSON to its supervisor.
    node.add(Stats.from_json(worker.to_json()))
    samples = rendered(node)
    labels = (("hook", "connect"), ("reason", "timeout"))
    assert samples[("trio_broker_hook_failures_total", labels)] == 2
    assert samples[("trio_broker_hook_seconds_count", (("hook", "connect"),))] == 2
    assert samples[("trio_broker_hook_seconds_bucket", (("hook", "connect"), ("le", "0.005")))] == 2
    assert samples[("trio_broker_hook_seconds_sum", (("hook", "connect"),))] == pytest.approx(0.004)


def test_a_name_keeps_its_labels_and_names_are_metric_names() -> None:
    metrics = Metrics(Stats())
    metrics.count("calls", hook="connect")
    with pytest.raises(ValueError, match="labels"):
        metrics.count("calls", url="x")
    with pytest.raises(ValueError, match="metric name"):
        metrics.count("Calls-Made")

"""Micro-benchmark: topic matching with up to 100k subscriptions.

Measures `SubscriptionIndex.match` (exact topics in a dict, wildcard filters in a
trie over topic levels) against a linear scan of every filter with
`topics.matches` (the baseline), in the same run. The subscriptions look like a
real deployment: per-user exact topics, per-room wildcards, a few `#` taps. The
published topics hit a handful of them, so a good index does not slow down as
unrelated subscriptions are added.

    python bench/matching.py          # writes bench/results/matching.{json,md}
"""

import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from broker.core.subscriptions import SubscriptionIndex  # noqa: E402
from broker.core.topics import matches  # noqa: E402

SIZES = [1_000, 10_000, 100_000]
TOPICS = 2_000  # distinct published topics per measurement


def subscriptions(count: int, rng: random.Random) -> list[tuple[str, int]]:
    """(filter, subscriber): 70% exact, 25% one-level wildcards, 5% multi-level."""
    result = []
    for n in range(count):
        kind = rng.random()
        user, room = rng.randrange(count), rng.randrange(count // 10 + 1)
        if kind < 0.70:
            topic_filter = f"users/{user}/inbox"
        elif kind < 0.95:
            topic_filter = f"rooms/{room}/+/messages"
        else:
            topic_filter = f"rooms/{room}/#"
        result.append((topic_filter, n))
    return result


def published(count: int, rng: random.Random) -> list[str]:
    topics = []
    for _ in range(TOPICS):
        if rng.random() < 0.5:
            topics.append(f"users/{rng.randrange(count)}/inbox")
        else:
            topics.append(f"rooms/{rng.randrange(count // 10 + 1)}/general/messages")
    return topics


def time_per_call(
    function: Callable[[str], object], topics: list[str], budget: float = 1.0
) -> float:
    """Median over rounds of the mean µs per call, each round all topics once."""
    rounds = []
    deadline = time.perf_counter() + budget
    while len(rounds) < 3 or (time.perf_counter() < deadline and len(rounds) < 50):
        start = time.perf_counter()
        for topic in topics:
            function(topic)
        rounds.append((time.perf_counter() - start) / len(topics) * 1e6)
    return statistics.median(rounds)


def main() -> None:
    rng = random.Random(42)
    rows = []
    for size in SIZES:
        subs = subscriptions(size, rng)
        index: SubscriptionIndex[int] = SubscriptionIndex()
        for topic_filter, subscriber in subs:
            index.add(topic_filter, subscriber)
        topics = published(size, rng)

        def scan(topic: str, subs: list[tuple[str, int]] = subs) -> set[int]:
            return {s for f, s in subs if matches(f, topic)}

        # Both must agree before either is timed.
        for topic in topics[:20]:
            assert index.match(topic) == scan(topic), topic
        trie_us = time_per_call(index.match, topics)
        scan_us = time_per_call(scan, topics[:20], budget=2.0)
        matched = statistics.mean(len(index.match(t)) for t in topics)
        rows.append(
            {
                "subscriptions": size,
                "index_us_per_publish": trie_us,
                "scan_us_per_publish": scan_us,
                "speedup": scan_us / trie_us,
                "mean_subscribers_matched": matched,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    lines = [
        "| subscriptions | index µs/publish | linear scan µs/publish | speedup | matched |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['subscriptions']:,} | {row['index_us_per_publish']:.2f} "
            f"| {row['scan_us_per_publish']:,.0f} | {row['speedup']:,.0f}x "
            f"| {row['mean_subscribers_matched']:.1f} |"
        )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "matching.json").write_text(json.dumps(rows, indent=1))
    (out / "matching.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

import itertools
import random

from broker.core.subscriptions import SubscriptionIndex
from broker.core.topics import matches

FILTERS = [
    "a",
    "a/b",
    "a/+",
    "a/#",
    "+/b",
    "#",
    "+",
    "+/+",
    "a/b/c",
    "a/+/c",
    "$SYS/#",
    "$SYS/+",
    "+/#",
    "b/#",
    "a/b/#",
]
TOPICS = [
    "a",
    "b",
    "a/b",
    "a/c",
    "b/b",
    "a/b/c",
    "a/x/c",
    "a/b/c/d",
    "$SYS",
    "$SYS/x",
    "$SYS/x/y",
    "c/d/e",
]


def test_match_agrees_with_reference_definition() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    for topic_filter in FILTERS:
        index.add(topic_filter, topic_filter)
    for topic in TOPICS:
        expected = {f for f in FILTERS if matches(f, topic)}
        assert set(index.match(topic)) == expected, topic


def test_subscriber_matched_by_several_filters_is_returned_once() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    for topic_filter in ("a/b", "a/+", "a/#", "#"):
        index.add(topic_filter, "client")
    assert set(index.match("a/b")) == {"client"}


def test_remove_prunes_and_is_idempotent() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("a/+/c", "x")
    index.add("a/#", "x")
    index.add("a/b", "x")
    index.add("a/b", "x")
    assert len(index) == 3
    for topic_filter in ("a/+/c", "a/#", "a/b", "a/b", "never/added", "n/+"):
        index.remove(topic_filter, "x")
    assert len(index) == 0
    assert set(index.match("a/b/c")) == set()
    assert not index._root.children and not index._exact


def test_random_add_remove_against_reference() -> None:
    rng = random.Random(7)
    index: SubscriptionIndex[int] = SubscriptionIndex()
    live: set[tuple[str, int]] = set()
    for _ in range(3000):
        pair = (rng.choice(FILTERS), rng.randrange(5))
        if rng.random() < 0.6:
            index.add(*pair)
            live.add(pair)
        else:
            index.remove(*pair)
            live.discard(pair)
    for topic in TOPICS:
        assert set(index.match(topic)) == {s for f, s in live if matches(f, topic)}
    assert len(index) == len(live)


def test_unrelated_subscriptions_are_not_visited() -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex()
    for n, (x, y) in enumerate(itertools.product(range(300), range(300))):
        index.add(f"t/{x}/{y}/+", n)
    # Only the one branch of the trie on the topic's path is walked.
    assert set(index.match("t/5/7/z")) == {5 * 300 + 7}
    assert set(index.match("u/5/7/z")) == set()


def test_the_busiest_filters_count_their_subscribers() -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex()
    for n in range(3):
        index.add("a/b", n)
    for n in range(5):
        index.add("a/#", n)
    index.add("x/+/y", 1)
    index.add("#", 2)
    assert index.busiest(3) == [("a/#", 5), ("a/b", 3), ("x/+/y", 1)]
    assert sorted(index.busiest(10)) == [("#", 1), ("a/#", 5), ("a/b", 3), ("x/+/y", 1)]


def test_an_exact_filter_holds_one_subscriber_without_a_set_and_goes_back_to_one() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("room", "a")
    matched = index.match("room")
    assert list(matched) == ["a"] and len(index) == 1
    index.add("room", "a")  # again: still one
    index.add("room", "b")
    assert set(matched) == {"a"}  # what match gave before is not changed by later subscribes
    assert set(index.match("room")) == {"a", "b"} and len(index) == 2
    assert index.busiest(1) == [("room", 2)]
    index.remove("room", "a")
    assert list(index.match("room")) == ["b"] and index.busiest(1) == [("room", 1)]
    index.remove("room", "b")
    index.remove("room", "b")  # twice: nothing left to remove
    assert list(index.match("room")) == [] and len(index) == 0 and index.filter_count() == 0
    index.add("room/#", "c")  # with wildcards about, the exact one still counts once
    index.add("room/x", "c")
    assert list(index.match("room/x")) == ["c"]

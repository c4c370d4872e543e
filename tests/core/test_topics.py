import pytest

from broker.core.topics import (
    TopicError,
    check_filter,
    check_topic,
    covers,
    is_reserved,
    matches,
    overlaps,
)


@pytest.mark.parametrize("topic", ["a", "a/b", "chat/room-1", "$SYS/clients", "é/ü", "a b"])
def test_valid_topics(topic: str) -> None:
    check_topic(topic, 256)
    check_filter(topic, 256)


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        ("", "non-empty"),
        ("/a", "empty level"),
        ("a/", "empty level"),
        ("a//b", "empty level"),
        ("a/+", "wildcards"),
        ("#", "wildcards"),
        ("a/b#", "wildcards"),
        ("a\x00b", "NUL"),
        ("\ud800", "UTF-8"),
        ("x" * 257, "limit is 256"),
    ],
)
def test_invalid_publish_topics(topic: str, why: str) -> None:
    with pytest.raises(TopicError, match=why):
        check_topic(topic, 256)


def test_topic_length_counts_utf8_bytes() -> None:
    check_topic("é" * 128, 256)
    with pytest.raises(TopicError, match="258 bytes"):
        check_topic("é" * 129, 256)


@pytest.mark.parametrize("topic_filter", ["+", "#", "a/+", "a/#", "+/b/#", "+/+", "$SYS/#"])
def test_valid_filters(topic_filter: str) -> None:
    check_filter(topic_filter, 256)


@pytest.mark.parametrize(
    ("topic_filter", "why"),
    [
        ("a+", "whole level"),
        ("a/+b", "whole level"),
        ("a/#/b", "last level"),
        ("a/b#", "last level"),
        ("##", "last level"),
        ("a//#", "empty level"),
    ],
)
def test_invalid_filters(topic_filter: str, why: str) -> None:
    with pytest.raises(TopicError, match=why):
        check_filter(topic_filter, 256)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a", "a", True),
        ("a", "b", False),
        ("a/+", "a/b", True),
        ("a/+", "a", False),
        ("a/+", "a/b/c", False),
        ("+/b", "a/b", True),
        ("a/#", "a", True),
        ("a/#", "a/b", True),
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("#", "a/b", True),
        ("+/#", "a", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("$SYS/+", "$SYS/x", True),
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
    ],
)
def test_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


def test_reserved() -> None:
    assert is_reserved("$SYS")
    assert not is_reserved("a/$b")


LEVELS = ["a", "b", "$s"]


def _all_topics(depth: int = 3) -> list[str]:
    topics = [[level] for level in LEVELS]
    result = list(topics)
    for _ in range(depth - 1):
        topics = [[*t, level] for t in topics for level in ["a", "b"]]
        result += topics
    return ["/".join(t) for t in result]


def _all_filters() -> list[str]:
    parts = ["a", "b", "$s", "+", "#"]
    filters = []
    for first in parts:
        filters.append(first)
        if first == "#":
            continue
        for second in ["a", "+", "#"]:
            filters.append(f"{first}/{second}")
            if second != "#":
                filters += [f"{first}/{second}/{third}" for third in ("b", "+", "#")]
    return filters


TOPICS_UNIVERSE = _all_topics()
FILTERS_UNIVERSE = _all_filters()


def test_covers_and_overlaps_agree_with_matching_over_a_small_universe() -> None:
    matched = {f: {t for t in TOPICS_UNIVERSE if matches(f, t)} for f in FILTERS_UNIVERSE}
    for general in FILTERS_UNIVERSE:
        for specific in FILTERS_UNIVERSE:
            # The universe is deep enough for these filters: subset and intersection are exact.
            assert covers(general, specific) == (matched[specific] <= matched[general]), (
                general,
                specific,
            )
            assert overlaps(general, specific) == bool(matched[general] & matched[specific]), (
                general,
                specific,
            )


@pytest.mark.parametrize(
    ("general", "specific", "expected"),
    [
        ("users/alice/#", "users/alice", True),
        ("users/alice/#", "users/+/x", False),
        ("users/+/inbox", "users/#", False),
        ("#", "$SYS/x", False),
        ("$SYS/#", "$SYS/+", True),
        ("a/+", "a/#", False),
    ],
)
def test_covers_examples(general: str, specific: str, expected: bool) -> None:
    assert covers(general, specific) is expected

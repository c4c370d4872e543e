"""Retained messages, positions and recovery: the sans-IO store and the memory engine."""

import json
import math
from typing import Any

import hypothesis.strategies as st
import trio
from hypothesis import given, settings

from broker.config.schema import config_from_mapping
from broker.core.history import HistoryStore
from broker.core.presence import PresenceTable
from broker.core.timers import Timers
from broker.engine.memory import MemoryEngine
from broker.engine.topic_rules import TopicRules
from broker.plugin import Client, Identity, Publication
from broker.wire.frames import frame_payload
from broker.wire.positions import Position, parse_position

# --- HistoryStore ----------------------------------------------------------------------------


def _fill(store: HistoryStore, topic: str, count: int, size: int = 10, ttl: float = 0) -> None:
    for _ in range(count):
        offset = store.next_offset()
        store.append(topic, offset, f"{topic}:{offset}".encode(), size, ttl, now=0.0)


def _offsets(retained: list[Any]) -> list[int]:
    return [message.offset for message in retained]


def test_offsets_are_global_and_replay_merges_topics_in_order() -> None:
    store = HistoryStore(max_bytes=10**6)
    for topic in ("a/1", "a/2", "b/1", "a/1"):
        _fill(store, topic, 1)
    found, complete = store.after("a/#", 1, now=0)
    assert (_offsets(found), complete) == ([2, 4], True)
    found, complete = store.after("a/1", 0, now=0)
    assert (_offsets(found), complete) == ([1, 4], True)


def test_a_position_older_than_what_a_topic_kept_is_incomplete() -> None:
    store = HistoryStore(max_bytes=10**6)
    _fill(store, "a", 5, size=3)  # keeps 3, 4, 5
    assert store.after("a", 2, now=0) == (store.after("a", 2, now=0)[0], True)
    found, complete = store.after("a", 1, now=0)
    assert (_offsets(found), complete) == ([3, 4, 5], False)
    # Other topics' losses do not matter to an exact filter, but do to a wildcard over them.
    _fill(store, "b", 1)
    assert store.after("b", 1, now=0)[1] is True
    assert store.after("#", 1, now=0)[1] is False


def test_the_byte_bound_drops_the_oldest_of_all_topics() -> None:
    store = HistoryStore(max_bytes=30)
    _fill(store, "a", 2)  # frames of 3 bytes: "a:1"
    _fill(store, "bbbbbbbbbbbb", 2)  # 15 bytes each
    assert store.bytes <= 30
    assert store.after("a", 0, now=0)[1] is False
    assert len(store) == 2


def test_ttl_expiry_drops_messages_and_remembers_it() -> None:
    store = HistoryStore(max_bytes=10**6)
    store.append("a", store.next_offset(), b"1", 10, 5.0, now=0.0)
    store.append("a", store.next_offset(), b"2", 10, 5.0, now=3.0)
    assert store.next_expiry == 5.0
    store.expire(6.0)
    assert _offsets(store.after("a", 0, now=6.0)[0]) == [2]
    assert store.after("a", 0, now=6.0)[1] is False
    store.expire(9.0)
    assert len(store) == 0
    assert store.next_expiry == math.inf
    # Gone, but its topic still says what it lost (a tombstone).
    assert store.after("a", 1, now=9.0) == ([], False)
    assert store.after("a", 2, now=9.0) == ([], True)


def test_tombstones_are_bounded_and_forgetting_one_is_cautious() -> None:
    store = HistoryStore(max_bytes=10**6, max_tombstones=2)
    for topic in ("x", "y", "z"):
        store.append(topic, store.next_offset(), b"m", 1, 1.0, now=0.0)
    store.expire(2.0)
    assert store.forgotten_upto == 1  # x's tombstone was forgotten
    assert store.after("unrelated", 0, now=2.0)[1] is False
    assert store.after("unrelated", 1, now=2.0)[1] is True


def test_newest_returns_the_last_messages_oldest_first() -> None:
    store = HistoryStore(max_bytes=10**6)
    _fill(store, "a/1", 3)
    _fill(store, "a/2", 3)
    assert _offsets(store.newest("a/+", 4, now=0)) == [3, 4, 5, 6]
    assert store.newest("a/+", 0, now=0) == []


# --- Positions, presence, topic rules ------------------------------------------------------


def test_positions_parse_or_are_refused() -> None:
    assert parse_position("ab12:42") == Position("ab12", 42)
    assert str(Position("ab12", 42)) == "ab12:42"
    for bad in ("", "42", ":42", "ab:", "ab:-1", "ab:4.2", "ab:٤", 42, None, "a:" + "9" * 100):
        assert parse_position(bad) is None


def test_presence_table() -> None:
    table = PresenceTable()
    assert table.join("room", "c1", "alice")
    assert not table.join("room", "c1", "alice")
    assert table.join("room", "c2", None)
    assert table.members("room") == [
        {"client_id": "c1", "user": "alice"},
        {"client_id": "c2", "user": None},
    ]
    assert table.leave("room", "c1") and not table.leave("room", "c1")
    assert table.leave("room", "c2")
    assert table.members("room") == []


def test_the_first_matching_topics_table_applies() -> None:
    config = config_from_mapping(
        {
            "topics": [
                {"filter": "chat/secret/#"},
                {"filter": "chat/#", "history_size": 10},
            ]
        }
    )
    rules = TopicRules(config.topics)
    assert rules.lookup("chat/lobby").history_size == 10  # type: ignore[union-attr]
    assert rules.lookup("chat/secret/x").history_size == 0  # type: ignore[union-attr]
    assert rules.lookup("other") is None
    assert rules.history_possible("#") and rules.history_possible("chat/+")
    assert not rules.history_possible("other/#")


# --- The memory engine: no loss, no duplicate, whatever the schedule --------------------------


class Recorder:
    """A subscriber that keeps what it is handed."""

    def __init__(self) -> None:
        self.client = Client("c", Identity(), "test")
        self.frames: list[bytes] = []

    def offer(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True

    async def deliver(self, frame: bytes) -> None:
        self.frames.append(frame)


def _envelope(frame: bytes) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(frame_payload(frame))
    return envelope


TOPICS = ["a/1", "a/2", "b/1"]
actions = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(TOPICS)),
        st.tuples(st.just("disconnect")),
        st.tuples(st.just("reconnect")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    schedule=actions,
    topic_filter=st.sampled_from(["a/#", "a/1", "+/1", "#"]),
    size=st.integers(min_value=1, max_value=8),
)
def test_random_publish_and_reconnect_schedules_never_lose_or_duplicate(
    schedule: list[tuple[str, ...]], topic_filter: str, size: int
) -> None:
    async def run() -> None:
        config = config_from_mapping({"topics": [{"filter": "#", "history_size": size}]})
        engine = MemoryEngine(config, Timers())
        published: list[tuple[str, int]] = []  # (topic, n) in publish order
        received: list[tuple[str, int]] = []
        subscriber: Recorder | None = Recorder()
        # As a client does: the ack's position, then each delivery's.
        last_pos = (await engine.subscribe(topic_filter, subscriber, None)).position
        for n, (action, *rest) in enumerate(schedule):
            if action == "publish":
                (topic,) = rest
                await engine.publish(Publication(topic, n), None)
                published.append((topic, n))
            elif action == "disconnect" and subscriber is not None:
                engine.unsubscribe(topic_filter, subscriber)
                received += [(e["topic"], e["data"]) for e in map(_envelope, subscriber.frames)]
                last_pos = next(
                    (e["pos"] for e in map(_envelope, reversed(subscriber.frames))), last_pos
                )
                subscriber = None
            elif action == "reconnect" and subscriber is None:
                subscriber = Recorder()
                recovery = await engine.subscribe(topic_filter, subscriber, last_pos)
                replayed = [(e["topic"], e["data"]) for e in map(_envelope, recovery.frames)]
                if not recovery.recovered:
                    # Honest: something the client had not seen is really gone. It reloads
                    # its state another way (here: it is handed all of it).
                    wanted = matching(published, topic_filter)
                    assert not set(wanted) <= set(received) | set(replayed)
                    assert len(replayed) == len(set(replayed))
                    received = wanted
                else:
                    received += replayed
                    assert received == matching(published, topic_filter)
                last_pos = recovery.position
        # Never twice, and in publish order.
        assert len(received) == len(set(received))
        assert received == sorted(received, key=lambda m: m[1])

    trio.run(run)


def matching(published: list[tuple[str, int]], topic_filter: str) -> list[tuple[str, int]]:
    from broker.core.topics import matches

    return [(topic, n) for topic, n in published if matches(topic_filter, topic)]

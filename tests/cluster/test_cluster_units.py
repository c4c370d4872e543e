"""The sans-IO parts of the redis engine: names, interest, wire format, batches, snapshots."""

import json
from typing import Any

import pytest

from broker.cluster import wire as cluster_wire
from broker.cluster.batches import Pending, add_to_pipeline
from broker.cluster.names import Interest, InterestCounts, Names
from broker.core.stats import Link, Snapshot, Stats
from broker.wire import protocol


def test_topics_are_spread_over_shards_by_a_stable_hash() -> None:
    names = Names("p", 4)
    # CRC-32, not Python's hash(): the same in every process and every run.
    assert [names.shard_of(t) for t in ("a", "b", "chat/room", "x/y/z")] == [3, 1, 1, 3]
    spread = {names.shard_of(f"topic/{n}") for n in range(100)}
    assert spread == {0, 1, 2, 3}
    assert Names("p", 1).shard_of("anything") == 0


@pytest.mark.parametrize(
    ("topic_filter", "channels", "patterns"),
    [
        ("chat/room", ["p:t:chat/room"], []),
        ("chat/+", [], ["p:t:chat/*"]),
        ("chat/#", ["p:t:chat"], ["p:t:chat/*"]),
        ("+/x/#", [], ["p:t:*/x/*", "p:t:*/x"]),
        ("#", [], ["p:t:*"]),
        # Glob characters in topics are matched literally.
        ("a*[b]?\\/+", [], ["p:t:a\\*\\[b\\]\\?\\\\/*"]),
    ],
)
def test_a_filter_becomes_channels_and_patterns(
    topic_filter: str, channels: list[str], patterns: list[str]
) -> None:
    interest = Names("p", 1).interest(topic_filter)
    assert interest == {0: Interest(tuple(channels), tuple(patterns))}


def test_with_shards_a_pattern_goes_to_every_shard_a_channel_to_its_topics() -> None:
    names = Names("p", 3)
    exact = names.interest("chat/room")
    assert list(exact) == [names.shard_of("chat/room")]
    wildcard = names.interest("chat/#")
    assert sorted(wildcard) == [0, 1, 2]
    assert all(part.patterns == ("p:t:chat/*",) for part in wildcard.values())
    assert [part.channels for part in wildcard.values() if part.channels] == [("p:t:chat",)]


def test_interest_is_counted_so_the_last_one_out_unsubscribes() -> None:
    counts = InterestCounts()
    one = Interest(("c",), ("p*",))
    assert counts.add(one) == one
    assert counts.add(Interest(("c", "d"))) == Interest(("d",))
    assert counts.remove(one) == Interest((), ("p*",))
    assert counts.remove(Interest(("c", "d"))) == Interest(("c", "d"))
    assert not counts.channels and not counts.patterns


def test_wire_messages_parse_and_carry_several_documents() -> None:
    headers = cluster_wire.Headers("node1")
    first, second = headers.next(cluster_wire.DELIVERED), headers.next(cluster_wire.DELIVERED)
    assert first != second  # every publish is told apart
    documents = [b'{"op":"message","data":"a\\nb"}', b'{"op":"message","data":2}']
    received = cluster_wire.parse(cluster_wire.join(first, documents))
    assert received is not None
    assert (received.node, received.kind) == (b"node1", cluster_wire.DELIVERED)
    assert cluster_wire.payloads(received) == documents
    for garbage in (b"", b"no header", b"a b c\n{}", b"a b\n{}", b"a b m c\n{}"):
        assert cluster_wire.parse(garbage) is None


class FakePipe:
    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def publish(self, channel: str, data: bytes) -> None:
        self.commands.append(("publish", channel, data))


def test_consecutive_publishes_to_one_channel_become_one_command_in_order() -> None:
    def publish(channel: str, n: int) -> Pending:
        return Pending(None, (channel, f"h{n}\n".encode(), f"{n}".encode()))

    other = Pending(lambda pipe: pipe.commands.append(("script",)), None)  # type: ignore[attr-defined]
    batch = [publish("a", 1), publish("a", 2), publish("b", 3), publish("a", 4), other]
    batch.append(publish("a", 5))
    pipe = FakePipe()
    answered = add_to_pipeline(batch, pipe)  # type: ignore[arg-type]
    assert pipe.commands == [
        ("publish", "a", b"h1\n1\n2"),
        ("publish", "b", b"h3\n3"),
        ("publish", "a", b"h4\n4"),
        ("script",),
        ("publish", "a", b"h5\n5"),
    ]
    assert [len(run) for run in answered] == [2, 1, 1, 1, 1]
    assert [pending for run in answered for pending in run] == batch


def test_a_message_with_its_position_still_to_come_is_the_message_with_it() -> None:
    meta = {"sender": "x"}
    head, tail = protocol.encode_message_around_pos("t", {"a": [1, "é"]}, meta)
    assert head + b"e1:42" + tail == protocol.encode_message("t", {"a": [1, "é"]}, meta, "e1:42")


def test_snapshots_travel_as_json_and_add_up() -> None:
    stats = Stats(published=2, deliveries=10)
    stats.errors["forbidden"] += 1
    stats.handshake_refusals[429] += 3
    stats.plugin_call("acl", "authorize_publish", 0.002)
    worker = Snapshot(stats, 5, 7, 3, 0, 0, [Link("0", True, 1)], None)
    travelled = Snapshot.from_json(json.loads(json.dumps(worker.to_json())))
    assert travelled == worker
    total = Snapshot(Stats(http_publishes=1), 0, 0, 0, 0, 0, [], None)
    total.add(travelled, "worker 0")
    total.add(Snapshot(Stats(), 1, 1, 1, 0, 0, [Link("0", False, 2)], "redis down"), "worker 1")
    assert (total.connections, total.subscriptions, total.stats.published) == (6, 8, 2)
    assert total.stats.http_publishes == 1 and total.stats.handshake_refusals[429] == 3
    assert total.stats.plugin_seconds["acl", "authorize_publish"].counts == (
        stats.plugin_seconds["acl", "authorize_publish"].counts
    )
    assert [link.name for link in total.links] == ["worker 0/0", "worker 1/0"]
    assert total.unready_reason == "worker 1: redis down"
    total.busiest = [("chat/#", 3), ("a", 1)]
    total.add(Snapshot(Stats(), 0, 0, 0, 0, 0, [], None, [("a", 5), ("b", 2)]), "worker 2")
    assert total.busiest == [("a", 6), ("chat/#", 3), ("b", 2)]

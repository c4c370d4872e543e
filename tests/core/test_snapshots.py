"""Which live deliveries a recovery's replay held already (broker/core/snapshots.py, no I/O)."""

import collections
from collections.abc import Callable

from broker.core.snapshots import Detour, Snapshot
from broker.wire import protocol
from broker.wire.frames import text_frame

Marker = Callable[[], None]


def delivery(topic: str, pos: str | None, data: object = "x") -> bytes:
    return text_frame(protocol.encode_message(topic, data, pos=pos))


def snapshot(topic_filter: str = "chat/#", **upto: int) -> tuple[Snapshot, list[Marker]]:
    """A snapshot read up to ``upto`` (epoch: offset), each epoch's marker expected."""
    taken = Snapshot(topic_filter)
    markers: list[Marker] = []
    for epoch, offset in upto.items():
        markers.append(taken.expect_marker())
        taken.read_up_to(epoch, offset)
    return taken, markers


def test_a_snapshot_covers_its_filters_messages_up_to_its_offset_per_epoch() -> None:
    detour = Detour()
    detour.add(snapshot(e1=10, e2=5)[0])
    assert detour.covers(delivery("chat/a", "e1:10"))
    assert detour.covers(delivery("chat/a/b", "e2:3"))
    assert not detour.covers(delivery("chat/a", "e1:11"))  # after it: live
    assert not detour.covers(delivery("other", "e1:3"))  # not its filter
    assert not detour.covers(delivery("chat/a", "e9:3"))  # another history
    assert not detour.covers(delivery("chat/a", None))  # no history: never replayed
    # Data that looks like a position is data.
    assert not detour.covers(delivery("chat/a", None, {"pos": "e1:1"}))
    assert not detour.covers(text_frame(protocol.encode_ack(1, pos="e1:1")))


def test_it_settles_when_every_marker_arrived_and_arrivals_twice_count_once() -> None:
    taken, (first, second) = snapshot(e1=10, e2=5)
    assert not taken.settled
    first()
    first()
    assert not taken.settled
    second()
    assert taken.settled


def test_it_settles_when_each_epochs_live_stream_passed_it() -> None:
    # A marker lost with its pub/sub session: later deliveries say it as well.
    taken, _ = snapshot(e1=10, e2=5)
    detour = Detour()
    detour.add(taken)
    assert not detour.covers(delivery("elsewhere", "e1:11"))
    assert not taken.settled
    assert not detour.covers(delivery("chat/x", "e2:6"))
    assert taken.settled


def test_a_detour_forgets_settled_snapshots_and_those_of_filters_no_longer_held() -> None:
    detour = Detour()
    settled, (marker,) = snapshot("chat/#", e1=10)
    detour.add(settled)
    detour.add(snapshot("news", e1=10)[0])
    detour.add(snapshot("gone", e1=10)[0])
    marker()
    # Deliveries that waited aside since before the marker still need it.
    assert detour.covers(delivery("chat/a", "e1:9"))
    detour.forget(held={"chat/#", "news"})
    assert list(detour.snapshots) == ["news"]
    assert not detour.done
    detour.forget(held=set())
    assert detour.done
    detour.waiting = collections.deque()
    assert not detour.done


def test_a_newer_snapshot_of_a_filter_replaces_the_older() -> None:
    detour = Detour()
    detour.add(snapshot("chat/#", e1=10)[0])
    detour.add(snapshot("chat/#", e1=20)[0])
    assert len(detour.snapshots) == 1
    assert detour.covers(delivery("chat/a", "e1:15"))

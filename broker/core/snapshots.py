"""What a recovery's snapshot covered, and the live deliveries it makes redundant (no I/O).

A subscribe on a topic with history is acked with a position: every message at or
before it is in the replay (or older than the position the client recovered from),
every later one comes live. The memory engine subscribes and takes the snapshot in
one step. The Redis engine cannot: the node receives live messages on its pub/sub
connection and reads history on another, so a message published just before the
snapshot may still be on its way to the node (in Redis' socket, in coredis' queue,
behind a busy subscriber) when the replay has been sent, and reach the client after
the ack, a second time.

Such an engine hands the connection a `Snapshot`: per shard epoch, the offset the
replay read up to. The connection drops every live delivery the snapshot covers, during
the replay and after it (`Detour`), until the snapshot is `settled`: the node's pub/sub
stream has passed that point. The engine knows it from a marker that the command which
took the snapshot published behind everything it covers; a live delivery of the same
epoch past the snapshot says it too.
"""

import collections
import json
from collections.abc import Callable, Collection

from ..wire.frames import frame_payload
from ..wire.positions import Position, parse_position
from .topics import matches


class Snapshot:
    __slots__ = ("_markers", "_pending", "topic_filter", "upto")

    def __init__(self, topic_filter: str) -> None:
        self.topic_filter = topic_filter
        self.upto: dict[str, int] = {}  # per shard epoch: the offset the replay read up to
        self._markers = 0  # expected and not arrived yet
        self._pending: set[str] = set()  # epochs whose live stream has not passed `upto`

    def read_up_to(self, epoch: str, offset: int) -> None:
        self.upto[epoch] = offset
        self._pending.add(epoch)

    def expect_marker(self) -> Callable[[], None]:
        """Count one more marker; call what this returns when it arrived (again: nothing)."""
        self._markers += 1
        arrived = False

        def marker_arrived() -> None:
            nonlocal arrived
            if not arrived:
                arrived = True
                self._markers -= 1

        return marker_arrived

    @property
    def settled(self) -> bool:
        """No live delivery it covers can come any more."""
        return self._markers == 0 or not self._pending

    def covers(self, topic: str, position: Position) -> bool:
        """Whether a live delivery at ``position`` is one the replay holds (or older)."""
        upto = self.upto.get(position.epoch)
        if upto is None:
            return False
        if position.offset > upto:
            self._pending.discard(position.epoch)  # that stream is past the snapshot
            return False
        return matches(self.topic_filter, topic)


def _position_of(frame: bytes) -> tuple[str, Position] | None:
    """The topic and position of a delivery, None for anything else."""
    payload = frame_payload(frame)
    if b'"pos":"' not in payload:  # most deliveries: no history
        return None
    message = json.loads(payload)
    position = parse_position(message.get("pos"))
    if position is None or message.get("op") != "message":
        return None
    return message["topic"], position


class Detour:
    """A connection's live deliveries around recoveries: held aside while a replay is sent
    (`waiting`), and dropped while an unsettled snapshot covers them.

    One snapshot per filter (a newer one of the same filter covers all an older one did);
    a snapshot whose filter is no longer held is forgotten, so at most one per
    subscription is kept.
    """

    __slots__ = ("snapshots", "waiting")

    def __init__(self) -> None:
        self.waiting: collections.deque[bytes] | None = None
        self.snapshots: dict[str, Snapshot] = {}

    def add(self, snapshot: Snapshot) -> None:
        self.snapshots[snapshot.topic_filter] = snapshot

    def covers(self, frame: bytes) -> bool:
        """Whether ``frame`` is one a replay sent already (or an older one)."""
        if not self.snapshots:
            return False
        found = _position_of(frame)
        return found is not None and any(
            snapshot.covers(*found) for snapshot in self.snapshots.values()
        )

    def forget(self, held: Collection[str]) -> None:
        """Forget the snapshots that settled, and those of filters no longer held. (Not
        while deliveries wait aside: those that arrived before a marker still need it.)"""
        for topic_filter, snapshot in list(self.snapshots.items()):
            if snapshot.settled or topic_filter not in held:
                del self.snapshots[topic_filter]

    @property
    def done(self) -> bool:
        """Nothing left to do: live deliveries may go straight to the outbox again."""
        return self.waiting is None and not self.snapshots

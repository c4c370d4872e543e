"""The Lua scripts' replies (broker/cluster/scripts.py), read into named fields (no I/O).

Redis returns a script's table as a flat list; the shapes are the scripts' comments'.
"""

import json
from typing import Any

import attrs

Pairs = list[tuple[int, bytes]]  # (offset, delivery), in the order the script gave them


def _pairs(items: list[Any], start: int, count: int) -> Pairs:
    return [(int(items[start + 2 * i]), items[start + 2 * i + 1]) for i in range(count)]


@attrs.frozen
class StreamRead:
    """One topic's stream, as RECOVER read it."""

    exists: bool
    complete: bool  # nothing after the position was dropped
    pairs: Pairs  # oldest first


@attrs.frozen
class Recovered:
    """RECOVER's reply: the shard's epoch and offset now, Redis' clock, and each stream."""

    epoch: str
    offset: int
    now_ms: int
    streams: list[StreamRead]

    @classmethod
    def parse(cls, reply: list[Any]) -> "Recovered":
        streams = []
        index = 3
        while index < len(reply):
            exists, complete, count = (int(value) for value in reply[index : index + 3])
            streams.append(
                StreamRead(bool(exists), bool(complete), _pairs(reply, index + 3, count))
            )
            index += 3 + 2 * count
        return cls(reply[0].decode(), int(reply[1]), int(reply[2]), streams)


@attrs.frozen
class Newest:
    """NEWEST's reply: the shard's position now, and the newest retained of each stream."""

    position: str
    pairs: Pairs  # every stream's, newest first within each

    @classmethod
    def parse(cls, reply: list[Any], streams: int) -> "Newest":
        pairs: Pairs = []
        index = 2
        for _ in range(streams):
            count = int(reply[index])
            pairs.extend(_pairs(reply, index + 1, count))
            index += 1 + 2 * count
        return cls(f"{reply[0].decode()}:{int(reply[1])}", pairs)


def members(reply: list[bytes]) -> list[dict[str, Any]]:
    """MEMBERS' reply (the presence hash's fields and values) as the presence reply lists."""
    return [
        {"client_id": reply[i].decode(), "user": json.loads(reply[i + 1])}
        for i in range(0, len(reply), 2)
    ]

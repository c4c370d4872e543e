"""Where the Redis engine keeps things: key and channel names, shards, interest (no I/O).

Every name starts with the configured prefix, so that several clusters can share a
Redis. A topic lives on one shard, chosen by a stable hash of its name (CRC-32: the
same on every node and every run); a wildcard filter may match topics on any shard.

Channels: ``PREFIX:t:TOPIC`` carries the messages and join/leave events of a topic.
A node subscribes to the channels its local subscribers may want: an exact filter's
own channel, and for a wildcard filter a pattern (``+`` and ``#`` become ``*``,
which matches across levels too: a bounded superset that the local index filters).
"""

import zlib
from collections import Counter

import attrs

from ..core.topics import MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL, has_wildcard

_GLOB_SPECIAL = str.maketrans({ch: "\\" + ch for ch in "*?[]\\"})


@attrs.frozen
class Interest:
    """What a node subscribes to on one shard for one filter."""

    channels: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()


class Names:
    def __init__(self, prefix: str, shard_count: int) -> None:
        self.prefix = prefix
        self.shard_count = shard_count
        self.channel_prefix = f"{prefix}:t:"
        self.topics = f"{prefix}:topics"  # topics with history: their streams expire then
        # The keys every script that hands out or reads positions starts with: the epoch,
        # the offset counter, and the replication ID of the master the epoch belongs to
        # (broker/cluster/scripts.py).
        self.positions = (f"{prefix}:epoch", f"{prefix}:offset", f"{prefix}:epoch-replid")

    def shard_of(self, topic: str) -> int:
        if self.shard_count == 1:
            return 0
        return zlib.crc32(topic.encode()) % self.shard_count

    def channel(self, topic: str) -> str:
        return self.channel_prefix + topic

    def topic_of(self, channel: bytes) -> str:
        return channel[len(self.channel_prefix) :].decode()

    def marker_channel(self, node: str) -> str:
        """A node's own channel (`broker.core.snapshots`): no pattern of topics matches it."""
        return f"{self.prefix}:n:{node}"

    def stream(self, topic: str) -> str:
        return f"{self.prefix}:h:{topic}"

    def presence(self, topic: str) -> str:
        return f"{self.prefix}:p:{topic}"

    def presence_expiry(self, topic: str) -> str:
        return f"{self.prefix}:pe:{topic}"

    # The control API's commands to every node, and each node's answers (cluster/commands.py).
    @property
    def commands(self) -> str:
        return f"{self.prefix}:ctl"

    def answers(self, node: str) -> str:
        return f"{self.prefix}:ans:{node}"

    def user_connections(self, user: str) -> str:
        """A user's connections across the cluster ([limits] max_connections_per_user)."""
        return f"{self.prefix}:u:{user}"

    # Occupancy (broker/cluster/occupancy.py): per shard, the occupied filters; per
    # filter (on the shard its name hashes to), the nodes holding it.
    @property
    def occupied(self) -> str:
        return f"{self.prefix}:occupied"

    @property
    def occupants_prefix(self) -> str:
        return f"{self.prefix}:o:"

    def occupants(self, topic_filter: str) -> str:
        return self.occupants_prefix + topic_filter

    def interest(self, topic_filter: str) -> dict[int, Interest]:
        """Shard: what to subscribe to there for ``topic_filter``."""
        if not has_wildcard(topic_filter):
            return {self.shard_of(topic_filter): Interest(channels=(self.channel(topic_filter),))}
        levels = topic_filter.split(SEPARATOR)
        channels: list[str] = []
        patterns: list[str] = []
        if levels[-1] == MULTI_LEVEL:
            parent = levels[:-1]
            # "a/#" matches "a" itself and everything below it.
            patterns.append(self._pattern(parent) + (SEPARATOR + "*" if parent else "*"))
            if SINGLE_LEVEL in parent:
                patterns.append(self._pattern(parent))
            elif parent:
                channels.append(self.channel(SEPARATOR.join(parent)))
        else:
            patterns.append(self._pattern(levels))
        everywhere = Interest(patterns=tuple(patterns))
        result = {shard: everywhere for shard in range(self.shard_count)}
        for channel in channels:
            shard = self.shard_of(channel[len(self.channel_prefix) :])
            result[shard] = Interest((channel,), everywhere.patterns)
        return result

    def _pattern(self, levels: list[str]) -> str:
        """A glob for the levels, "+" matching any level (and more: filtered locally)."""
        glob = SEPARATOR.join(
            "*" if level == SINGLE_LEVEL else level.translate(_GLOB_SPECIAL) for level in levels
        )
        return self.channel_prefix.translate(_GLOB_SPECIAL) + glob


class InterestCounts:
    """How many local filters want each channel or pattern of one shard."""

    def __init__(self) -> None:
        self.channels: Counter[str] = Counter()
        self.patterns: Counter[str] = Counter()

    def add(self, interest: Interest) -> Interest:
        """Count it in; what is new (to subscribe to)."""
        return Interest(
            _add(self.channels, interest.channels), _add(self.patterns, interest.patterns)
        )

    def remove(self, interest: Interest) -> Interest:
        """Count it out; what nobody wants any more (to unsubscribe from)."""
        return Interest(
            _remove(self.channels, interest.channels), _remove(self.patterns, interest.patterns)
        )


def _add(counts: Counter[str], names: tuple[str, ...]) -> tuple[str, ...]:
    new = []
    for name in names:
        counts[name] += 1
        if counts[name] == 1:
            new.append(name)
    return tuple(new)


def _remove(counts: Counter[str], names: tuple[str, ...]) -> tuple[str, ...]:
    gone = []
    for name in names:
        counts[name] -= 1
        if counts[name] <= 0:
            del counts[name]
            gone.append(name)
    return tuple(gone)

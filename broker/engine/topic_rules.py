"""Which ``[[topics]]`` table applies to a topic: the first whose filter matches (no I/O)."""

import math
from collections.abc import Sequence

from ..config.schema import TopicConfig
from ..core.topics import matches, overlaps

# Topics remembered with their table; past this the memo starts over.
CACHE_SIZE = 10_000


class TopicRules:
    def __init__(self, tables: Sequence[TopicConfig]) -> None:
        self.tables = tuple(tables)
        self._cache: dict[str, TopicConfig | None] = {}

    def lookup(self, topic: str) -> TopicConfig | None:
        if not self.tables:
            return None
        try:
            return self._cache[topic]
        except KeyError:
            pass
        found = next((table for table in self.tables if matches(table.filter, topic)), None)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[topic] = found
        return found

    def history_possible(self, topic_filter: str) -> bool:
        """Whether some topic the filter matches may have history."""
        return any(
            table.history_size and overlaps(table.filter, topic_filter) for table in self.tables
        )

    def shortest_ttl(self, topic_filter: str) -> float:
        """The shortest ``history_ttl`` of the tables that may apply (inf: none has one)."""
        return min(
            (
                table.history_ttl
                for table in self.tables
                if table.history_size and table.history_ttl and overlaps(table.filter, topic_filter)
            ),
            default=math.inf,
        )

"""Which subscribers want a topic: a dict for exact filters, a trie for wildcards.

Publishing costs one dict lookup plus a walk over the levels of the topic, so it
does not grow with the number of unrelated subscriptions.
"""

import heapq
from collections.abc import Collection
from typing import Generic, TypeVar

from .topics import MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL, has_wildcard, is_reserved

S = TypeVar("S")


class _Node(Generic[S]):
    __slots__ = ("below", "children", "exact")

    def __init__(self) -> None:
        # "+" is stored as an ordinary child key: it cannot be a literal level.
        self.children: dict[str, _Node[S]] = {}
        self.exact: set[S] = set()  # filters ending at this node
        self.below: set[S] = set()  # filters "<this node>/#"

    def is_empty(self) -> bool:
        return not (self.children or self.exact or self.below)


class SubscriptionIndex(Generic[S]):
    """Maps valid filters to subscribers; `match` gives each subscriber once."""

    def __init__(self) -> None:
        # A filter's one subscriber itself, or a set of several: most exact filters (a
        # user's own topic, a device's) have one, and an empty set alone is 216 bytes.
        self._exact: dict[str, S | set[S]] = {}
        self._root: _Node[S] = _Node()
        self._wildcards = 0

    def add(self, topic_filter: str, subscriber: S) -> None:
        if not has_wildcard(topic_filter):
            held = self._exact.get(topic_filter)
            if held is None:
                self._exact[topic_filter] = subscriber
            elif type(held) is set:
                held.add(subscriber)
            elif held is not subscriber:
                self._exact[topic_filter] = {held, subscriber}  # type: ignore[arg-type]
            return
        node = self._root
        levels = topic_filter.split(SEPARATOR)
        multi = levels[-1] == MULTI_LEVEL
        for level in levels[:-1] if multi else levels:
            node = node.children.setdefault(level, _Node())
        target = node.below if multi else node.exact
        if subscriber not in target:
            target.add(subscriber)
            self._wildcards += 1

    def remove(self, topic_filter: str, subscriber: S) -> None:
        if not has_wildcard(topic_filter):
            held = self._exact.get(topic_filter)
            if held is subscriber:
                del self._exact[topic_filter]
            elif type(held) is set:
                held.discard(subscriber)
                if len(held) == 1:
                    self._exact[topic_filter] = next(iter(held))
            return
        levels = topic_filter.split(SEPARATOR)
        multi = levels[-1] == MULTI_LEVEL
        path = levels[:-1] if multi else levels
        nodes = [self._root]
        for level in path:
            child = nodes[-1].children.get(level)
            if child is None:
                return
            nodes.append(child)
        target = nodes[-1].below if multi else nodes[-1].exact
        if subscriber not in target:
            return
        target.discard(subscriber)
        self._wildcards -= 1
        for depth in range(len(path), 0, -1):
            if not nodes[depth].is_empty():
                break
            del nodes[depth - 1].children[path[depth - 1]]

    def match(self, topic: str) -> Collection[S]:
        """Every subscriber with at least one filter matching the (valid) topic, once
        each; a collection of its own, which later subscriptions do not change."""
        held = self._exact.get(topic)
        if not self._wildcards:
            if held is None:
                return ()
            return set(held) if type(held) is set else (held,)  # type: ignore[return-value]
        result: set[S] = set()
        if held is not None:
            if type(held) is set:
                result |= held
            else:
                result.add(held)  # type: ignore[arg-type]
        levels = topic.split(SEPARATOR)
        depth_end = len(levels)
        reserved = is_reserved(topic)
        stack: list[tuple[_Node[S], int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            if node.below and not (reserved and depth == 0):
                result |= node.below
            if depth == depth_end:
                result |= node.exact
                continue
            child = node.children.get(levels[depth])
            if child is not None:
                stack.append((child, depth + 1))
            if not (reserved and depth == 0):
                plus = node.children.get(SINGLE_LEVEL)
                if plus is not None:
                    stack.append((plus, depth + 1))
        return result

    def __len__(self) -> int:
        return self._wildcards + sum(map(_count, self._exact.values()))

    def busiest(self, count: int) -> list[tuple[str, int]]:
        """The ``count`` filters with the most subscribers, most first (walks everything:
        for statistics)."""
        found = [(topic_filter, _count(held)) for topic_filter, held in self._exact.items()]
        stack: list[tuple[_Node[S], list[str]]] = [(self._root, [])]
        while stack:
            node, levels = stack.pop()
            if node.exact:
                found.append((SEPARATOR.join(levels), len(node.exact)))
            if node.below:
                found.append((SEPARATOR.join([*levels, MULTI_LEVEL]), len(node.below)))
            stack.extend((child, [*levels, level]) for level, child in node.children.items())
        return heapq.nlargest(count, found, key=lambda item: (item[1], item[0]))

    def filter_count(self) -> int:
        """Distinct filters with at least one subscriber (walks the trie: for statistics)."""
        count = len(self._exact)
        stack = [self._root]
        while stack:
            node = stack.pop()
            count += bool(node.exact) + bool(node.below)
            stack.extend(node.children.values())
        return count


def _count(held: object) -> int:
    return len(held) if type(held) is set else 1

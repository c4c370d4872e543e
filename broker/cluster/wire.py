"""What nodes publish to each other through Redis pub/sub (no I/O).

``NODE SEQ KIND\\n`` then the JSON the clients get, one document or several (a
node's consecutive publishes to one topic, sent as one; JSON text never holds a raw
newline, so newlines separate them): NODE names the node that published
(it delivered to its own subscribers already and skips its echo), SEQ makes every
publish unique (the same publish reaching a node through two of its subscriptions
arrives twice in a row, byte for byte: the second is dropped), KIND is ``m`` for a
message every node delivers (a topic with history: in Redis' order), ``d`` for one
the publishing node delivered already (it skips its own), ``e`` for a join or leave
event.
"""

import itertools

import attrs

MESSAGE = b"m"
DELIVERED = b"d"
EVENT = b"e"


@attrs.frozen
class NodeMessage:
    """One publish of a node, as another receives it."""

    node: bytes
    kind: bytes
    payload: bytes


class Headers:
    """Headers for one node's publishes."""

    def __init__(self, node: str) -> None:
        self.node = node.encode()
        self._prefix = self.node + b" "
        self._seq = itertools.count()

    def next(self, kind: bytes) -> bytes:
        return self._prefix + str(next(self._seq)).encode() + b" " + kind + b"\n"


def parse(data: bytes) -> NodeMessage | None:
    """The publish, or None for anything malformed (another program on the channel)."""
    header, separator, payload = data.partition(b"\n")
    fields = header.split(b" ")
    if not separator or len(fields) != 3 or fields[2] not in (MESSAGE, DELIVERED, EVENT):
        return None
    return NodeMessage(fields[0], fields[2], payload)


def join(header: bytes, payloads: list[bytes]) -> bytes:
    return header + b"\n".join(payloads)


def payloads(received: NodeMessage) -> list[bytes]:
    return received.payload.split(b"\n")

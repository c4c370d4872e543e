"""What the broker sends a client, decoded (no I/O): one path for every frame, replays
in history replies included (docs/protocol.md)."""

import json
from collections.abc import Mapping
from typing import Any

import attrs

from ..wire import protocol

# A delivery's own fields; any other was added by a plugin and goes to `Message.meta`.
ENVELOPE = frozenset({"op", "topic", "data", "data_b64", "pos"})


@attrs.frozen
class Message:
    topic: str
    data: Any
    pos: str | None = None  # on topics with history: where the stream is
    meta: Mapping[str, Any] = attrs.field(factory=dict)  # fields plugins added


@attrs.frozen
class Membership:
    """``join`` or ``leave`` on a topic with ``join_leave``."""

    op: str
    topic: str
    client_id: str
    user: str | None


@attrs.frozen
class RecoveryFailed:
    """After a reconnect the broker could not replay all that ``topic_filter`` missed: it
    comes after the messages the broker still had, and the application should reload its
    state (what follows in the stream is complete again)."""

    topic_filter: str


@attrs.frozen
class ServerSubscription:
    """The server subscribed this client to ``topic`` (``op`` "subscribed", with ``pos``
    on filters with history) or ended such a subscription ("unsubscribed"):
    docs/protocol.md, server-side subscriptions."""

    op: str
    topic: str
    pos: str | None = None


Event = Message | Membership | RecoveryFailed | ServerSubscription


def server_subscription(fields: Mapping[str, Any]) -> ServerSubscription:
    return ServerSubscription(fields["op"], fields["topic"], fields.get("pos"))


def decode(text: str) -> dict[str, Any]:
    """One frame from the broker: always a JSON object with ``op``."""
    fields: dict[str, Any] = json.loads(text)
    return fields


def message(fields: Mapping[str, Any]) -> Message:
    """A delivery (``op`` message), or one message of a history reply."""
    meta = {key: value for key, value in fields.items() if key not in ENVELOPE}
    data = protocol.data_field(fields) if "data_b64" in fields else fields.get("data")
    return Message(fields["topic"], data, fields.get("pos"), meta)


def membership(fields: Mapping[str, Any]) -> Membership:
    """A ``join`` or ``leave`` event."""
    member = fields.get("client", {})
    return Membership(fields["op"], fields["topic"], member.get("client_id"), member.get("user"))

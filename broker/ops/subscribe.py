"""``subscribe`` (with recovery from a position) and ``unsubscribe``."""

import json
from typing import Any

from .. import protocol
from ..frames import frame_payload
from ..pipeline import RESERVED_ENVELOPE_FIELDS
from ..plugin import Publication
from ..protocol import ErrorCode, ProtocolError
from ..topics import TopicError, check_filter, has_wildcard
from .session import REPLIED, Replied, Session


def checked_filter(session: Session, topic_filter: str) -> str:
    try:
        check_filter(topic_filter, session.limits.max_topic_length)
    except TopicError as error:
        raise ProtocolError(ErrorCode.INVALID_TOPIC, str(error)) from None
    return topic_filter


async def subscribe(session: Session, request: protocol.Subscribe) -> Replied | None:
    topic_filter = checked_filter(session, request.topic)
    held = topic_filter in session.subscriptions
    pipeline = session.pipeline()
    if not held:  # a subscription already held was authorized when it was made
        if len(session.subscriptions) >= session.limits.max_subscriptions:
            raise ProtocolError(
                ErrorCode.LIMIT_EXCEEDED,
                f"at most {session.limits.max_subscriptions} subscriptions per connection",
            )
        await pipeline.authorize_subscribe(session.client, topic_filter)
        if session.closing or topic_filter in session.subscriptions:
            return None
    else:
        # Subscribed again (to recover, or for the position now): taken down and up in
        # one step, so that nothing comes twice and nothing is missed.
        session.engine.unsubscribe(topic_filter, session)
    session.subscriptions.add(topic_filter)
    async with session.catching_up():
        recovery = await session.engine.subscribe(topic_filter, session, request.since)
        for frame in recovery.frames:
            if pipeline.filters_deliveries and not await pipeline.filter_delivery(
                session.client, _publication(frame)
            ):
                continue
            await session.send_frame(frame)
        fields: dict[str, Any] = {}
        if request.since is not None:
            fields["recovered"] = recovery.recovered
        if recovery.position is not None:
            fields["pos"] = recovery.position
        # The ack goes before the live messages waiting aside.
        if request.id is not None:
            await session.send(protocol.encode_ack(request.id, **fields))
    if not held and not has_wildcard(topic_filter):
        await session.engine.join(topic_filter, session.client)
    return REPLIED


def _publication(frame: bytes) -> Publication:
    """A retained delivery as `filter_delivery` hooks see publications."""
    envelope = json.loads(frame_payload(frame))
    meta = {k: v for k, v in envelope.items() if k not in RESERVED_ENVELOPE_FIELDS}
    return Publication(envelope["topic"], envelope["data"], meta)


async def unsubscribe(session: Session, request: protocol.Unsubscribe) -> None:
    topic_filter = checked_filter(session, request.topic)
    if topic_filter in session.subscriptions:
        session.subscriptions.discard(topic_filter)
        session.engine.unsubscribe(topic_filter, session)
        if not has_wildcard(topic_filter):
            await session.engine.leave(topic_filter, session.client)

"""``subscribe`` (with recovery from a position) and ``unsubscribe``."""

from typing import Any

import trio

from ..core.topics import TopicError, check_filter, has_wildcard
from ..engine.publishing import publication_of
from ..wire import protocol
from ..wire.frames import frame_payload
from ..wire.protocol import ErrorCode, ProtocolError
from .session import REPLIED, Replied, Session


def checked_filter(session: Session, topic_filter: str) -> str:
    try:
        check_filter(topic_filter, session.limits.max_topic_length)
    except TopicError as error:
        raise ProtocolError(ErrorCode.INVALID_TOPIC, str(error)) from None
    return topic_filter


async def subscribe(
    session: Session, request: protocol.Subscribe, *, by_server: bool = False
) -> Replied | None:
    """A subscription the client asked for, or, ``by_server``, one the application's
    backend made for it (no authorize_subscribe; the client hears ``subscribed``)."""
    async with session.changing_subscriptions():
        return await _subscribe(session, request, by_server)


async def _subscribe(
    session: Session, request: protocol.Subscribe, by_server: bool
) -> Replied | None:
    topic_filter = checked_filter(session, request.topic)
    held = topic_filter in session.subscriptions
    pipeline = session.pipeline()
    if not held:  # a subscription already held was authorized when it was made
        if len(session.subscriptions) >= session.limits.max_subscriptions:
            raise ProtocolError(
                ErrorCode.LIMIT_EXCEEDED,
                f"at most {session.limits.max_subscriptions} subscriptions per connection",
            )
        if not by_server:
            await pipeline.authorize_subscribe(session.client, topic_filter)
        if session.closing or topic_filter in session.subscriptions:
            return None
    else:
        # Subscribed again (to recover, or for the position now): taken down and up in
        # one step, so that nothing comes twice and nothing is missed.
        session.engine.unsubscribe(topic_filter, session)
    session.subscriptions.add(topic_filter)
    async with session.catching_up() as catch_up:
        try:
            recovery = await session.engine.subscribe(topic_filter, session, request.since)
        except BaseException:
            # The engine took nothing: the filter is not held (any more).
            session.subscriptions.discard(topic_filter)
            if held and not has_wildcard(topic_filter):
                with trio.CancelScope(shield=True):
                    await session.engine.leave(topic_filter, session.client)
            raise
        catch_up.snapshot = recovery.snapshot
        for frame in recovery.frames:
            if pipeline.filters_deliveries and not await pipeline.filter_delivery(
                session.client, publication_of(frame_payload(frame))
            ):
                continue
            await session.send_frame(frame)
        fields: dict[str, Any] = {}
        if request.since is not None:
            fields["recovered"] = recovery.recovered
        if recovery.position is not None:
            fields["pos"] = recovery.position
        # The ack goes before the live messages waiting aside.
        if by_server:
            await session.send(protocol.encode_subscribed(topic_filter, **fields))
        elif request.id is not None:
            await session.send(protocol.encode_ack(request.id, **fields))
    if not held:
        client = session.client
        session.engine.events.subscription(
            "subscribe", client.client_id, client.identity.user, topic_filter
        )
        if not has_wildcard(topic_filter):
            await session.engine.join(topic_filter, client)
    return REPLIED


async def unsubscribe(
    session: Session, request: protocol.Unsubscribe, *, by_server: bool = False
) -> bool:
    """Whether the filter was held; ``by_server``, the client hears ``unsubscribed``."""
    async with session.changing_subscriptions():
        return await _unsubscribe(session, request, by_server)


async def _unsubscribe(session: Session, request: protocol.Unsubscribe, by_server: bool) -> bool:
    topic_filter = checked_filter(session, request.topic)
    if topic_filter not in session.subscriptions:
        return False
    session.subscriptions.discard(topic_filter)
    client = session.client
    session.engine.events.subscription(
        "unsubscribe", client.client_id, client.identity.user, topic_filter
    )
    session.engine.unsubscribe(topic_filter, session)
    if by_server:
        await session.send(protocol.encode_unsubscribed(topic_filter))
    if not has_wildcard(topic_filter):
        await session.engine.leave(topic_filter, session.client)
    return True

"""Subscriptions the application's backend makes for a client: its connect-time
``channels`` (`Identity.channels`), without authorize_subscribe; the client hears
``subscribed`` (docs/protocol.md)."""

import logging

from ..wire import protocol
from ..wire.protocol import ProtocolError
from .dispatch import send_error
from .session import Session
from .subscribe import subscribe, unsubscribe

log = logging.getLogger("broker.connection")


async def subscribe_channels(session: Session, channels: tuple[str, ...]) -> None:
    for channel in channels:
        if session.closing:
            return
        await subscribe_for(session, channel)


async def subscribe_for(session: Session, topic_filter: str, since: str | None = None) -> bool:
    """Subscribe the client to ``topic_filter`` (recovering from ``since``); False (and
    the client told why, in an error without an id) if it could not be."""
    try:
        await subscribe(session, protocol.Subscribe(topic_filter, since=since), by_server=True)
    except ProtocolError as error:  # an invalid filter, a limit, an engine unavailable
        log.info(
            "client %s: server-side subscription to %r failed: %s",
            session.client.client_id,
            topic_filter,
            error.message,
        )
        message = f"subscribing to {topic_filter[:100]!r}: {error.message}"
        await send_error(session, error.code, message, None)
        return False
    return True


async def unsubscribe_for(session: Session, topic_filter: str) -> bool:
    """End the client's subscription to ``topic_filter``; whether it held one."""
    try:
        return await unsubscribe(session, protocol.Unsubscribe(topic_filter), by_server=True)
    except ProtocolError:  # not a filter: nobody holds it
        return False

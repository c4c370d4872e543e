"""``presence``: who is subscribed to a topic exactly, on topics with presence."""

from ..engine.publishing import check_valid_topic
from ..wire import protocol
from ..wire.protocol import ErrorCode, ProtocolError
from .session import Session


async def presence(session: Session, request: protocol.Presence) -> bytes:
    check_valid_topic(request.topic, session.limits.max_topic_length)
    if not session.engine.has_presence(request.topic):
        raise ProtocolError(ErrorCode.FORBIDDEN, f"no presence on {request.topic!r}")
    await session.pipeline().authorize_subscribe(session.client, request.topic)
    clients = await session.engine.presence(request.topic)
    return protocol.encode_presence(request.id, clients)

"""``presence``: who is subscribed to a topic exactly, on topics with presence."""

from .. import protocol
from ..protocol import ErrorCode, ProtocolError
from ..topics import TopicError, check_topic
from .session import Session


async def presence(session: Session, request: protocol.Presence) -> bytes:
    try:
        check_topic(request.topic, session.limits.max_topic_length)
    except TopicError as error:
        raise ProtocolError(ErrorCode.INVALID_TOPIC, str(error)) from None
    if not session.engine.has_presence(request.topic):
        raise ProtocolError(ErrorCode.FORBIDDEN, f"no presence on {request.topic!r}")
    await session.pipeline().authorize_subscribe(session.client, request.topic)
    clients = await session.engine.presence(request.topic)
    return protocol.encode_presence(request.id, clients)

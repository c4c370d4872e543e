"""``history``: the newest retained messages of a topic or filter."""

from ..wire import protocol
from .session import Session
from .subscribe import checked_filter


async def history(session: Session, request: protocol.History) -> bytes:
    topic_filter = checked_filter(session, request.topic)
    # Who may subscribe to it may read what was published there.
    await session.pipeline().authorize_subscribe(session.client, topic_filter)
    most = session.limits.max_history_request
    limit = most if request.limit is None else min(request.limit, most)
    page = await session.engine.history(
        topic_filter, limit, session.limits.max_queued_bytes, request.since
    )
    return protocol.encode_history(request.id, page.reply())

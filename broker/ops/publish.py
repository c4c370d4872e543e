"""``publish``: the same path as every publisher's (`broker.publishing`)."""

from .. import protocol, publishing
from .session import Session


async def publish(session: Session, request: protocol.Publish) -> None:
    # Meanwhile nothing is read, pongs included: the wait is not the client's fault.
    async with session.held():
        await publishing.publish(
            session.client,
            request.topic,
            request.data,
            pipeline=session.pipeline(),
            engine=session.engine,
            max_topic_length=session.limits.max_topic_length,
        )

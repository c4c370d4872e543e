"""``publish``: the same path as every publisher's (`broker.engine.publishing`)."""

from ..engine import publishing
from ..wire import protocol
from ..wire.frames import text_frame
from ..wire.protocol import ProtocolError
from .session import Session


async def publish(session: Session, request: protocol.Publish) -> None:
    on_failure = None
    if request.id is None:
        # Nobody waits for an ack: the engine may take the next request before this one
        # is through, and a failure comes as an error without an id.
        def on_failure(error: ProtocolError) -> None:
            session.stats.errors[error.code.value] += 1
            session.offer(text_frame(protocol.encode_error(error.code, error.message, None)))

    # Meanwhile nothing is read, pongs included: the wait is not the client's fault.
    with session.held():
        await publishing.publish(
            session.client,
            request.topic,
            request.data,
            pipeline=session.pipeline(),
            engine=session.engine,
            max_topic_length=session.limits.max_topic_length,
            on_failure=on_failure,
        )

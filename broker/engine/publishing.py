"""A publish, from whoever it comes (a WebSocket client, the HTTP API): the same rules.

Validate the topic, run the plugins' publish hooks, hand it to the engine (which
frames it once, fans it out and counts it).
"""

import json
from collections.abc import Callable
from typing import Any

from ..core.topics import TopicError, check_topic, is_reserved
from ..plugin import Client, Publication
from ..plugin_host.pipeline import RESERVED_ENVELOPE_FIELDS, Pipeline
from ..wire import protocol
from ..wire.protocol import ErrorCode, ProtocolError
from .interface import Engine
from .router import Subscriber


def check_valid_topic(topic: str, max_topic_length: int) -> None:
    """Raise ProtocolError (``invalid_topic``) unless ``topic`` is a valid topic."""
    try:
        check_topic(topic, max_topic_length)
    except TopicError as error:
        raise ProtocolError(ErrorCode.INVALID_TOPIC, str(error)) from None


def check_publish_topic(topic: str, max_topic_length: int) -> None:
    """Raise ProtocolError unless clients may publish to ``topic``."""
    check_valid_topic(topic, max_topic_length)
    if is_reserved(topic):
        raise ProtocolError(
            ErrorCode.FORBIDDEN, "topics starting with '$' are reserved for the broker"
        )


def publication_of(payload: bytes) -> Publication:
    """A delivery's JSON as `filter_delivery` hooks see publications (for deliveries
    that were not published here: retained ones, other nodes')."""
    envelope = json.loads(payload)
    meta = {k: v for k, v in envelope.items() if k not in RESERVED_ENVELOPE_FIELDS}
    return Publication(envelope["topic"], protocol.data_field(envelope), meta)


async def publish(
    client: Client,
    topic: str,
    data: Any,
    *,
    pipeline: Pipeline,
    engine: Engine,
    max_topic_length: int,
    on_failure: Callable[[ProtocolError], None] | None = None,
) -> int | None:
    """Publish as ``client``: the number of subscribers reached, None if a plugin dropped it
    (or, with ``on_failure``, if the engine took it and reports a failure there later).

    Raises ProtocolError (no request id), Refuse or PluginFailure; waits while
    subscribers' queues are full (backpressure).
    """
    check_publish_topic(topic, max_topic_length)
    publication = Publication(topic, data)
    if pipeline.authorizes_publishes:
        authorized = await pipeline.authorize_publish(client, publication, max_topic_length)
        if authorized is None:
            return None  # dropped by a plugin: acked, not delivered
        publication = authorized
    accepts = None
    if pipeline.filters_deliveries:
        chosen = publication

        async def accepts(subscriber: Subscriber) -> bool:
            return await pipeline.filter_delivery(subscriber.client, chosen)

    return await engine.publish(publication, accepts, on_failure)

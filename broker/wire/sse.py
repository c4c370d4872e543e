"""Server-Sent Events (no I/O): what a read-only ``GET /sse?topic=F`` stream asks for, the
head of its answer, and each of the broker's deliveries as an event.

A delivery becomes ``id: POS`` (on topics with history: the browser sends it back as
``Last-Event-ID`` when it reconnects, and the broker recovers from it as from ``since``),
``event: message`` and ``data:`` with the delivery's JSON without ``op`` and ``pos``. A
subscription whose recovery was not complete becomes ``event: recovery``. The broker's
other messages (acks, presence events) mean nothing to a read-only stream: they become
nothing. As with MessagePack, the frame converted last is kept: a publish is converted once
for all the streams it reaches.
"""

import json
from collections.abc import Mapping

import attrs

from .frames import LastConverted, frame_payload

# A comment line: proxies see traffic, EventSource ignores it.
HEARTBEAT = b": keep-alive\n\n"
_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_ASCII_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


class BadStream(ValueError):
    """What is wrong with a stream's request (the answer is a 400 saying it)."""


@attrs.frozen
class StreamRequest:
    filters: tuple[str, ...]  # in the order asked, each once
    since: str | None  # Last-Event-ID (a reconnecting browser's), else ?since=


def stream_request(
    query: Mapping[str, tuple[str, ...]], last_event_id: str | None, max_filters: int
) -> StreamRequest:
    """The filters and position a stream asks for (their syntax is checked by the broker,
    as a subscribe's). Parameters other than ``topic`` and ``since`` are left to plugins
    (``token``, say)."""
    filters = tuple(dict.fromkeys(query.get("topic", ())))
    if not filters:
        raise BadStream("name at least one filter: /sse?topic=F (&topic=G...)")
    if len(filters) > max_filters:
        raise BadStream(f"at most {max_filters} filters per stream, got {len(filters)}")
    since_values = query.get("since", ())
    if len(since_values) > 1:
        raise BadStream("since: at most once")
    since = last_event_id or (since_values[0] if since_values else None)
    return StreamRequest(filters, since or None)


def response_head(allowed_origin: str | None) -> bytes:
    """The 200 that starts a stream; ``allowed_origin``: a page's origin that may read it
    (CORS), when the request came from one."""
    head = [
        "HTTP/1.1 200 OK",
        "Content-Type: text/event-stream; charset=utf-8",
        "Cache-Control: no-cache",
        "X-Accel-Buffering: no",  # nginx: pass each event on at once
        "Connection: close",
    ]
    if allowed_origin is not None:
        head += [f"Access-Control-Allow-Origin: {allowed_origin}", "Vary: Origin"]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def sse_event(frame: bytes) -> bytes:
    """One of the broker's JSON text frames as a stream's event (b"": none)."""
    envelope = json.loads(frame_payload(frame))
    op = envelope.pop("op", None)
    if op == "message":
        position = envelope.pop("pos", None)
        event = "event: message\ndata: " + _DUMPS(envelope) + "\n\n"
        if position is not None:
            event = f"id: {position}\n{event}"
        try:
            return event.encode()
        except UnicodeEncodeError:  # a lone surrogate: escaped, as the JSON frame had it
            event = event.replace(_DUMPS(envelope), _ASCII_DUMPS(envelope))
            return event.encode()
    if op == "subscribed" and envelope.get("recovered") is False:
        recovery = {"recovered": False, "topic": envelope.get("topic")}
        return ("event: recovery\ndata: " + _DUMPS(recovery) + "\n\n").encode()
    return b""


class SseFrames(LastConverted):
    """`sse_event`, once per publish (`LastConverted`)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(sse_event)

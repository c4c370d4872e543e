"""Server-Sent Events without sockets: what a stream asks for, its answer's head, and
deliveries as events."""

import pytest

from broker.wire import protocol
from broker.wire.frames import text_frame
from broker.wire.sse import (
    HEARTBEAT,
    BadStream,
    SseFrames,
    StreamRequest,
    response_head,
    sse_event,
    stream_request,
)


def test_a_stream_asks_for_filters_and_a_position() -> None:
    query = {"topic": ("chat/+", "news", "chat/+"), "since": ("e:1",), "token": ("t",)}
    assert stream_request(query, None, 10) == StreamRequest(("chat/+", "news"), "e:1")
    # A reconnecting browser's Last-Event-ID wins over the page's ?since=.
    assert stream_request(query, "e:9", 10).since == "e:9"
    assert stream_request({"topic": ("a",), "since": ("",)}, "", 10).since is None
    for bad, says in (
        ({}, "at least one filter"),
        ({"topic": ("a", "b", "c")}, "at most 2 filters per stream, got 3"),
        ({"topic": ("a",), "since": ("1", "2")}, "since: at most once"),
    ):
        with pytest.raises(BadStream, match=says):
            stream_request(bad, None, 2)


def test_the_head_of_the_answer() -> None:
    head = response_head("https://app.example.com")
    assert head.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n")
    assert b"Access-Control-Allow-Origin: https://app.example.com\r\nVary: Origin\r\n" in head
    assert head.endswith(b"\r\n\r\n") and b"Access-Control" not in response_head(None)


def test_deliveries_become_events_and_the_rest_nothing() -> None:
    with_position = text_frame(
        protocol.encode_message("chat/a", {"text": "hé\nyo"}, {"from": "b"}, "e:4")
    )
    expected = 'data: {"from":"b","topic":"chat/a","data":{"text":"hé\\nyo"}}'
    assert sse_event(with_position) == f"id: e:4\nevent: message\n{expected}\n\n".encode()
    plain = text_frame(protocol.encode_message("live", b"\x00"))
    assert sse_event(plain) == b'event: message\ndata: {"topic":"live","data_b64":"AA=="}\n\n'
    lone = text_frame(protocol.encode_message("t", "a\ud800"))
    assert b'"data":"a\\ud800"' in sse_event(lone)
    lost = text_frame(protocol.encode_subscribed("chat/+", pos="e:5", recovered=False))
    assert sse_event(lost) == b'event: recovery\ndata: {"recovered":false,"topic":"chat/+"}\n\n'
    for other in (
        protocol.encode_subscribed("chat/+", pos="e:5", recovered=True),
        protocol.encode_ack(1),
        protocol.encode_json({"op": "join", "topic": "t", "client": {}}),
    ):
        assert sse_event(text_frame(other)) == b""
    assert HEARTBEAT.startswith(b":") and HEARTBEAT.endswith(b"\n\n")


def test_a_publish_is_converted_once_for_every_stream() -> None:
    frames = SseFrames()
    delivery = text_frame(protocol.encode_message("t", 1))
    assert frames.frame(delivery) is frames.frame(delivery)

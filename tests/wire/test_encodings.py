"""What a connection speaks, without sockets: the subprotocol choice, MessagePack requests
checked as JSON ones are, and the broker's JSON frames re-encoded once."""

import json

import msgpack
import pytest

from broker.wire import encodings, protocol
from broker.wire.frames import frame_payload, text_frame
from broker.wire.protocol import ProtocolError


def test_the_first_known_subprotocol_in_the_clients_order() -> None:
    assert encodings.choose_subprotocol(["trio-broker.msgpack", "trio-broker.json"]) == (
        "trio-broker.msgpack"
    )
    assert encodings.choose_subprotocol(["x", "trio-broker.json"]) == "trio-broker.json"
    assert encodings.choose_subprotocol(["Trio-Broker.MsgPack"]) is None  # case-sensitive
    assert encodings.choose_subprotocol([]) is None


def test_broker_frames_become_the_same_maps_with_binary_data_as_bin() -> None:
    delivery = text_frame(protocol.encode_message("t", b"\x00\x01", {"from": "a"}, "e:1"))
    frame = encodings.msgpack_frame(delivery)
    assert frame[0] == 0x82  # FIN, binary
    assert msgpack.unpackb(frame_payload(frame)) == {
        "from": "a",
        "op": "message",
        "topic": "t",
        "data": b"\x00\x01",
        "pos": "e:1",
    }
    history = {"op": "history", "messages": [{"topic": "t", "data_b64": "AA=="}], "pos": "e:2"}
    decoded = msgpack.unpackb(
        frame_payload(encodings.msgpack_frame(text_frame(json.dumps(history).encode())))
    )
    assert decoded["messages"] == [{"topic": "t", "data": b"\x00"}]
    # A lone surrogate, which JSON escapes, cannot be UTF-8: it becomes U+FFFD.
    lone = text_frame(protocol.encode_message("t", {"a\udc00": "a\ud800b"}))
    decoded = msgpack.unpackb(frame_payload(encodings.msgpack_frame(lone)))
    assert decoded["data"] == {"a\ufffd": "a\ufffdb"}


def test_the_frame_re_encoded_last_is_kept_for_the_next_subscriber() -> None:
    frames = encodings.MsgpackFrames()
    one = text_frame(protocol.encode_message("t", "x"))
    first = frames.frame(one)
    assert frames.frame(one) is first
    other = text_frame(protocol.encode_message("t", "x"))  # equal, but another publish
    assert frames.frame(other) == first and frames.frame(other) is not first


def test_requests_decode_as_json_ones_would() -> None:
    request = protocol.request_from(
        encodings.decode_msgpack(
            msgpack.packb({"op": "publish", "topic": "t", "data": b"\x01", "id": 1})
        )
    )
    assert request == protocol.Publish("t", b"\x01", 1)
    for bad in (b"", b"\x91", msgpack.packb({"op": "ping", "x": float("inf")})):
        with pytest.raises(ProtocolError):
            encodings.decode_msgpack(bad)

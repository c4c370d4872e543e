import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.wire import protocol
from broker.wire.protocol import ErrorCode, ProtocolError, Publish, Subscribe, parse_request


def test_parse_each_op() -> None:
    assert parse_request('{"op":"subscribe","topic":"a","id":1}') == Subscribe("a", 1)
    assert parse_request('{"op":"unsubscribe","topic":"a"}') == protocol.Unsubscribe("a", None)
    assert parse_request('{"op":"publish","topic":"a","data":null,"id":"x"}') == Publish(
        "a", None, "x"
    )
    assert parse_request('{"op":"ping"}') == protocol.Ping(None)


@pytest.mark.parametrize(
    ("text", "message", "request_id"),
    [
        ("nope", "not valid JSON", None),
        ("[1]", "JSON object", None),
        ('"op"', "JSON object", None),
        ("{}", "'op'", None),
        ('{"op":1,"id":3}', "'op'", 3),
        ('{"op":"dance","id":"d"}', "unknown op", "d"),
        ('{"op":"subscribe","id":2}', "'topic'", 2),
        ('{"op":"subscribe","topic":5}', "'topic'", None),
        ('{"op":"publish","topic":"a","id":4}', "'data'", 4),
        ('{"op":"ping","topic":"a","id":5}', "unknown field", 5),
        ('{"op":"ping","id":true}', "'id'", None),
        ('{"op":"ping","id":1.5}', "'id'", None),
        ('{"op":"ping","id":[1]}', "'id'", None),
        ('{"op":"ping","id":9007199254740992}', "'id'", None),
        ('{"op":"ping","id":"' + "x" * 129 + '"}', "'id'", None),
        ('{"op":"publish","topic":"a","data":NaN}', "not valid JSON", None),
        ('{"op":"publish","topic":"a","data":1e999}', "not valid JSON", None),
        ('{"op":"publish","topic":"a","data":' + "9" * 5000 + "}", "not valid JSON", None),
        ("[" * 100_000 + "]" * 100_000, "", None),
        ('{"op":"publish","topic":"a","data":1,"data_b64":"AA==","id":6}', "together", 6),
        ('{"op":"publish","topic":"a","data_b64":"not base64!","id":7}', "base64", 7),
        ('{"op":"publish","topic":"a","data_b64":"AA","id":8}', "base64", 8),  # no padding
        ('{"op":"publish","topic":"a","data_b64":5,"id":9}', "base64", 9),
    ],
)
def test_bad_requests(text: str, message: str, request_id: object) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(text)
    assert caught.value.code is ErrorCode.BAD_REQUEST
    assert message in caught.value.message
    assert caught.value.request_id == request_id


def test_encoders_are_compact_json() -> None:
    assert protocol.encode_ack(7) == b'{"op":"ack","id":7}'
    assert protocol.encode_pong(None) == b'{"op":"pong"}'
    assert json.loads(protocol.encode_error(ErrorCode.FORBIDDEN, "no", "r")) == {
        "op": "error",
        "code": "forbidden",
        "message": "no",
        "id": "r",
    }
    welcome = json.loads(protocol.encode_welcome("c1", "trio-broker/1.0"))
    assert welcome == {"op": "welcome", "client_id": "c1", "server": "trio-broker/1.0"}


@given(
    client_id=st.text(),
    server=st.text(),
    expires_at=st.none() | st.floats(min_value=0, max_value=2**40),
    request_id=st.integers() | st.text() | st.booleans(),
)
def test_formatted_welcome_and_ack_are_what_encode_json_makes(
    client_id: str, server: str, expires_at: float | None, request_id: int | str
) -> None:
    welcome: dict[str, object] = {"op": "welcome", "client_id": client_id, "server": server}
    if expires_at is not None:
        welcome["expires_at"] = int(expires_at)
    assert protocol.encode_welcome(client_id, server, expires_at) == protocol.encode_json(welcome)
    ack = {"op": "ack", "id": request_id}
    assert protocol.encode_ack(request_id) == protocol.encode_json(ack)


def test_message_round_trips_data() -> None:
    data = {"text": "héllo ☃", "n": [1, 2.5, None, True], "nested": {"a": {}}}
    encoded = protocol.encode_message("a/b", data)
    assert "héllo".encode() in encoded
    assert json.loads(encoded) == {"op": "message", "topic": "a/b", "data": data}


def test_lone_surrogates_are_escaped_not_fatal() -> None:
    request = parse_request('{"op":"publish","topic":"a","data":"\\ud800"}')
    assert isinstance(request, Publish)
    encoded = protocol.encode_message(request.topic, request.data)
    encoded.decode("utf-8")
    assert json.loads(encoded)["data"] == "\ud800"


@pytest.mark.parametrize(
    "request_",
    [
        protocol.Subscribe("chat/#", id=1),
        protocol.Subscribe("chat/#", id="a", since="5-0"),
        protocol.Unsubscribe("chat/#", id=2),
        protocol.Publish("chat/lobby", {"text": "é ☃"}, id=3),
        protocol.Publish("chat/lobby", None, id=4),
        protocol.Publish("sensor/1", b"\x00\xffbinary", id=5),
        protocol.Publish("sensor/1", b""),
        protocol.Ping(id=5),
        protocol.Ping(),
        protocol.History("chat/#", limit=10, id=6),
        protocol.History("chat/#", id=7),
        protocol.History("chat/#", limit=2, id=8, since="e:1"),
        protocol.Presence("chat/lobby", id=8),
        protocol.Refresh("a.b.c", id=9),
    ],
)
def test_an_encoded_request_parses_back_to_itself(request_: protocol.Request) -> None:
    text = protocol.encode_request(request_)
    assert parse_request(text) == request_
    assert "null" not in text.replace('"data": null', "")  # unset options are left out


def test_binary_data_goes_as_base64_both_ways() -> None:
    request = parse_request('{"op":"publish","topic":"t","data_b64":"AP8=","id":1}')
    assert request == protocol.Publish("t", b"\x00\xff", 1)
    delivery = protocol.encode_message("t", b"\x00\xff", {"from": "x"}, pos="e:1")
    assert json.loads(delivery) == {
        "from": "x",
        "op": "message",
        "topic": "t",
        "data_b64": "AP8=",
        "pos": "e:1",
    }
    assert protocol.data_field(json.loads(delivery)) == b"\x00\xff"
    assert protocol.parse_publish({"topic": "t", "data_b64": ""}) == protocol.Publish("t", b"")
    with pytest.raises(ProtocolError, match="'data_b64' must be"):
        protocol.parse_publish({"topic": "t", "data_b64": "%%"})

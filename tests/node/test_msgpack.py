"""The trio-broker.msgpack subprotocol, with websockets as the client and the msgpack
library encoding and decoding: the same requests and replies as JSON, binary data as
bin, JSON and MessagePack subscribers side by side, and every malformed input refused."""

import base64
import math
from typing import Any

import msgpack
import pytest

from tests.conftest import Connect, StartBroker
from tests.wsclient import Rejected, WsClient

MSGPACK = ["trio-broker.msgpack"]
TOPICS = [{"filter": "t/#", "history_size": 10}]


async def msgpack_client(connect: Connect, broker: Any, **options: Any) -> WsClient:
    client = await connect(broker, subprotocols=MSGPACK, **options)
    assert client.protocol.subprotocol == "trio-broker.msgpack"
    return client


async def test_requests_replies_and_deliveries_in_messagepack_beside_json(
    either_engine: StartBroker, connect: Connect
) -> None:
    broker = await either_engine(topics=TOPICS)
    packed = await msgpack_client(connect, broker)
    plain = await connect(broker)
    ack = await packed.request_msgpack({"op": "subscribe", "topic": "t/#", "id": 1})
    assert ack["op"] == "ack" and ack["id"] == 1 and isinstance(ack["pos"], str)
    await plain.request({"op": "subscribe", "topic": "t/#", "id": 1})
    blob = bytes(range(256))
    for data in ({"text": "hé", "n": [1, 2.5, None, True]}, blob):
        await packed.send_msgpack({"op": "publish", "topic": "t/a", "data": data, "id": 2})
        # Its own delivery and the ack, in either order.
        got = {m["op"]: m for m in [await packed.recv_msgpack() for _ in range(2)]}
        assert got["ack"] == {"op": "ack", "id": 2}
        delivered = got["message"]
        assert (delivered["op"], delivered["topic"], delivered["data"]) == ("message", "t/a", data)
        as_json = await plain.recv()
        if isinstance(data, bytes):
            assert base64.b64decode(as_json["data_b64"]) == data and "data" not in as_json
        else:
            assert as_json["data"] == data
    # A JSON publisher's binary data reaches a MessagePack subscriber as bin.
    await plain.request({"op": "publish", "topic": "t/b", "data_b64": "AP8=", "id": 3})
    assert (await packed.recv_msgpack())["data"] == b"\x00\xff"
    history = await packed.request_msgpack({"op": "history", "topic": "t/#", "id": 4})
    assert [m["data"] for m in history["messages"]][1:] == [blob, b"\x00\xff"]
    pong = await packed.request_msgpack({"op": "ping", "id": "p"})
    assert pong == {"op": "pong", "id": "p"}


async def test_the_subprotocol_is_chosen_from_the_offer_or_refused_with_the_list(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker()
    explicit = await connect(broker, subprotocols=["trio-broker.json"])
    assert explicit.protocol.subprotocol == "trio-broker.json"
    assert (await explicit.request({"op": "ping", "id": 1}))["op"] == "pong"
    either = await connect(broker, welcome=False, subprotocols=["mqtt", "trio-broker.msgpack"])
    assert either.protocol.subprotocol == "trio-broker.msgpack"
    assert (await either.recv_msgpack())["op"] == "welcome"
    none = await connect(broker)
    assert none.protocol.subprotocol is None
    with pytest.raises(Rejected) as refused:
        await connect(broker, subprotocols=["mqtt", "wamp.2.json"])
    assert refused.value.status == 400
    assert b"unknown subprotocol(s) mqtt, wamp.2.json: this broker speaks " in refused.value.body
    assert b"trio-broker.json, trio-broker.msgpack" in refused.value.body


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"\xc1", "not valid MessagePack"),  # a byte MessagePack never uses
        (msgpack.packb([1, 2]), "must be a MessagePack map"),
        (msgpack.packb({"op": "ping", "id": 1}) + b"\x00", "not valid MessagePack"),
        (msgpack.packb({1: 2}), "not valid MessagePack"),  # keys must be strings
        (msgpack.packb({"op": "publish", "topic": "t", "data": {"x": b"\x00"}}), "binary values"),
        (
            msgpack.packb({"op": "publish", "topic": "t", "data": msgpack.ExtType(5, b"")}),
            "ExtType",
        ),
        (msgpack.packb({"op": "publish", "topic": "t", "data": math.nan}), "finite"),
        (msgpack.packb({"op": "publish", "topic": "t", "data": [[[]]] * 1}), None),  # fine
        (msgpack.packb({"op": "ping", "id": b"\x01"}), "binary values"),
    ],
)
async def test_malformed_messagepack_is_a_bad_request_and_the_connection_stays(
    start_broker: StartBroker, connect: Connect, payload: bytes, says: str | None
) -> None:
    broker = await start_broker()
    client = await msgpack_client(connect, broker)
    await client.send_bytes(payload)
    if says is not None:
        error = await client.recv_msgpack()
        assert error["op"] == "error" and error["code"] == "bad_request"
        assert says in error["message"], error
    assert await client.request_msgpack({"op": "ping", "id": 9}) == {"op": "pong", "id": 9}


async def test_nesting_text_frames_and_binary_frames_on_the_wrong_connection(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker()
    client = await msgpack_client(connect, broker)
    deep: Any = 1
    for _ in range(70):
        deep = [deep]
    await client.send_msgpack({"op": "publish", "topic": "t", "data": deep, "id": 1})
    assert "nest more than 64 deep" in (await client.recv_msgpack())["message"]
    await client.send({"op": "ping", "id": 2})  # JSON in a text frame
    refused = await client.recv_msgpack()
    assert refused["message"].startswith("text frames are not supported on a trio-broker.msgpack")
    plain = await connect(broker)
    await plain.send_bytes(msgpack.packb({"op": "ping"}))
    assert "subprotocol trio-broker.msgpack" in (await plain.recv())["message"]


async def test_a_publish_is_re_encoded_once_for_every_messagepack_subscriber(
    start_broker: StartBroker, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted at msgpack's packb, which the broker looks up when it calls it (its own
    # functions may be compiled, and compiled calls cannot be patched).
    encoded: list[Any] = []
    original = msgpack.packb

    def counting(obj: Any, **options: Any) -> bytes:
        encoded.append(obj)
        return original(obj, **options)

    monkeypatch.setattr(msgpack, "packb", counting)
    broker = await start_broker(server={"compression": True})
    subscribers = [await msgpack_client(connect, broker, compression=True) for _ in range(4)]
    for client in subscribers:
        await client.request_msgpack({"op": "subscribe", "topic": "t", "id": 1})
    publisher = await connect(broker)
    encoded.clear()
    data = "words " * 200
    await publisher.request({"op": "publish", "topic": "t", "data": data, "id": 1})
    for client in subscribers:
        assert (await client.recv_msgpack())["data"] == data  # and compressed: websockets inflates
    assert len(encoded) == 1

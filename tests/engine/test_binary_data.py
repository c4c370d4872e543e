"""Binary data (``data_b64``) through the broker, on both engines: live deliveries,
history, recovery, the HTTP publish API, and plugins seeing bytes."""

import base64
from typing import Any

import httpx
import pytest

from tests.admin.test_control_api import ADMIN, AS_ADMIN, api
from tests.conftest import Connect, StartBroker, with_engine
from tests.engine.test_recovery import read_until

BLOB = bytes(range(256)) * 4
B64 = base64.b64encode(BLOB).decode()
TOPICS = [{"filter": "sensor/#", "history_size": 10}]


@pytest.fixture(params=["memory", "redis"])
def start_broker(request: pytest.FixtureRequest, start_broker: StartBroker) -> StartBroker:
    return with_engine(request, start_broker)


async def test_binary_data_is_delivered_kept_and_replayed_as_base64(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(topics=TOPICS)
    subscriber = await connect(broker)
    ack = await subscriber.request({"op": "subscribe", "topic": "sensor/#", "id": 1})
    publisher = await connect(broker)
    reply = await publisher.request(
        {"op": "publish", "topic": "sensor/1", "data_b64": B64, "id": 2}
    )
    assert reply == {"op": "ack", "id": 2}
    delivery = await subscriber.recv()
    assert delivery["data_b64"] == B64 and "data" not in delivery
    await publisher.request({"op": "publish", "topic": "sensor/1", "data": "text", "id": 3})
    assert (await subscriber.recv())["data"] == "text"
    history = await publisher.request({"op": "history", "topic": "sensor/#", "id": 4})
    assert [m.get("data_b64", m.get("data")) for m in history["messages"]] == [B64, "text"]
    again = await connect(broker)
    await again.send({"op": "subscribe", "topic": "sensor/+", "id": 5, "since": ack["pos"]})
    replayed, _ = await read_until(again, "ack")
    assert replayed[0]["data_b64"] == B64


async def test_the_http_api_publishes_binary_data(
    start_broker: StartBroker, connect: Connect, http: httpx.AsyncClient
) -> None:
    broker = await start_broker(admin=ADMIN)
    subscriber = await connect(broker)
    await subscriber.request({"op": "subscribe", "topic": "sensor/1", "id": 1})
    body = {"topic": "sensor/1", "data_b64": B64}
    response = await http.post(api(broker, "/api/publish"), json=body, headers=AS_ADMIN)
    assert response.json() == {"subscribers": 1}
    assert (await subscriber.recv())["data_b64"] == B64
    bad = {"topic": "sensor/1", "data_b64": "@@"}
    refused = await http.post(api(broker, "/api/publish"), json=bad, headers=AS_ADMIN)
    assert refused.status_code == 400 and "base64" in refused.json()["message"]


async def test_content_filter_sees_bytes_and_a_schema_refuses_them_unless_it_allows_them(
    start_broker: StartBroker, connect: Connect
) -> None:
    rules: list[dict[str, Any]] = [
        {"topic": "json/#", "schema": {"type": "object"}},
        {"topic": "any/#", "schema": {"type": "object"}, "allow_binary": True},
        {"topic": "#", "max_data_bytes": 1000},
    ]
    broker = await start_broker([{"use": "content_filter", "rules": rules}])
    client = await connect(broker)

    async def publish(topic: str, data: bytes) -> Any:
        encoded = base64.b64encode(data).decode()
        return await client.request({"op": "publish", "topic": topic, "data_b64": encoded, "id": 1})

    refused = await publish("json/x", b"\x01")
    assert (refused["code"], refused["message"]) == (
        "forbidden",
        "binary data is not allowed on 'json/#'",
    )
    assert (await publish("any/x", b"\x01"))["op"] == "ack"
    too_big = await publish("any/x", BLOB)  # 1,024 bytes: counted as bytes, not base64
    assert too_big["message"] == "data is 1024 bytes; at most 1000 on '#'"
    assert (await publish("other", BLOB[:1000]))["op"] == "ack"

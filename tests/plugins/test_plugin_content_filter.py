import json
from pathlib import Path
from typing import Any

import pytest

from broker.config.schema import ConfigError
from broker.plugin_host.loader import load_plugins
from tests.conftest import Connect, StartBroker, make_config
from tests.wsclient import WsClient

SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string", "maxLength": 20}},
    "required": ["text"],
    "additionalProperties": False,
}
FILTER = {
    "use": "content_filter",
    "rules": [
        {"topic": "chat/#", "max_data_bytes": 100, "schema": SCHEMA, "redact": ["darn", "heck"]},
        {"topic": "logs/+", "max_data_bytes": 10},
    ],
}


async def _outcome(client: WsClient, topic: str, data: Any) -> Any:
    await client.send({"op": "publish", "topic": topic, "data": data, "id": 1})
    reply = await client.recv()
    if reply["op"] == "message":
        await client.recv()  # the ack
        return reply["data"]
    return reply


async def _subscribed(broker: Any, connect: Connect) -> WsClient:
    client = await connect(broker)
    await client.request({"op": "subscribe", "topic": "#", "id": 0})
    return client


async def test_valid_data_passes_and_is_redacted(
    start_broker: StartBroker, connect: Connect
) -> None:
    client = await _subscribed(await start_broker([FILTER]), connect)
    assert await _outcome(client, "chat/1", {"text": "oh Darn it"}) == {"text": "oh *** it"}
    assert await _outcome(client, "chat/1", {"text": "darning"}) == {"text": "darning"}
    assert await _outcome(client, "other", "darn, anything") == "darn, anything"


@pytest.mark.parametrize(
    ("topic", "data", "why"),
    [
        (
            "chat/1",
            {"text": 5},
            "data does not match the schema for 'chat/#': text: 5 is not of type",
        ),
        ("chat/1", {}, "'text' is a required property"),
        ("chat/1", {"text": "x" * 30}, "is too long"),
        ("chat/1", {"text": "x", "extra": "y" * 90}, "at most 100 on 'chat/#'"),
        ("logs/a", "0123456789", "data is 12 bytes; at most 10 on 'logs/+'"),
    ],
)
async def test_refusals_say_why(
    start_broker: StartBroker, connect: Connect, topic: str, data: Any, why: str
) -> None:
    client = await _subscribed(await start_broker([FILTER]), connect)
    reply = await _outcome(client, topic, data)
    assert reply["op"] == "error" and reply["code"] == "forbidden"
    assert why in reply["message"]


async def test_schema_file(start_broker: StartBroker, connect: Connect, tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"type": "integer"}))
    rules = [{"topic": "n", "schema_file": str(path)}]
    client = await _subscribed(
        await start_broker([{"use": "content_filter", "rules": rules}]), connect
    )
    assert await _outcome(client, "n", 5) == 5
    assert (await _outcome(client, "n", "5"))["code"] == "forbidden"


@pytest.mark.parametrize(
    ("rules", "error"),
    [
        ([{"topic": "a//b"}], "topic 'a//b': topic must not have an empty level"),
        ([{"topic": "a", "schema": {"type": "nonsense"}}], "invalid schema"),
        ([{"topic": "a", "schema": {}, "schema_file": "x"}], "not both"),
        ([{"topic": "a", "schema_file": "/nonexistent.json"}], "No such file"),
        ([{"topic": "a", "max_data_bytes": -1}], "'max_data_bytes' must be >= 0"),
        ([{"topic": "a"}], "rule for 'a' checks nothing"),
        ([{"topic": "a", "redact": ["darn", ""]}], "redact holds an empty word"),
    ],
)
def test_option_errors(rules: list[dict[str, Any]], error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_plugins(make_config([{"use": "content_filter", "rules": rules}]), "c.toml")
    assert error in str(caught.value)

from typing import Any

import pytest
import trio

from broker.config.schema import ConfigError
from broker.plugin import TokenBucket
from broker.plugin_host.loader import load_plugins
from tests.conftest import Connect, StartBroker, make_config
from tests.wsclient import WsClient

AUTH = {"use": "tests.example_plugins:HeaderAuth"}
# So slow to refill that no test sees a token come back.
SLOW = {"use": "rate_limit", "messages_per_second": 0.001, "burst": 3}


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4, now=0.0)
    for _ in range(4):
        assert bucket.can_take(1, now=0.0)
        bucket.take(1)
    assert not bucket.can_take(1, now=0.0)
    assert bucket.can_take(1, now=0.5)  # refilled one token
    assert not bucket.can_take(2, now=0.5)
    assert bucket.can_take(4, now=100.0)  # never beyond capacity
    assert not bucket.can_take(4.5, now=200.0)


async def _publish(client: WsClient, data: Any = 0) -> str:
    reply = await client.request({"op": "publish", "topic": "t", "data": data, "id": 1})
    return "ok" if reply["op"] == "ack" else str(reply["code"])


async def test_burst_then_rate_limited(start_broker: StartBroker, connect: Connect) -> None:
    broker = await start_broker([AUTH, SLOW])
    client = await connect(broker, headers={"X-User": "alice"})
    assert [await _publish(client) for _ in range(5)] == ["ok"] * 3 + ["rate_limited"] * 2
    # Subscribing is not limited by this plugin.
    assert (await client.request({"op": "subscribe", "topic": "t", "id": 2}))["op"] == "ack"


async def test_user_bucket_is_shared_by_their_connections(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker([AUTH, SLOW])
    first = await connect(broker, headers={"X-User": "alice"})
    second = await connect(broker, headers={"X-User": "alice"})
    bob = await connect(broker, headers={"X-User": "bob"})
    assert [await _publish(first) for _ in range(2)] == ["ok", "ok"]
    assert [await _publish(second) for _ in range(2)] == ["ok", "rate_limited"]
    assert await _publish(bob) == "ok"


async def test_per_connection_only(start_broker: StartBroker, connect: Connect) -> None:
    broker = await start_broker([AUTH, {**SLOW, "per_user": False}])
    first = await connect(broker, headers={"X-User": "alice"})
    second = await connect(broker, headers={"X-User": "alice"})
    assert [await _publish(first) for _ in range(4)] == ["ok"] * 3 + ["rate_limited"]
    assert await _publish(second) == "ok"


async def test_byte_budget(start_broker: StartBroker, connect: Connect) -> None:
    limit = {
        "use": "rate_limit",
        "messages_per_second": 1000.0,
        "burst": 100,
        "bytes_per_second": 0.001,
        "bytes_burst": 100,
    }
    broker = await start_broker([AUTH, limit])
    client = await connect(broker, headers={"X-User": "alice"})
    assert await _publish(client, "x" * 200) == "rate_limited"
    assert await _publish(client, "x" * 60) == "ok"
    assert await _publish(client, "x" * 60) == "rate_limited"


async def test_client_far_over_the_limit_is_closed(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker([AUTH, {**SLOW, "burst": 1, "close_after": 3}])
    client = await connect(broker, headers={"X-User": "alice"})
    assert [await _publish(client) for _ in range(3)] == ["ok", "rate_limited", "rate_limited"]
    await client.send({"op": "publish", "topic": "t", "data": 0, "id": 1})
    assert (await client.recv())["code"] == "rate_limited"
    assert await client.wait_closed() == (1008, "rate limit exceeded")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, "required option missing @ plugins[0].messages_per_second"),
        ({"messages_per_second": 0}, "'messages_per_second' must be > 0"),
        ({"messages_per_second": 1, "burst": 0}, "'burst' must be >= 1"),
        ({"messages_per_second": 1, "bytes_per_second": -5}, "'bytes_per_second' must be > 0"),
        (
            {"messages_per_second": 1, "per_connection": False, "per_user": False},
            "nothing is limited",
        ),
        ({"messages_per_second": 1, "bytes_burst": 100}, "bytes_burst needs bytes_per_second"),
    ],
)
def test_option_errors(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_plugins(make_config([{"use": "rate_limit", **options}]), "c.toml")
    assert error in str(caught.value)


async def test_idle_buckets_are_forgotten(autojump_clock: object) -> None:
    from broker.plugin import Client, Identity, Publication
    from plugins.rate_limit import RateLimit

    plugin = RateLimit(RateLimit.Options(messages_per_second=10.0, burst=5))
    for n in range(50):
        client = Client(f"c{n}", Identity(user=f"u{n}"), "test")
        plugin.authorize_publish(client, Publication("t", 0))
    assert len(plugin._connections) == len(plugin._users) == 50
    await trio.sleep(1.0)  # two full refills (5 tokens at 10/s): nothing left to remember
    plugin.authorize_publish(Client("last", Identity(user="z"), "test"), Publication("t", 0))
    assert set(plugin._connections) == {"last"} and set(plugin._users) == {"z"}

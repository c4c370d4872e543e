"""What plugins that let a backend decide rely on: the client id at authenticate,
connect-time channels (server-side subscriptions), renewal at expiry, and aclose."""

import time
from collections.abc import Iterator

import pytest
import trio

from broker import Broker
from tests import example_plugins
from tests.conftest import Connect, StartBroker, make_config, make_pipeline
from tests.example_plugins import misbehave

BACKEND = "tests.example_plugins:Backend"


@pytest.fixture(autouse=True)
def calls() -> Iterator[list[str]]:
    example_plugins.CALLS.clear()
    example_plugins.RETIRED.clear()
    yield example_plugins.CALLS


async def test_authenticate_sees_the_client_id_the_welcome_gives(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker([{"use": BACKEND}], topics=[{"filter": "room", "presence": True}])
    client = await connect(broker, welcome=False)
    welcome = await client.recv()
    # Backend made the client id its user: presence shows both.
    await client.request({"op": "subscribe", "topic": "room", "id": 1})
    reply = await client.request({"op": "presence", "topic": "room", "id": 2})
    assert reply["clients"] == [{"client_id": welcome["client_id"], "user": welcome["client_id"]}]


async def test_channels_are_subscribed_first_without_authorize_subscribe(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(
        [{"use": BACKEND}, misbehave("authorize_subscribe", "refuse")],
        topics=[{"filter": "news", "history_size": 10}],
    )
    publisher = await connect(broker)
    client = await connect(f"ws://127.0.0.1:{broker.port}/ws?channels=user/x,news", welcome=False)
    assert (await client.recv())["op"] == "welcome"
    assert await client.recv() == {"op": "subscribed", "topic": "user/x"}
    news = await client.recv()
    assert news["op"] == "subscribed" and news["topic"] == "news" and "pos" in news
    await publisher.request({"op": "publish", "topic": "user/x", "data": "hi", "id": 1})
    assert await client.recv() == {"op": "message", "topic": "user/x", "data": "hi"}
    # Its own subscribe still asks authorize_subscribe.
    refused = await client.request({"op": "subscribe", "topic": "other", "id": 2})
    assert refused["code"] == "forbidden"
    # It may leave a channel as any subscription.
    await client.request({"op": "unsubscribe", "topic": "user/x", "id": 3})
    await publisher.request({"op": "publish", "topic": "user/x", "data": "gone", "id": 4})
    await publisher.request({"op": "publish", "topic": "news", "data": "still", "id": 5})
    message = await client.recv()
    assert (message["topic"], message["data"]) == ("news", "still")


async def test_a_channel_that_cannot_be_held_is_an_error_naming_it(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker([{"use": BACKEND}], limits={"max_subscriptions": 2})
    client = await connect(f"ws://127.0.0.1:{broker.port}/ws?channels=a/%23/b,ok,x,y")
    error = await client.recv()
    assert error["op"] == "error" and error["code"] == "invalid_topic" and "id" not in error
    assert error["message"].startswith("subscribing to 'a/#/b': ")
    assert await client.recv() == {"op": "subscribed", "topic": "ok"}
    assert await client.recv() == {"op": "subscribed", "topic": "x"}
    limited = await client.recv()
    assert limited["code"] == "limit_exceeded" and "'y'" in limited["message"]
    assert (await client.request({"op": "ping", "id": 1}))["op"] == "pong"


async def test_a_renewing_plugin_keeps_an_expiring_connection(
    start_broker: StartBroker, connect: Connect, calls: list[str]
) -> None:
    broker = await start_broker([{"use": BACKEND, "lifetime": 0.3, "renew_by": 0.3}])
    started = time.monotonic()
    client = await connect(broker)
    assert await client.wait_closed() == (4001, "token expired")
    # Renewed once at 0.3 s, refused (None) at the renewed expiry.
    assert calls == ["backend:renew", "backend:renew"]
    assert time.monotonic() - started >= 0.55


@pytest.mark.parametrize("how", ["refuse", "raise", "garbage"])
async def test_a_renewal_that_fails_lets_the_identity_expire(
    start_broker: StartBroker, connect: Connect, calls: list[str], how: str
) -> None:
    broker = await start_broker(
        [{"use": BACKEND, "lifetime": 0.2, "renew_by": 10, "renew_how": how}]
    )
    client = await connect(broker)
    assert await client.wait_closed() == (4001, "token expired")
    assert calls == ["backend:renew"]


async def test_plugins_are_retired_after_a_reload_and_at_shutdown(
    nursery: trio.Nursery, connect: Connect, calls: list[str]
) -> None:
    config = make_config([{"use": BACKEND, "label": "old"}], server={"plugin_timeout": 0.1})
    broker = Broker(config, make_pipeline(config))
    await nursery.start(broker.serve)
    client = await connect(broker)
    new = make_config([{"use": BACKEND, "label": "new"}], server={"plugin_timeout": 0.1})
    broker.reconfigure(new, make_pipeline(new))
    with trio.fail_after(5):
        await example_plugins.RETIRED["old"].wait()
    assert "new:aclose" not in calls
    assert (await client.request({"op": "ping", "id": 1}))["op"] == "pong"
    broker.stop()
    assert await client.wait_closed() == (1001, "server shutdown")
    with trio.fail_after(5):
        await example_plugins.RETIRED["new"].wait()

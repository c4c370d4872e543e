"""Presence, join and leave events over real sockets (protocol v1.1)."""

from typing import Any

import pytest

from broker import Broker
from tests.conftest import Connect, StartBroker, with_engine

AUTH = {"use": "tests.example_plugins:HeaderAuth"}
ACL = {"use": "acl", "rules": [{"subscribe": ["rooms/#"], "publish": ["rooms/#"]}]}
ROOMS = {"filter": "rooms/#", "presence": True, "join_leave": True}


@pytest.fixture(params=["memory", "redis"])
def start_broker(request: pytest.FixtureRequest, start_broker: StartBroker) -> StartBroker:
    """Every test here runs against both engines, but those marked memory-only."""
    return with_engine(request, start_broker)


MEMORY_ONLY = pytest.mark.parametrize("start_broker", ["memory"], indirect=True)


async def rooms(start_broker: StartBroker, **options: Any) -> Broker:
    return await start_broker([AUTH, ACL], topics=[{**ROOMS, **options}])


async def test_presence_lists_the_clients_subscribed_to_the_topic_exactly(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await rooms(start_broker, join_leave=False)
    alice = await connect(broker, headers={"X-User": "alice"})
    bob = await connect(broker, headers={"X-User": "bob"})
    await alice.request({"op": "subscribe", "topic": "rooms/1", "id": 1})
    await bob.request({"op": "subscribe", "topic": "rooms/#", "id": 1})  # a wildcard: not there
    reply = await bob.request({"op": "presence", "topic": "rooms/1", "id": "p"})
    assert reply["op"] == "presence" and reply["id"] == "p"
    (member,) = reply["clients"]
    assert member["user"] == "alice" and isinstance(member["client_id"], str)
    await alice.request({"op": "unsubscribe", "topic": "rooms/1", "id": 2})
    assert (await bob.request({"op": "presence", "topic": "rooms/1", "id": 3}))["clients"] == []


async def test_presence_is_refused_where_it_is_off_or_not_allowed(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(
        [AUTH, ACL],
        topics=[{"filter": "rooms/quiet"}, ROOMS, {"filter": "other/#", "presence": True}],
    )
    client = await connect(broker, headers={"X-User": "carol"})
    for topic in ("rooms/quiet", "nowhere"):
        reply = await client.request({"op": "presence", "topic": topic, "id": 1})
        assert reply["code"] == "forbidden"
    refused = await client.request({"op": "presence", "topic": "other/x", "id": 2})
    assert refused == {
        "op": "error",
        "code": "forbidden",
        "message": "not allowed to subscribe to 'other/x'",
        "id": 2,
    }
    wildcard = await client.request({"op": "presence", "topic": "rooms/+", "id": 3})
    assert wildcard["code"] == "invalid_topic"


async def test_join_and_leave_reach_the_subscribers_even_on_an_abrupt_disconnect(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await rooms(start_broker)
    watcher = await connect(broker, headers={"X-User": "watcher"})
    await watcher.request({"op": "subscribe", "topic": "rooms/#", "id": 1})
    alice = await connect(broker, headers={"X-User": "alice"})
    await alice.send({"op": "subscribe", "topic": "rooms/1", "id": 1})
    join = await watcher.recv()
    assert join["op"] == "join" and join["topic"] == "rooms/1"
    assert join["client"]["user"] == "alice"
    client_id = join["client"]["client_id"]
    # Alice hears of herself too, after her ack.
    assert (await alice.recv())["op"] == "ack"
    assert (await alice.recv())["op"] == "join"
    await alice.request({"op": "unsubscribe", "topic": "rooms/1", "id": 2})
    assert await watcher.recv() == {
        "op": "leave",
        "topic": "rooms/1",
        "client": {"client_id": client_id, "user": "alice"},
    }
    bob = await connect(broker, headers={"X-User": "bob"})
    await bob.request({"op": "subscribe", "topic": "rooms/2", "id": 1})
    assert (await watcher.recv())["op"] == "join"
    await bob.stream.aclose()  # gone without a close frame
    leave = await watcher.recv()
    assert (leave["op"], leave["topic"], leave["client"]["user"]) == ("leave", "rooms/2", "bob")
    presence = await watcher.request({"op": "presence", "topic": "rooms/2", "id": 3})
    assert presence["clients"] == []

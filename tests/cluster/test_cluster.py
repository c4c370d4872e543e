"""Several broker nodes on one Redis behave as one broker (the redis engine)."""

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from broker import Broker
from broker.cluster.names import Names
from tests.cluster.nodes import CHAT, read_until, redis_client, subscribed, wait_until
from tests.conftest import Connect, StartBroker, StartNode
from tests.redis_server import RedisServer, redis_server
from tests.wsclient import WsClient

pytestmark = pytest.mark.slow  # redis-server


async def test_a_publish_on_one_node_reaches_subscribers_on_every_node_once(
    start_node: StartNode, connect: Connect
) -> None:
    nodes = [await start_node() for _ in range(3)]
    subscribers = [await subscribed(connect, node, "news") for node in nodes]
    wildcards = [await subscribed(connect, node, "+") for node in nodes]
    both = await subscribed(connect, nodes[2], "#")
    ack = await both.request({"op": "subscribe", "topic": "news", "id": 2})
    assert ack["op"] == "ack"
    publisher = await connect(nodes[0])
    for n in range(3):
        ack = await publisher.request({"op": "publish", "topic": "news", "data": n, "id": n})
        assert ack["op"] == "ack", ack
    for client in [*subscribers, *wildcards, both]:
        got = [await client.recv() for _ in range(3)]
        assert [m["data"] for m in got] == [0, 1, 2]
    # Nothing more: a ping answers before any duplicate could.
    for client in [*subscribers, *wildcards, both]:
        assert (await client.request({"op": "ping", "id": "p"}))["op"] == "pong"


async def test_a_node_subscribes_in_redis_only_while_it_has_local_interest(
    start_node: StartNode, connect: Connect, redis: RedisServer
) -> None:
    node = await start_node()
    engine = node.engine
    # The node's own channels are always there: for markers (broker/core/snapshots.py),
    # and for the control API's commands and its answers (broker/cluster/commands.py).
    names = engine.names  # type: ignore[attr-defined]
    own = {
        engine.shards[0].marker_channel.encode(),  # type: ignore[attr-defined]
        names.commands.encode(),
        names.answers(engine.node).encode(),
    }
    async with await redis_client(redis) as client:

        async def channels() -> set[bytes]:
            return set(await client.pubsub_channels()) - own

        async def patterns() -> int:
            return int(await client.pubsub_numpat())

        async def only_its_own() -> bool:
            return set(await client.pubsub_channels()) == own

        await wait_until(only_its_own)  # the command channels are subscribed once it runs
        assert await channels() == set() and await patterns() == 0
        first = await subscribed(connect, node, "chat/a")
        await subscribed(connect, node, "chat/a")
        wildcard = await subscribed(connect, node, "chat/+/x")
        assert await channels() == {b"trio-broker:t:chat/a"}
        assert await patterns() == 1
        # A publish on a topic nobody on the node wants is not sent to it.
        assert await client.publish("trio-broker:t:other", b"x") == 0
        assert await client.publish("trio-broker:t:chat/b/x", b"x") == 1
        await first.request({"op": "unsubscribe", "topic": "chat/a", "id": 1})
        assert await channels() == {b"trio-broker:t:chat/a"}  # the second one holds it
        await wildcard.aclose()

        async def no_pattern() -> bool:
            return await patterns() == 0

        await wait_until(no_pattern)
        assert await channels() == {b"trio-broker:t:chat/a"}


async def test_messages_from_one_publisher_arrive_in_order_on_every_node(
    start_node: StartNode, connect: Connect
) -> None:
    nodes = [await start_node(topics=[CHAT]) for _ in range(3)]
    receivers = [await subscribed(connect, node, "chat/#") for node in nodes]
    receivers += [await subscribed(connect, node, "news") for node in nodes]
    publisher = await connect(nodes[1])
    count = 300
    for n in range(count):
        await publisher.send({"op": "publish", "topic": "chat/r" if n % 2 else "news", "data": n})
    for index, receiver in enumerate(receivers):
        expected = [n for n in range(count) if (n % 2 == 1) == (index < 3)]
        got = [(await receiver.recv())["data"] for _ in expected]
        assert got == expected


async def test_a_client_recovers_on_another_node_exactly_what_it_missed(
    start_node: StartNode, connect: Connect
) -> None:
    a, b, c = [await start_node(topics=[CHAT]) for _ in range(3)]
    publisher = await connect(c)
    for topic_filter in ("chat/room", "chat/#", "chat/+"):
        client = await connect(a)
        ack = await client.request({"op": "subscribe", "topic": topic_filter, "id": 1})
        await publisher.request({"op": "publish", "topic": "chat/room", "data": "seen", "id": 1})
        seen = await client.recv()
        assert seen["data"] == "seen" and seen["pos"].split(":")[0] == ack["pos"].split(":")[0]
        await client.aclose()
        for n in range(5):
            await publisher.request({"op": "publish", "topic": "chat/room", "data": n, "id": 2})
        again = await connect(b)
        await again.send({"op": "subscribe", "topic": topic_filter, "id": 2, "since": seen["pos"]})
        replay, ack = await read_until(again, "ack")
        assert [m["data"] for m in replay] == [0, 1, 2, 3, 4], topic_filter
        assert ack["recovered"] is True
        await publisher.request({"op": "publish", "topic": "chat/room", "data": "live", "id": 3})
        assert (await again.recv())["data"] == "live"
        # The live one's position recovers nothing more.
        await again.aclose()


async def test_recovery_while_publishers_flood_other_nodes_has_no_gap_and_no_duplicate(
    start_node: StartNode, connect: Connect
) -> None:
    a, b = await start_node(topics=[CHAT]), await start_node(topics=[CHAT])
    publishers = [await connect(node) for node in (a, b, a)]
    watcher = await subscribed(connect, b, "chat/#")
    recovering = await connect(a)
    ack = await recovering.request({"op": "subscribe", "topic": "chat/#", "id": "first"})
    total = 600

    async def flood(index: int, publisher: WsClient) -> None:
        for n in range(total // 3):
            topic = f"chat/{n % 4}"
            await publisher.send({"op": "publish", "topic": topic, "data": [index, n]})

    def offset(position: str) -> int:
        return int(position.split(":")[1])

    got: list[Any] = []

    async def resubscribe_repeatedly() -> None:
        # Reading 20 messages, then subscribing again from the last one's position, as
        # a client reconnecting would; what was in flight before the replay comes
        # twice, and a client skips it by its position.
        last = offset(ack["pos"])
        while len(got) < total:
            since = f"{ack['pos'].split(':')[0]}:{last}"
            await recovering.send(
                {"op": "subscribe", "topic": "chat/#", "id": len(got), "since": since}
            )
            messages, reply = await read_until(recovering, "ack")
            assert reply["recovered"] is True
            while len(messages) < 20 and len(got) + len(messages) < total:
                messages.append(await recovering.recv())
            for message in messages:
                if offset(message["pos"]) > last:
                    got.append(message)
                    last = offset(message["pos"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(resubscribe_repeatedly)
        for index, publisher in enumerate(publishers):
            nursery.start_soon(flood, index, publisher)
    everything = [await watcher.recv() for _ in range(total)]
    assert [m["data"] for m in got] == [m["data"] for m in everything]


async def test_history_and_presence_are_shared_by_the_nodes(
    start_node: StartNode, connect: Connect
) -> None:
    topics = [{**CHAT, "presence": True, "join_leave": True}]
    a, b = await start_node(topics=topics), await start_node(topics=topics)
    watcher = await subscribed(connect, b, "chat/room")
    publisher = await connect(a)
    for n in range(3):
        await publisher.request({"op": "publish", "topic": "chat/room", "data": n, "id": n})
    reply = await publisher.request({"op": "history", "topic": "chat/+", "limit": 2, "id": 9})
    assert [m["data"] for m in reply["messages"]] == [1, 2]
    joiner = await subscribed(connect, a, "chat/room")
    # Its own join first (as with one broker), the messages, then the other's join.
    events = [await watcher.recv() for _ in range(5)]
    assert [event["op"] for event in events] == ["join", "message", "message", "message", "join"]
    assert events[0]["client"]["client_id"] != events[4]["client"]["client_id"]
    reply = await publisher.request({"op": "presence", "topic": "chat/room", "id": 1})
    assert len(reply["clients"]) == 2
    await joiner.aclose()
    assert (await watcher.recv())["op"] == "leave"
    reply = await publisher.request({"op": "presence", "topic": "chat/room", "id": 2})
    assert len(reply["clients"]) == 1


async def test_history_outlives_every_node(
    start_node: StartNode, connect: Connect, nursery: trio.Nursery
) -> None:
    node = await start_node(topics=[CHAT])
    client = await subscribed(connect, node, "chat/x")
    await client.send({"op": "publish", "topic": "chat/x", "data": "before"})
    position = (await client.recv())["pos"]
    await client.send({"op": "publish", "topic": "chat/x", "data": "missed"})
    await client.recv()
    node.stop()
    later = await start_node(topics=[CHAT])
    again = await connect(later)
    await again.send({"op": "subscribe", "topic": "chat/x", "id": 1, "since": position})
    replay, ack = await read_until(again, "ack")
    assert [m["data"] for m in replay] == ["missed"] and ack["recovered"] is True


async def test_delivery_filters_run_on_the_subscribers_node(
    start_node: StartNode, connect: Connect
) -> None:
    auth = {"use": "tests.example_plugins:HeaderAuth"}
    only = {"use": "tests.example_plugins:OnlyRole", "prefix": "staff", "role": "staff"}
    kept = [{"filter": "staff/kept", "history_size": 10}]
    a, b = await start_node([auth, only], topics=kept), await start_node([auth, only], topics=kept)
    for topic in ("staff/live", "staff/kept"):  # without and with history
        staff = await connect(b, headers={"X-User": "s", "X-Roles": "staff"})
        guest = await connect(b, headers={"X-User": "g"})
        for client in (staff, guest):
            await client.request({"op": "subscribe", "topic": "#", "id": 1})
        publisher = await connect(a, headers={"X-User": "boss", "X-Roles": "staff"})
        for data in ("secret", "public"):
            target = topic if data == "secret" else "public"
            await publisher.request({"op": "publish", "topic": target, "data": data, "id": 1})
        assert [(await staff.recv())["data"] for _ in range(2)] == ["secret", "public"]
        assert (await guest.recv())["data"] == "public"


async def test_the_http_api_of_any_node_publishes_to_every_node(
    start_node: StartNode, connect: Connect, http: httpx.AsyncClient
) -> None:
    key = "k" * 24
    admin = {"enabled": True, "port": 0, "api_keys": [{"key": key, "user": "backend"}]}
    a, b = await start_node(admin=admin, topics=[CHAT]), await start_node()
    subscribers = [await subscribed(connect, node, "chat/news") for node in (a, b)]
    response = await http.post(
        f"http://127.0.0.1:{a.admin_port}/api/publish",
        headers={"Authorization": f"Bearer {key}"},
        json={"topic": "chat/news", "data": "extra"},
    )
    assert response.status_code == 200 and response.json()["subscribers"] >= 1
    for client in subscribers:
        message = await client.recv()
        assert message["data"] == "extra" and message["pos"]


async def test_topics_with_glob_characters_match_literally(
    start_node: StartNode, connect: Connect
) -> None:
    a, b = await start_node(), await start_node()
    receiver = await subscribed(connect, b, "a*[b]?/+")
    publisher = await connect(a)
    for topic in ("aXbY/1", "a*b?/2", "a*[b]?/3"):
        await publisher.request({"op": "publish", "topic": topic, "data": topic, "id": 1})
    assert (await receiver.recv())["data"] == "a*[b]?/3"


async def test_shards_spread_topics_and_wildcards_span_them(
    start_broker: StartBroker, connect: Connect, tmp_path: Path
) -> None:
    with redis_server(tmp_path / "one") as one, redis_server(tmp_path / "two") as two:
        cluster = {"engine": "redis", "redis_shards": [one.url, two.url]}
        a = await start_broker(cluster=cluster, topics=[CHAT])
        b = await start_broker(cluster=cluster, topics=[CHAT])
        topics = [f"chat/{n}" for n in range(8)]
        shards = {Names("trio-broker", 2).shard_of(topic) for topic in topics}
        assert shards == {0, 1}
        everything = await subscribed(connect, b, "chat/#")
        ack = await subscribed_ack(connect, b, "chat/3")
        publisher = await connect(a)
        for topic in topics:
            await publisher.request({"op": "publish", "topic": topic, "data": topic, "id": 1})
        got = [await everything.recv() for _ in topics]
        assert sorted(m["data"] for m in got) == sorted(topics)
        for shard in (0, 1):  # in order per shard: their positions
            mine = [m for m in got if Names("trio-broker", 2).shard_of(m["topic"]) == shard]
            assert mine == sorted(mine, key=lambda m: int(m["pos"].split(":")[1]))
        # An exact topic recovers exactly, on its shard's position.
        client, position = ack
        seen = await client.recv()
        await client.aclose()
        await publisher.request({"op": "publish", "topic": "chat/3", "data": "missed", "id": 2})
        again = await connect(a)
        await again.send({"op": "subscribe", "topic": "chat/3", "id": 1, "since": seen["pos"]})
        replay, reply = await read_until(again, "ack")
        assert [m["data"] for m in replay] == ["missed"] and reply["recovered"] is True
        assert position.split(":")[0] == seen["pos"].split(":")[0]
        # A wildcard spanning shards cannot say "everything before here" with one
        # position: what came after it on its shard, all that the other retains, and
        # recovered false.
        names = Names("trio-broker", 2)
        last = got[-1]
        other = [t for t in topics if names.shard_of(t) != names.shard_of(last["topic"])]
        wide = await connect(a)
        await wide.send({"op": "subscribe", "topic": "chat/#", "id": 1, "since": last["pos"]})
        replay, reply = await read_until(wide, "ack")
        assert reply["recovered"] is False
        assert sorted(m["data"] for m in replay) == sorted([*other, "missed"])


async def subscribed_ack(connect: Connect, node: Broker, topic_filter: str) -> tuple[WsClient, str]:
    client = await connect(node)
    ack = await client.request({"op": "subscribe", "topic": topic_filter, "id": "s"})
    return client, ack["pos"]


async def test_what_is_still_on_its_way_from_redis_after_a_replay_is_not_delivered_again(
    start_node: StartNode, connect: Connect
) -> None:
    # The node's pub/sub reader is held up by a subscriber that reads nothing (its queue
    # holds 10 messages; the node waits for room), so messages Redis sent pile up in the
    # node, unread, while a client recovers: its replay holds them already. When the
    # stalled subscriber reads again, the node delivers them, after the recovery's ack.
    node = await start_node(
        topics=[{**CHAT, "history_size": 1000}],
        limits={"max_queued_messages": 10, "slow_consumer_timeout": 60.0},
    )
    stalled = await connect(node, receive_buffer=4096)
    assert (await stalled.request({"op": "subscribe", "topic": "chat/a", "id": 1}))["op"] == "ack"
    first = await connect(node)
    since = (await first.request({"op": "subscribe", "topic": "chat/a", "id": 1}))["pos"]
    await first.aclose()
    publisher = await connect(node)
    # 12 MB: far more than the stalled socket's buffers and queue hold.
    total, padding = 300, "x" * 40_000
    for n in range(total):
        message = {"op": "publish", "topic": "chat/a", "data": [n, padding], "id": n}
        assert await publisher.request(message) == {"op": "ack", "id": n}
    recovering = await connect(node)
    await recovering.send({"op": "subscribe", "topic": "chat/a", "id": "r", "since": since})
    replayed, ack = await read_until(recovering, "ack")
    assert ack["recovered"] is True
    assert [m["data"][0] for m in replayed] == list(range(total))

    async def read_until_after(client: WsClient) -> list[Any]:
        data = []
        while (message := await client.recv(timeout=30))["data"] != "after":
            data.append(message["data"][0])
        return data

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_until_after, stalled)  # the node's reader goes on
        await publisher.request({"op": "publish", "topic": "chat/a", "data": "after", "id": "a"})
        assert await read_until_after(recovering) == []

"""The server control API acts on the whole cluster: any node's admin listener reaches the
clients of every node, and answers with what they all did."""

import coredis
import httpx
import pytest

from tests.admin.test_control_api import ADMIN, AS_ADMIN, HEADER_AUTH, api
from tests.conftest import Connect, StartNode
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow  # redis-server


async def test_disconnect_info_and_channels_span_the_nodes(
    start_node: StartNode, connect: Connect, http: httpx.AsyncClient
) -> None:
    nodes = [await start_node([HEADER_AUTH], admin=ADMIN) for _ in range(2)]
    alices = [await connect(node, headers={"X-User": "alice"}) for node in nodes]
    bob = await connect(nodes[1], headers={"X-User": "bob"})
    for client in (*alices, bob):
        await client.request({"op": "subscribe", "topic": "room/1", "id": 1})
    await bob.request({"op": "subscribe", "topic": "news", "id": 2})

    info = (await http.get(api(nodes[0], "/api/info"), headers=AS_ADMIN)).json()
    assert sorted(n["node"] for n in info["nodes"]) == sorted(n.engine.node for n in nodes)
    assert sorted(n["connections"] for n in info["nodes"]) == [1, 2]
    channels = (await http.get(api(nodes[1], "/api/channels"), headers=AS_ADMIN)).json()
    assert channels["channels"] == [
        {"topic": "room/1", "subscribers": 3},
        {"topic": "news", "subscribers": 1},
    ]

    response = await http.post(
        api(nodes[0], "/api/disconnect"), headers=AS_ADMIN, json={"user": "alice"}
    )
    assert response.json() == {"disconnected": 2}
    for alice in alices:
        assert await alice.wait_closed() == (4003, "disconnected")
    assert (await bob.request({"op": "ping", "id": 3}))["op"] == "pong"


async def test_an_answer_says_how_many_nodes_did_not_answer_in_time(
    start_node: StartNode, connect: Connect, http: httpx.AsyncClient, redis: RedisServer
) -> None:
    node = await start_node([HEADER_AUTH], admin=ADMIN, cluster={"redis_timeout": 0.5})
    await connect(node, headers={"X-User": "alice"})
    info = (await http.get(api(node, "/api/info"), headers=AS_ADMIN)).json()
    assert len(info["nodes"]) == 1 and "unanswered" not in info
    # A node that hears the commands and never answers (hung, say).
    silent = coredis.Redis(unix_socket_path=str(redis.socket_path))
    async with silent:
        pubsub = silent.pubsub()
        async with pubsub:
            await pubsub.subscribe(node.engine.names.commands)
            info = (await http.get(api(node, "/api/info"), headers=AS_ADMIN)).json()
            assert (len(info["nodes"]), info["unanswered"]) == (1, 1)
            channels = (await http.get(api(node, "/api/channels"), headers=AS_ADMIN)).json()
            assert channels["unanswered"] == 1
            response = await http.post(
                api(node, "/api/disconnect"), headers=AS_ADMIN, json={"user": "alice"}
            )
            assert response.json() == {"disconnected": 1, "unanswered": 1}


async def test_the_backend_subscribes_a_user_on_every_node(
    start_node: StartNode, connect: Connect, http: httpx.AsyncClient
) -> None:
    nodes = [await start_node([HEADER_AUTH], admin=ADMIN) for _ in range(2)]
    alices = [await connect(node, headers={"X-User": "alice"}) for node in nodes]
    response = await http.post(
        api(nodes[1], "/api/subscribe"), headers=AS_ADMIN, json={"user": "alice", "topic": "inbox"}
    )
    assert response.json() == {"subscribed": 2}
    for alice in alices:
        assert await alice.recv() == {"op": "subscribed", "topic": "inbox"}
    publisher = await connect(nodes[0], headers={"X-User": "system"})
    await publisher.request({"op": "publish", "topic": "inbox", "data": "mail", "id": 1})
    for alice in alices:
        assert (await alice.recv())["data"] == "mail"
    inbox = {"user": "alice", "topic": "inbox"}
    response = await http.post(api(nodes[0], "/api/unsubscribe"), headers=AS_ADMIN, json=inbox)
    assert response.json() == {"unsubscribed": 2}


async def test_max_connections_per_user_counts_every_node(
    start_node: StartNode, connect: Connect
) -> None:
    from tests.wsclient import Rejected

    limits = {"max_connections_per_user": 2}
    nodes = [await start_node([HEADER_AUTH], limits=limits) for _ in range(2)]
    for node in nodes:
        await connect(node, headers={"X-User": "alice"})
    for node in nodes:
        with pytest.raises(Rejected) as caught:
            await connect(node, headers={"X-User": "alice"})
        assert caught.value.status == 429
    await connect(nodes[1], headers={"X-User": "bob"})

"""The server control API on one node (the cluster's in tests/cluster/test_cluster_control.py):
disconnect, info, channels, presence and history, for keys with the role "admin"."""

from typing import Any

import httpx
import pytest
import trio

from broker import Broker
from broker.client import ConnectionLost
from broker.client import connect as client_connect
from tests.conftest import Connect, StartBroker, url
from tests.example_plugins import misbehave

ADMIN_KEY = "a" * 24
OTHER_KEY = "p" * 24
ADMIN = {
    "enabled": True,
    "host": "127.0.0.1",
    "port": 0,
    "api_keys": [
        {"key": ADMIN_KEY, "user": "backend", "roles": ["admin"]},
        {"key": OTHER_KEY, "user": "publisher", "roles": ["publisher"]},
    ],
}
AS_ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
HEADER_AUTH = {"use": "tests.example_plugins:HeaderAuth"}


async def start(start_broker: StartBroker, **sections: Any) -> Broker:
    return await start_broker([HEADER_AUTH], admin=ADMIN, **sections)


def api(broker: Broker, path: str) -> str:
    return f"http://127.0.0.1:{broker.admin_port}{path}"


async def test_only_admin_keys_may_use_it(
    start_broker: StartBroker, http: httpx.AsyncClient
) -> None:
    broker = await start(start_broker)
    anonymous = await http.get(api(broker, "/api/info"))
    assert anonymous.status_code == 401
    other = await http.get(
        api(broker, "/api/info"), headers={"Authorization": f"Bearer {OTHER_KEY}"}
    )
    assert (other.status_code, other.json()["code"]) == (403, "forbidden")
    assert 'role "admin"' in other.json()["message"]
    wrong_method = await http.get(api(broker, "/api/disconnect"), headers=AS_ADMIN)
    assert wrong_method.status_code == 405


async def test_disconnect_a_user_for_good_or_to_come_back(
    start_broker: StartBroker, connect: Connect, http: httpx.AsyncClient
) -> None:
    broker = await start(start_broker)
    alices = [await connect(broker, headers={"X-User": "alice"}) for _ in range(2)]
    bob = await connect(broker, headers={"X-User": "bob"})
    response = await http.post(
        api(broker, "/api/disconnect"), headers=AS_ADMIN, json={"user": "alice", "reason": "banned"}
    )
    assert response.json() == {"disconnected": 2}
    for alice in alices:
        assert await alice.wait_closed() == (4003, "banned")
    assert (await bob.request({"op": "ping", "id": 1}))["op"] == "pong"
    welcome = await connect(broker, headers={"X-User": "carol"}, welcome=False)
    client_id = (await welcome.recv())["client_id"]
    response = await http.post(
        api(broker, "/api/disconnect"),
        headers=AS_ADMIN,
        json={"client_id": client_id, "reconnect": True},
    )
    assert response.json() == {"disconnected": 1}
    assert await welcome.wait_closed() == (4002, "disconnected")
    nobody = await http.post(api(broker, "/api/disconnect"), headers=AS_ADMIN, json={"user": "zed"})
    assert nobody.json() == {"disconnected": 0}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({}, 'exactly one of "user" and "client_id"'),
        ({"user": "a", "client_id": "b"}, 'exactly one of "user" and "client_id"'),
        ({"user": 5}, '"user" must be a non-empty string'),
        ({"user": "a", "reconnect": "yes"}, '"reconnect" must be true or false'),
        ({"user": "a", "reason": "x" * 101}, '"reason" must be a string of at most 100'),
        ({"user": "a", "why": "x"}, "unknown field(s): why"),
        ([], "must be a JSON object"),
    ],
)
async def test_a_bad_disconnect_is_a_400_that_says_why(
    start_broker: StartBroker, http: httpx.AsyncClient, body: Any, says: str
) -> None:
    broker = await start(start_broker)
    response = await http.post(api(broker, "/api/disconnect"), headers=AS_ADMIN, json=body)
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request" and says in response.json()["message"]


async def test_info_channels_presence_and_history(
    start_broker: StartBroker, connect: Connect, http: httpx.AsyncClient
) -> None:
    broker = await start(
        start_broker,
        topics=[{"filter": "room/+", "presence": True, "history_size": 10}],
    )
    alice = await connect(broker, headers={"X-User": "alice"})
    bob = await connect(broker, headers={"X-User": "bob"})
    for client in (alice, bob):
        await client.request({"op": "subscribe", "topic": "room/1", "id": 1})
    await alice.request({"op": "subscribe", "topic": "news/#", "id": 2})
    await alice.request({"op": "publish", "topic": "room/1", "data": "hi", "id": 3})

    info = (await http.get(api(broker, "/api/info"), headers=AS_ADMIN)).json()
    (node,) = info["nodes"]
    assert (node["connections"], node["subscriptions"]) == (2, 3)
    assert node["node"] == broker.engine.node and node["uptime_s"] >= 0

    channels = (await http.get(api(broker, "/api/channels"), headers=AS_ADMIN)).json()
    assert channels == {
        "channels": [{"topic": "room/1", "subscribers": 2}, {"topic": "news/#", "subscribers": 1}],
        "truncated": False,
    }
    some = await http.get(api(broker, "/api/channels?prefix=news&limit=1"), headers=AS_ADMIN)
    assert some.json()["channels"] == [{"topic": "news/#", "subscribers": 1}]
    one = await http.get(api(broker, "/api/channels?limit=1"), headers=AS_ADMIN)
    assert one.json()["truncated"] is True

    who = (await http.get(api(broker, "/api/presence?topic=room/1"), headers=AS_ADMIN)).json()
    assert sorted(c["user"] for c in who["clients"]) == ["alice", "bob"]
    history = (await http.get(api(broker, "/api/history?topic=room/%2B"), headers=AS_ADMIN)).json()
    assert [m["data"] for m in history["messages"]] == ["hi"] and "pos" in history
    (hi,) = history["messages"]
    for since, expected in ((hi["pos"], []), ("unreadable", ["hi"])):
        query = {"topic": "room/+", "since": since}
        after = await http.get(api(broker, "/api/history"), params=query, headers=AS_ADMIN)
        assert [m["data"] for m in after.json()["messages"]] == expected
        assert after.json()["recovered"] is (since == hi["pos"])
        assert after.json()["more"] is False

    for path, says in [
        ("/api/presence?topic=news", "no presence on 'news'"),
        ("/api/presence", "topic is required"),
        ("/api/history?topic=a/%23/b", "topic: "),
        ("/api/channels?limit=-1", "limit must be a whole number"),
        ("/api/info?x=1", "unknown parameter(s): x"),
    ]:
        refused = await http.get(api(broker, path), headers=AS_ADMIN)
        assert refused.status_code in (400, 403) and says in refused.json()["message"], path


async def test_the_python_client_stops_on_4003_and_comes_back_after_4002(
    start_broker: StartBroker, http: httpx.AsyncClient
) -> None:
    broker = await start(start_broker)
    async with client_connect(
        url(broker), headers={"X-User": "dave"}, backoff=(0.01, 0.05)
    ) as client:
        first_id = client.client_id
        await http.post(
            api(broker, "/api/disconnect"),
            headers=AS_ADMIN,
            json={"user": "dave", "reconnect": True},
        )
        await client.subscribe("t")  # made once it is back
        assert client.client_id != first_id
        await http.post(api(broker, "/api/disconnect"), headers=AS_ADMIN, json={"user": "dave"})
        with pytest.raises(ConnectionLost) as lost:
            await client.receive()
        assert lost.value.code == 4003


async def test_subscribe_and_unsubscribe_clients_from_the_backend(
    start_broker: StartBroker, connect: Connect, http: httpx.AsyncClient
) -> None:
    refuse_all = misbehave("authorize_subscribe", "refuse")
    broker = await start_broker(
        [HEADER_AUTH, refuse_all],
        admin=ADMIN,
        topics=[{"filter": "room/+", "presence": True, "join_leave": True, "history_size": 10}],
    )
    alices = [await connect(broker, headers={"X-User": "alice"}) for _ in range(2)]
    bob = await connect(broker, headers={"X-User": "bob"})
    publisher = await connect(broker, headers={"X-User": "pub"})
    await publisher.request({"op": "publish", "topic": "room/1", "data": "earlier", "id": 1})
    history = (await http.get(api(broker, "/api/history?topic=room/1"), headers=AS_ADMIN)).json()
    (earlier,) = history["messages"]
    since = earlier["pos"]  # the backend recovers from here: nothing after it is missed

    response = await http.post(
        api(broker, "/api/subscribe"), headers=AS_ADMIN, json={"user": "alice", "topic": "room/1"}
    )
    assert response.json() == {"subscribed": 2}
    for alice in alices:
        subscribed = await alice.recv()
        assert subscribed["op"] == "subscribed" and subscribed["topic"] == "room/1"
    # The backend decided: authorize_subscribe (which refuses everything here) was not asked.
    await publisher.request({"op": "publish", "topic": "room/1", "data": "hi", "id": 2})
    for alice in alices:
        message = await alice.recv()
        while message["op"] == "join":  # the other alice joined
            message = await alice.recv()
        assert message["data"] == "hi"
    who = (await http.get(api(broker, "/api/presence?topic=room/1"), headers=AS_ADMIN)).json()
    assert [c["user"] for c in who["clients"]] == ["alice", "alice"]

    recovering = await http.post(
        api(broker, "/api/subscribe"),
        headers=AS_ADMIN,
        json={"user": "bob", "topic": "room/+", "since": since},
    )
    assert recovering.json() == {"subscribed": 1}
    replay = await bob.recv()
    assert replay["data"] == "hi"  # what came after "earlier", then the ack-like event
    ack = await bob.recv()
    assert ack["op"] == "subscribed" and ack["recovered"] is True

    response = await http.post(
        api(broker, "/api/unsubscribe"), headers=AS_ADMIN, json={"user": "alice", "topic": "room/1"}
    )
    assert response.json() == {"unsubscribed": 2}
    for alice in alices:
        message = await alice.recv()
        while message["op"] != "unsubscribed":  # leave events of the other alice
            message = await alice.recv()
        assert message == {"op": "unsubscribed", "topic": "room/1"}
    again = await http.post(
        api(broker, "/api/unsubscribe"), headers=AS_ADMIN, json={"user": "alice", "topic": "room/1"}
    )
    assert again.json() == {"unsubscribed": 0}
    bad = await http.post(
        api(broker, "/api/subscribe"), headers=AS_ADMIN, json={"user": "alice", "topic": "a/#/b"}
    )
    assert bad.status_code == 400 and "topic: " in bad.json()["message"]


async def test_the_python_client_keeps_server_side_subscriptions_across_a_reconnect(
    start_broker: StartBroker, connect: Connect, http: httpx.AsyncClient
) -> None:
    from broker.client import Message, ServerSubscription

    broker = await start_broker(
        [{"use": "tests.example_plugins:Backend"}],
        admin=ADMIN,
        topics=[{"filter": "inbox", "history_size": 10}],
    )
    publisher = await connect(broker)
    async with client_connect(url(broker, "/ws?channels=news"), backoff=(0.01, 0.05)) as client:
        assert await client.receive() == ServerSubscription("subscribed", "news")
        inbox = {"client_id": client.client_id, "topic": "inbox"}
        response = await http.post(api(broker, "/api/subscribe"), headers=AS_ADMIN, json=inbox)
        assert response.json() == {"subscribed": 1}
        subscribed = await client.receive()
        assert isinstance(subscribed, ServerSubscription) and subscribed.topic == "inbox"
        come_back = {"client_id": client.client_id, "reconnect": True}
        await http.post(api(broker, "/api/disconnect"), headers=AS_ADMIN, json=come_back)
        # Connected again: the server made "news" again at connect; "inbox" (the control
        # API's) the client subscribed to again itself.
        assert await client.receive() == ServerSubscription("subscribed", "news")
        for topic in ("news", "inbox"):
            await publisher.request({"op": "publish", "topic": topic, "data": topic, "id": 1})
        # "inbox" has history: published before the client subscribed again, it is
        # replayed; after, delivered live; once either way.
        with trio.fail_after(10):
            got = [await client.receive() for _ in range(2)]
        assert sorted(m.data for m in got if isinstance(m, Message)) == ["inbox", "news"]
        await client.ping()

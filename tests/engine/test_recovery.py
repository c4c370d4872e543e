"""History and recovery over real sockets (protocol v1.1), with the `websockets` protocol."""

from typing import Any

import pytest
import trio
import trio.testing

from broker import Broker
from broker.engine.memory import MemoryEngine
from tests.conftest import Connect, StartBroker, with_engine
from tests.wsclient import WsClient

CHAT = {"filter": "chat/#", "history_size": 1000}
ACL = {
    "use": "acl",
    "rules": [{"subscribe": ["chat/#", "other"], "publish": ["chat/#"]}, {"publish": ["secret/#"]}],
}


@pytest.fixture(params=["memory", "redis"])
def start_broker(request: pytest.FixtureRequest, start_broker: StartBroker) -> StartBroker:
    """Every test here runs against both engines, but those marked memory-only."""
    return with_engine(request, start_broker)


MEMORY_ONLY = pytest.mark.parametrize("start_broker", ["memory"], indirect=True)


async def history_broker(
    start_broker: StartBroker, *plugins: Any, server: dict[str, Any] | None = None, **topic: Any
) -> Broker:
    return await start_broker(list(plugins), topics=[{**CHAT, **topic}], server=server or {})


async def read_until(client: WsClient, op: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages before the first reply of ``op``, and that reply."""
    before = []
    while (message := await client.recv())["op"] != op:
        before.append(message)
    return before, message


@MEMORY_ONLY
async def test_deliveries_on_history_topics_carry_a_position_others_do_not(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await history_broker(start_broker)
    client = await connect(broker)
    ack = await client.request({"op": "subscribe", "topic": "chat/#", "id": 1})
    assert ack["pos"].endswith(":0")
    assert await client.request({"op": "subscribe", "topic": "news", "id": 2}) == {
        "op": "ack",
        "id": 2,
    }
    await client.send({"op": "publish", "topic": "chat/a", "data": 1})
    await client.send({"op": "publish", "topic": "news", "data": 2})
    first, second = await client.recv(), await client.recv()
    assert first["pos"].endswith(":1") and first["pos"].split(":")[0] == ack["pos"].split(":")[0]
    assert "pos" not in second


@pytest.mark.parametrize("topic_filter", ["chat/#", "chat/a", "chat/+"])
async def test_a_client_that_reconnects_gets_what_it_missed_then_the_live_stream(
    start_broker: StartBroker, connect: Connect, topic_filter: str
) -> None:
    broker = await history_broker(start_broker)
    publisher = await connect(broker)
    first = await connect(broker)
    ack = await first.request({"op": "subscribe", "topic": topic_filter, "id": 1})
    position = ack["pos"]
    for n in range(3):
        await publisher.request({"op": "publish", "topic": "chat/a", "data": n, "id": n})
        position = (await first.recv())["pos"]
    await first.aclose()
    # Away: these are missed, on the topic and (for wildcards) on another one.
    for n in range(3, 8):
        await publisher.request({"op": "publish", "topic": "chat/a", "data": n, "id": n})
        await publisher.request({"op": "publish", "topic": "chat/b", "data": -n, "id": -n})
    again = await connect(broker)
    await again.send({"op": "subscribe", "topic": topic_filter, "id": 2, "since": position})
    replayed, ack = await read_until(again, "ack")
    expected = [n for n in range(3, 8)]
    if topic_filter != "chat/a":
        expected = [m for n in range(3, 8) for m in (n, -n)]
    assert [m["data"] for m in replayed] == expected
    assert ack["recovered"] is True and ack["id"] == 2
    await publisher.request({"op": "publish", "topic": "chat/a", "data": 99, "id": 99})
    live = await again.recv()
    assert live["data"] == 99 and live["pos"] > ack["pos"][:-1]


async def test_nothing_is_lost_or_doubled_while_others_publish_during_the_replay(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await history_broker(start_broker, history_size=100_000)
    publisher = await connect(broker)
    reader = await connect(broker)
    ack = await reader.request({"op": "subscribe", "topic": "chat/#", "id": "s"})
    total, stop_reading_at = 6000, 500
    flooding = trio.Event()

    async def flood() -> None:
        for n in range(total):
            await publisher.send({"op": "publish", "topic": f"chat/{n % 3}", "data": n})
            if n == 2 * stop_reading_at:
                flooding.set()
            if n % 200 == 0:
                await trio.lowlevel.checkpoint()

    seen: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        position = ack["pos"]
        while len(seen) < stop_reading_at:
            message = await reader.recv()
            seen.append(message["data"])
            position = message["pos"]
        await reader.aclose()
        await flooding.wait()  # publishes keep coming during the replay below
        again = await connect(broker)
        await again.send({"op": "subscribe", "topic": "chat/#", "id": "r", "since": position})
        while len(seen) < total:
            message = await again.recv()
            if message["op"] == "ack":
                assert message["recovered"] is True
                continue
            seen.append(message["data"])
    assert seen == list(range(total))


async def test_a_position_older_than_the_window_says_recovered_false(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await history_broker(start_broker, history_size=3)
    client = await connect(broker)
    ack = await client.request({"op": "subscribe", "topic": "chat/a", "id": 1})
    for n in range(5):
        await client.send({"op": "publish", "topic": "chat/a", "data": n, "id": n})
    # Published once acked: with Redis, a publish still on its way could otherwise reach
    # Redis after the replay below read the history.
    acks = [m for m in [await client.recv() for _ in range(10)] if m["op"] == "ack"]
    assert len(acks) == 5
    await client.aclose()
    again = await connect(broker)
    await again.send({"op": "subscribe", "topic": "chat/a", "id": 2, "since": ack["pos"]})
    replayed, reply = await read_until(again, "ack")
    assert [m["data"] for m in replayed] == [2, 3, 4]  # what it has
    assert reply["recovered"] is False


@MEMORY_ONLY
async def test_expired_messages_make_recovery_incomplete(
    start_broker: StartBroker, connect: Connect, autojump_clock: trio.testing.MockClock
) -> None:
    # No heartbeat: the client does not read while the clock jumps.
    broker = await history_broker(start_broker, history_ttl=60, server={"heartbeat_interval": 0})
    client = await connect(broker)
    ack = await client.request({"op": "subscribe", "topic": "chat/a", "id": 1})
    await client.request({"op": "publish", "topic": "chat/a", "data": "old", "id": 2})
    await client.recv()
    await trio.sleep(61)
    assert len(broker.engine.store) == 0  # type: ignore[attr-defined]  # the timer task ran
    await client.request({"op": "publish", "topic": "chat/a", "data": "new", "id": 3})
    await client.recv()
    await client.send({"op": "unsubscribe", "topic": "chat/a"})
    await client.send({"op": "subscribe", "topic": "chat/a", "id": 4, "since": ack["pos"]})
    replayed, reply = await read_until(client, "ack")
    assert [m["data"] for m in replayed] == ["new"]
    assert reply["recovered"] is False


@pytest.mark.parametrize("since", ["garbage", "", "x:1", "0:-1", "ffffffff:999999"])
async def test_a_position_from_elsewhere_is_not_an_error_but_not_recovered(
    start_broker: StartBroker, connect: Connect, since: str
) -> None:
    broker = await history_broker(start_broker)
    client = await connect(broker)
    await client.request({"op": "publish", "topic": "chat/a", "data": 1, "id": 1})
    await client.send({"op": "subscribe", "topic": "chat/a", "id": 2, "since": since})
    replayed, reply = await read_until(client, "ack")
    assert [m["data"] for m in replayed] == [1]
    assert reply["recovered"] is False


@MEMORY_ONLY
async def test_after_a_restart_old_positions_are_not_recovered(
    start_broker: StartBroker, connect: Connect
) -> None:
    first = await history_broker(start_broker)
    client = await connect(first)
    ack = await client.request({"op": "subscribe", "topic": "chat/a", "id": 1})
    second = await history_broker(start_broker)  # a new run: a new epoch
    other = await connect(second)
    await other.send({"op": "subscribe", "topic": "chat/a", "id": 2, "since": ack["pos"]})
    assert (await other.recv())["recovered"] is False


async def test_since_needs_an_id_and_a_string(start_broker: StartBroker, connect: Connect) -> None:
    broker = await history_broker(start_broker)
    client = await connect(broker)
    await client.send({"op": "subscribe", "topic": "chat/a", "since": "x:1"})
    assert (await client.recv())["code"] == "bad_request"
    reply = await client.request({"op": "subscribe", "topic": "chat/a", "since": 5, "id": 1})
    assert (reply["code"], reply["id"]) == ("bad_request", 1)


async def test_history_returns_the_newest_and_is_authorized_like_a_subscribe(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(
        [ACL],
        topics=[CHAT, {"filter": "secret/#", "history_size": 10}],
        limits={"max_history_request": 3},
    )
    client = await connect(broker)
    for n in range(5):
        await client.request({"op": "publish", "topic": f"chat/{n % 2}", "data": n, "id": n})
        await client.request({"op": "publish", "topic": "secret/x", "data": n, "id": n})
    reply = await client.request({"op": "history", "topic": "chat/+", "limit": 10, "id": "h"})
    assert reply["op"] == "history" and reply["id"] == "h"
    assert [m["data"] for m in reply["messages"]] == [2, 3, 4]  # capped at 3, oldest first
    assert reply["messages"][0].keys() == {"topic", "data", "pos"}
    if isinstance(broker.engine, MemoryEngine):  # Redis counts its own way, and keeps them
        assert reply["pos"].endswith(":10")  # one count for every topic with history
        assert broker.engine.retained[0] == 10
    two = await client.request({"op": "history", "topic": "chat/0", "limit": 2, "id": 1})
    assert [m["data"] for m in two["messages"]] == [2, 4]
    refused = await client.request({"op": "history", "topic": "secret/#", "id": 2})
    assert refused["code"] == "forbidden"
    nothing = await client.request({"op": "history", "topic": "other", "id": 3})
    assert nothing == {"op": "history", "id": 3, "messages": []}
    for bad in ({"limit": -1}, {"limit": "5"}, {"topic": "a//b"}):
        reply = await client.request({"op": "history", "topic": "chat/#", "id": 9, **bad})
        assert reply["op"] == "error"


async def test_history_since_a_position_gives_what_came_after_and_whether_that_is_all(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(
        [ACL],
        topics=[{"filter": "chat/small", "history_size": 2}, CHAT],
        limits={"max_history_request": 3},
    )
    client = await connect(broker)
    for n in range(5):
        await client.request({"op": "publish", "topic": f"chat/{n % 2}", "data": n, "id": n})

    async def history(topic: str, **fields: Any) -> dict[str, Any]:
        return await client.request({"op": "history", "topic": topic, "id": "h", **fields})

    newest = await history("chat/+")
    (two, three, four) = newest["messages"]
    assert "recovered" not in newest and "more" not in newest

    def summary(reply: dict[str, Any]) -> tuple[list[Any], bool, bool]:
        return [m["data"] for m in reply["messages"]], reply["recovered"], reply["more"]

    after = await history("chat/+", since=three["pos"])
    assert summary(after) == ([4], True, False) and after["pos"] == newest["pos"]
    assert summary(await history("chat/0", since=two["pos"])) == ([4], True, False)
    # Paging forward: the oldest after it, then on from the last one received.
    first = await history("chat/+", since=two["pos"], limit=1)
    assert summary(first) == ([3], True, True)
    rest = await history("chat/+", since=first["messages"][-1]["pos"], limit=1)
    assert summary(rest) == ([4], True, False)
    assert summary(await history("chat/+", since=newest["pos"])) == ([], True, False)
    # A position it cannot read: from the oldest retained, not recovered (as a subscribe).
    epoch, offset = four["pos"].split(":")
    for unreadable in ("nonsense", "0:1", f"{epoch}:{int(offset) + 10**9}"):  # from later
        assert summary(await history("chat/+", since=unreadable)) == ([0, 1, 2], False, True)
    # Dropped by the history bounds: not recovered.
    for n in range(3):
        await client.request({"op": "publish", "topic": "chat/small", "data": n, "id": n})
    assert summary(await history("chat/small", since=newest["pos"])) == ([1, 2], False, False)
    no_history = await history("other", since=newest["pos"])
    assert no_history == {
        "op": "history",
        "id": "h",
        "messages": [],
        "recovered": False,
        "more": False,
    }
    refused = await history("chat/+", since=5)
    assert (refused["code"], refused["message"]) == ("bad_request", "'since' must be a string")


async def test_a_replay_passes_the_delivery_filters_like_live_messages(
    start_broker: StartBroker, connect: Connect
) -> None:
    auth = {"use": "tests.example_plugins:HeaderAuth"}
    only = {"use": "tests.example_plugins:OnlyRole", "prefix": "chat/staff", "role": "staff"}
    broker = await history_broker(start_broker, auth, only)
    publisher = await connect(broker, headers={"X-User": "boss", "X-Roles": "staff"})
    for topic in ("chat/all", "chat/staff", "chat/all"):
        await publisher.request({"op": "publish", "topic": topic, "data": topic, "id": 1})
    guest = await connect(broker, headers={"X-User": "guest"})
    await guest.send({"op": "subscribe", "topic": "chat/#", "id": 2, "since": "x"})
    replayed, _ = await read_until(guest, "ack")
    assert [m["data"] for m in replayed] == ["chat/all", "chat/all"]
    staff = await connect(broker, headers={"X-User": "staff", "X-Roles": "staff"})
    await staff.send({"op": "subscribe", "topic": "chat/#", "id": 2, "since": "x"})
    replayed, _ = await read_until(staff, "ack")
    assert [m["data"] for m in replayed] == ["chat/all", "chat/staff", "chat/all"]


async def test_live_messages_waiting_behind_a_replay_are_bounded(
    start_broker: StartBroker, connect: Connect
) -> None:
    # The replay blocks on a client that does not read; live messages pile up aside, and
    # the client is cut off once they reach max_queued_messages, long before
    # slow_consumer_timeout: nobody waits on it meanwhile.
    broker = await start_broker(
        topics=[CHAT],
        limits={"max_queued_messages": 3, "slow_consumer_timeout": 30},
    )
    publisher = await connect(broker)
    big = "x" * 60_000
    for n in range(20):
        await publisher.request({"op": "publish", "topic": "chat/big", "data": [n, big], "id": n})
    stalled = await connect(broker, receive_buffer=4096)
    await stalled.send({"op": "subscribe", "topic": "chat/big", "id": "r", "since": "x"})
    started = trio.current_time()
    with trio.fail_after(5):
        for n in range(4):
            reply = await publisher.request(
                {"op": "publish", "topic": "chat/big", "data": n, "id": n}
            )
            assert reply["op"] == "ack"
    code, reason = await stalled.wait_closed(timeout=10)
    assert (code, reason) == (1008, "slow consumer")
    assert trio.current_time() - started < 10


async def test_subscribing_again_acks_with_the_position_and_recovers_without_doubles(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await history_broker(start_broker)
    client = await connect(broker)
    first = await client.request({"op": "subscribe", "topic": "chat/#", "id": 1})
    await client.send({"op": "publish", "topic": "chat/a", "data": 1})
    assert (await client.recv())["data"] == 1
    again = await client.request({"op": "subscribe", "topic": "chat/#", "id": 3})
    assert again["op"] == "ack" and again["pos"] > first["pos"]
    await client.send({"op": "subscribe", "topic": "chat/#", "id": 4, "since": first["pos"]})
    replayed, ack = await read_until(client, "ack")
    assert [m["data"] for m in replayed] == [1]
    assert ack["recovered"] is True
    await client.send({"op": "publish", "topic": "chat/a", "data": 2})
    assert (await client.recv())["data"] == 2  # once: still one subscription
    assert await client.request({"op": "ping", "id": 6}) == {"op": "pong", "id": 6}
    assert broker.engine.subscription_count == 1


async def test_a_history_reply_holds_no_more_than_a_queue_does(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(topics=[CHAT], limits={"max_queued_bytes": 100_000})
    client = await connect(broker)
    for n in range(10):  # 10 x 30 KB retained, 300 KB
        await client.request(
            {"op": "publish", "topic": "chat/a", "data": [n, "x" * 30_000], "id": n}
        )
    reply = await client.request({"op": "history", "topic": "chat/a", "id": "h"})
    assert [m["data"][0] for m in reply["messages"]] == [7, 8, 9]  # the newest that fit

"""The protocol contract over real sockets, against an in-process broker."""

import json
from typing import Any

import pytest
import trio

from broker import Broker, __version__
from tests.conftest import UPGRADE, Connect, StartBroker, http_exchange, make_config, url
from tests.wsclient import Closed, Rejected, WsClient

# --- Handshake -------------------------------------------------------------------------------


async def test_welcome_comes_first(broker: Broker, connect: Connect) -> None:
    first = await connect(broker, welcome=False)
    second = await connect(broker, welcome=False)
    hello = await first.recv()
    assert hello["op"] == "welcome"
    assert hello["server"] == f"trio-broker/{__version__}"
    assert isinstance(hello["client_id"], str) and hello["client_id"]
    assert (await second.recv())["client_id"] != hello["client_id"]


async def test_other_paths_get_404(broker: Broker) -> None:
    with pytest.raises(Rejected) as caught:
        await WsClient.connect(url(broker, "/other"))
    assert caught.value.status == 404


async def test_path_with_query_string_is_accepted(broker: Broker, connect: Connect) -> None:
    await connect(url(broker, "/ws?token=abc"))


async def test_over_max_connections_gets_503(start_broker: StartBroker, connect: Connect) -> None:
    broker = await start_broker(limits={"max_connections": 2})
    first = await connect(broker)
    await connect(broker)
    with pytest.raises(Rejected) as caught:
        await WsClient.connect(url(broker))
    assert caught.value.status == 503
    await first.aclose()  # returns after the server closed the TCP connection
    await connect(broker)


async def test_garbage_handshake_gets_400(broker: Broker) -> None:
    assert (await http_exchange(broker, b"HELLO\r\n\r\n")).startswith(b"HTTP/1.1 400 ")


async def test_unsupported_websocket_version_gets_426(broker: Broker) -> None:
    request = UPGRADE.replace(b"Version: 13", b"Version: 8") + b"\r\n"
    response = await http_exchange(broker, request)
    assert response.startswith(b"HTTP/1.1 426 ")
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in response


@pytest.mark.parametrize("path", [b"/ws", b"/", b"/favicon.ico"])
async def test_a_browser_address_bar_or_curl_is_told_this_is_a_websocket_endpoint(
    broker: Broker, path: bytes
) -> None:
    request = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n"
    response = await http_exchange(broker, request)
    assert response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"\r\nUpgrade: websocket\r\n" in response
    assert b"this is a WebSocket endpoint: connect with a WebSocket client" in response


async def test_unfinished_handshake_is_dropped(start_broker: StartBroker) -> None:
    broker = await start_broker(server={"handshake_timeout": 0.2})
    stream = await trio.open_tcp_stream("127.0.0.1", broker.port)
    async with stream:
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        with trio.fail_after(5):
            assert await stream.receive_some(4096) == b""


# --- Requests and replies --------------------------------------------------------------------


async def test_subscribe_publish_and_acks(broker: Broker, connect: Connect) -> None:
    sub = await connect(broker)
    pub = await connect(broker)
    assert await sub.request({"op": "subscribe", "topic": "chat/1", "id": 1}) == {
        "op": "ack",
        "id": 1,
    }
    assert await pub.request({"op": "publish", "topic": "chat/1", "data": [1, "x"], "id": "p"}) == {
        "op": "ack",
        "id": "p",
    }
    assert await sub.recv() == {"op": "message", "topic": "chat/1", "data": [1, "x"]}


async def test_no_ack_without_id(broker: Broker, connect: Connect) -> None:
    client = await connect(broker)
    await client.send({"op": "subscribe", "topic": "t"})
    await client.send({"op": "publish", "topic": "t", "data": None})
    await client.send({"op": "ping"})
    assert await client.recv() == {"op": "message", "topic": "t", "data": None}
    assert await client.recv() == {"op": "pong"}


async def test_ping_pong(broker: Broker, connect: Connect) -> None:
    client = await connect(broker)
    assert await client.request({"op": "ping", "id": 42}) == {"op": "pong", "id": 42}


async def test_publisher_gets_own_message_only_if_subscribed(
    broker: Broker, connect: Connect
) -> None:
    client = await connect(broker)
    await client.request({"op": "publish", "topic": "t", "data": 1, "id": 1})
    await client.request({"op": "subscribe", "topic": "t", "id": 2})
    await client.send({"op": "publish", "topic": "t", "data": 2, "id": 3})
    assert await client.recv() == {"op": "message", "topic": "t", "data": 2}
    assert await client.recv() == {"op": "ack", "id": 3}


async def test_subscribe_and_unsubscribe_are_idempotent(broker: Broker, connect: Connect) -> None:
    client = await connect(broker)
    for request_id in (1, 2):
        assert await client.request({"op": "subscribe", "topic": "t", "id": request_id}) == {
            "op": "ack",
            "id": request_id,
        }
    await client.send({"op": "publish", "topic": "t", "data": "once", "id": 3})
    assert await client.recv() == {"op": "message", "topic": "t", "data": "once"}
    assert await client.recv() == {"op": "ack", "id": 3}
    for request_id in (4, 5):
        assert await client.request({"op": "unsubscribe", "topic": "t", "id": request_id}) == {
            "op": "ack",
            "id": request_id,
        }
    assert await client.request({"op": "publish", "topic": "t", "data": 0, "id": 6}) == {
        "op": "ack",
        "id": 6,
    }


async def test_unicode_payloads(broker: Broker, connect: Connect) -> None:
    client = await connect(broker)
    await client.request({"op": "subscribe", "topic": "ünï/☃", "id": 1})
    data = {"emoji": "🎉", "escaped": "\ud83c", "nested": [{"a": [None, 1.5, -2, True]}]}
    await client.send({"op": "publish", "topic": "ünï/☃", "data": data})
    assert await client.recv() == {"op": "message", "topic": "ünï/☃", "data": data}


# --- Errors ----------------------------------------------------------------------------------


async def _expect_error(client: WsClient, code: str, request_id: Any = None) -> str:
    reply = await client.recv()
    assert reply["op"] == "error", reply
    assert reply["code"] == code, reply
    assert reply.get("id") == request_id
    assert isinstance(reply["message"], str) and reply["message"]
    return str(reply["message"])


@pytest.mark.parametrize(
    ("frame", "request_id"),
    [
        ("not json", None),
        ("[1, 2]", None),
        ('{"op": "dance", "id": 1}', 1),
        ('{"op": "subscribe", "id": 2}', 2),
        ('{"op": "subscribe", "topic": 7, "id": 3}', 3),
        ('{"op": "publish", "topic": "t", "id": 4}', 4),
        ('{"op": "ping", "id": {"no": 1}}', None),
    ],
)
async def test_bad_request(broker: Broker, connect: Connect, frame: str, request_id: Any) -> None:
    client = await connect(broker)
    await client.send_text(frame)
    await _expect_error(client, "bad_request", request_id)
    assert await client.request({"op": "ping", "id": 0}) == {"op": "pong", "id": 0}


async def test_binary_frame_is_bad_request(broker: Broker, connect: Connect) -> None:
    client = await connect(broker)
    await client.send_bytes(b'{"op": "ping"}')
    assert "binary" in await _expect_error(client, "bad_request")
    assert await client.request({"op": "ping", "id": 0}) == {"op": "pong", "id": 0}


@pytest.mark.parametrize(
    "request_",
    [
        {"op": "publish", "topic": "a/+", "data": 1},
        {"op": "publish", "topic": "a/#", "data": 1},
        {"op": "publish", "topic": "a//b", "data": 1},
        {"op": "publish", "topic": "", "data": 1},
        {"op": "subscribe", "topic": "a/#/b"},
        {"op": "subscribe", "topic": "a+"},
        {"op": "unsubscribe", "topic": "/a"},
        {"op": "subscribe", "topic": "x" * 300},
    ],
)
async def test_invalid_topic(broker: Broker, connect: Connect, request_: dict[str, Any]) -> None:
    client = await connect(broker)
    await client.send({**request_, "id": "bad"})
    await _expect_error(client, "invalid_topic", "bad")


async def test_max_topic_length_is_configurable(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(limits={"max_topic_length": 4})
    client = await connect(broker)
    assert (await client.request({"op": "subscribe", "topic": "abcd", "id": 1}))["op"] == "ack"
    await client.send({"op": "subscribe", "topic": "abcde", "id": 2})
    await _expect_error(client, "invalid_topic", 2)


async def test_publishing_to_reserved_topic_is_forbidden(broker: Broker, connect: Connect) -> None:
    client = await connect(broker)
    await client.send({"op": "publish", "topic": "$SYS/x", "data": 1, "id": 9})
    assert "reserved" in await _expect_error(client, "forbidden", 9)
    # Subscribing to reserved topics is allowed.
    assert await client.request({"op": "subscribe", "topic": "$SYS/#", "id": 10}) == {
        "op": "ack",
        "id": 10,
    }


async def test_subscription_limit(start_broker: StartBroker, connect: Connect) -> None:
    broker = await start_broker(limits={"max_subscriptions": 2})
    client = await connect(broker)
    for n in range(2):
        await client.request({"op": "subscribe", "topic": f"t/{n}", "id": n})
    await client.send({"op": "subscribe", "topic": "t/2", "id": 2})
    await _expect_error(client, "limit_exceeded", 2)
    # Re-subscribing to a held filter is not a new subscription.
    assert await client.request({"op": "subscribe", "topic": "t/1", "id": 3}) == {
        "op": "ack",
        "id": 3,
    }
    await client.request({"op": "unsubscribe", "topic": "t/0", "id": 4})
    assert await client.request({"op": "subscribe", "topic": "t/2", "id": 5}) == {
        "op": "ack",
        "id": 5,
    }


async def test_unexpected_failure_is_internal_and_not_fatal(
    broker: Broker, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_publish(*args: Any, **options: Any) -> None:
        raise RuntimeError("boom")

    client = await connect(broker)
    # The engine's, not the router's: the router may be compiled, and cannot be patched.
    monkeypatch.setattr(type(broker.engine), "publish", broken_publish)
    await client.send({"op": "publish", "topic": "t", "data": 1, "id": 1})
    assert await _expect_error(client, "internal", 1) == "internal error"
    monkeypatch.undo()
    assert await client.request({"op": "publish", "topic": "t", "data": 1, "id": 2}) == {
        "op": "ack",
        "id": 2,
    }


# --- Close codes -----------------------------------------------------------------------------


async def test_oversized_message_closes_with_1009(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(limits={"max_message_size": 1024})
    client = await connect(broker)
    ok = json.dumps({"op": "publish", "topic": "t", "data": "x" * 900, "id": 1})
    assert await client.request(json.loads(ok)) == {"op": "ack", "id": 1}
    await client.send({"op": "publish", "topic": "t", "data": "x" * 1100})
    assert await client.wait_closed() == (1009, "message too big")


async def test_oversized_fragmented_message_closes_with_1009(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(limits={"max_message_size": 1024})
    client = await connect(broker)
    client.protocol.send_text(b'{"op":"ping","x":"', fin=False)
    for _ in range(200):
        client.protocol.send_continuation(b"x" * 10, fin=False)
    await client._flush()
    assert (await client.wait_closed())[0] == 1009


async def test_fragmented_message_within_limit_is_accepted(
    broker: Broker, connect: Connect
) -> None:
    client = await connect(broker)
    text = json.dumps({"op": "ping", "id": "fragmented"}).encode()
    client.protocol.send_text(text[:5], fin=False)
    client.protocol.send_continuation(text[5:10], fin=False)
    client.protocol.send_continuation(text[10:], fin=True)
    await client._flush()
    assert await client.recv() == {"op": "pong", "id": "fragmented"}


async def test_unmasked_client_frame_closes_with_1002(broker: Broker, connect: Connect) -> None:
    client = await connect(broker)
    await client.stream.send_all(bytes([0x81, 0x02]) + b"hi")
    assert (await client.wait_closed())[0] == 1002


async def test_invalid_utf8_closes_with_1007(broker: Broker, connect: Connect) -> None:
    client = await connect(broker)
    await client.stream.send_all(bytes([0x81, 0x82]) + b"\0\0\0\0" + b"\xff\xfe")
    assert (await client.wait_closed())[0] == 1007


async def test_client_close_is_answered(broker: Broker, connect: Connect) -> None:
    client = await connect(broker)
    client.protocol.send_close(4000, "bye")
    await client._flush()
    assert await client.wait_closed() == (4000, "bye")


async def test_shutdown_drains_then_closes_with_1001(
    nursery: trio.Nursery, connect: Connect
) -> None:
    limits = {"max_queued_messages": 1000, "max_queued_bytes": 100_000_000}
    broker = Broker(make_config(limits={**limits, "max_message_size": 100_000}))
    done = trio.Event()

    async def serve(task_status: trio.TaskStatus[None]) -> None:
        await broker.serve(task_status=task_status)
        done.set()

    await nursery.start(serve)
    subscriber = await connect(broker)
    publisher = await connect(broker)
    await subscriber.request({"op": "subscribe", "topic": "t", "id": 0})
    # ~20 MB while the subscriber is not reading: more than the socket buffers hold, so most
    # of it is still in the subscriber's outbox when the shutdown starts.
    count, payload = 300, "x" * 65_000
    for n in range(count):
        await publisher.send({"op": "publish", "topic": "t", "data": [n, payload]})
    assert await publisher.request({"op": "ping", "id": "queued"}) == {"op": "pong", "id": "queued"}
    broker.stop()
    assert await publisher.wait_closed() == (1001, "server shutdown")
    for n in range(count):
        assert (await subscriber.recv())["data"][0] == n
    assert await subscriber.wait_closed() == (1001, "server shutdown")
    with trio.fail_after(5):
        await done.wait()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", broker.port)


# --- Routing ---------------------------------------------------------------------------------


async def test_wildcards_and_reserved_topics(broker: Broker, connect: Connect) -> None:
    clients = {}
    for topic_filter in ("sport/+", "sport/#", "+/tennis", "#", "$SYS/#", "sport/tennis/+"):
        client = await connect(broker)
        await client.request({"op": "subscribe", "topic": topic_filter, "id": 1})
        clients[topic_filter] = client
    publisher = await connect(broker)
    expectations = {
        "sport": {"sport/#", "#"},
        "sport/tennis": {"sport/+", "sport/#", "+/tennis", "#"},
        "sport/tennis/p1": {"sport/#", "#", "sport/tennis/+"},
    }  # "$SYS/#" gets nothing: clients cannot publish there (see test_subscriptions for "#")
    for topic in expectations:
        await publisher.request({"op": "publish", "topic": topic, "data": topic, "id": 1})
    for topic_filter, client in clients.items():
        wanted = [t for t, filters in expectations.items() if topic_filter in filters]
        await client.send({"op": "ping", "id": "end"})
        got = []
        while (reply := await client.recv())["op"] == "message":
            got.append(reply["data"])
        assert reply == {"op": "pong", "id": "end"}
        assert got == wanted, topic_filter


async def test_overlapping_subscriptions_deliver_once(broker: Broker, connect: Connect) -> None:
    client = await connect(broker)
    for n, topic_filter in enumerate(("a/b", "a/+", "a/#", "#", "+/b")):
        await client.request({"op": "subscribe", "topic": topic_filter, "id": n})
    await client.send({"op": "publish", "topic": "a/b", "data": "x", "id": "p"})
    assert await client.recv() == {"op": "message", "topic": "a/b", "data": "x"}
    assert await client.recv() == {"op": "ack", "id": "p"}


async def test_fan_out_and_per_publisher_order(broker: Broker, connect: Connect) -> None:
    subscribers = [await connect(broker) for _ in range(20)]
    for subscriber in subscribers:
        await subscriber.request({"op": "subscribe", "topic": "feed", "id": 0})
    publishers = [await connect(broker) for _ in range(3)]
    count = 300

    async def publish(index: int, client: WsClient) -> None:
        for n in range(count):
            await client.send({"op": "publish", "topic": "feed", "data": [index, n]})
        assert await client.request({"op": "ping", "id": "done"}) == {"op": "pong", "id": "done"}

    async def receive(client: WsClient, received: list[list[int]]) -> None:
        for _ in range(count * len(publishers)):
            received.append((await client.recv())["data"])

    results: list[list[list[int]]] = [[] for _ in subscribers]
    async with trio.open_nursery() as nursery:
        for subscriber, received in zip(subscribers, results, strict=True):
            nursery.start_soon(receive, subscriber, received)
        for index, publisher in enumerate(publishers):
            nursery.start_soon(publish, index, publisher)
    for received in results:
        for index in range(len(publishers)):
            assert [n for i, n in received if i == index] == list(range(count))


# --- Backpressure and slow consumers ---------------------------------------------------------


async def test_stalled_subscriber_is_closed_and_fast_one_gets_everything(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(
        limits={"max_queued_messages": 8, "slow_consumer_timeout": 0.5, "max_message_size": 65536}
    )
    stalled = await connect(broker)
    fast = await connect(broker)
    publisher = await connect(broker)
    for client in (stalled, fast):
        await client.request({"op": "subscribe", "topic": "busy", "id": 0})
    payload = "x" * 16_000
    count = 1000  # 16 MB: more than the socket buffers between the broker and `stalled`

    async def publish() -> None:
        for n in range(count):
            await publisher.send({"op": "publish", "topic": "busy", "data": [n, payload]})
        assert await publisher.request({"op": "ping", "id": 1}, timeout=30) == {
            "op": "pong",
            "id": 1,
        }

    async def receive_all() -> None:
        for n in range(count):
            message = await fast.recv(timeout=30)
            assert message["data"][0] == n

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish)
        nursery.start_soon(receive_all)
    # The publisher was held up by the stalled subscriber, but only until it was cut off.
    assert trio.current_time() - started >= 0.5
    received = 0
    with pytest.raises(Closed) as caught:
        while True:
            message = await stalled.recv()
            assert message["data"][0] == received
            received += 1
    assert (caught.value.code, caught.value.reason) == (1008, "slow consumer")
    assert 0 < received < count
    await stalled.aclose()
    assert broker.connection_count == 2


async def test_slow_reader_is_never_dropped(start_broker: StartBroker, connect: Connect) -> None:
    broker = await start_broker(limits={"max_queued_messages": 2, "slow_consumer_timeout": 2.0})
    reader = await connect(broker)
    publisher = await connect(broker)
    await reader.request({"op": "subscribe", "topic": "t", "id": 0})
    count = 200

    async def publish() -> None:
        for n in range(count):
            await publisher.send({"op": "publish", "topic": "t", "data": n})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish)
        for n in range(count):
            assert (await reader.recv())["data"] == n
            if n % 20 == 0:
                await trio.sleep(0.05)  # reading slowly, not synchronising
    assert await publisher.request({"op": "ping", "id": 1}) == {"op": "pong", "id": 1}


# --- Heartbeats ------------------------------------------------------------------------------


async def test_heartbeat_keeps_answering_clients(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(server={"heartbeat_interval": 0.05, "heartbeat_timeout": 0.5})
    client = await connect(broker)
    pings = 0
    while pings < 5:
        frame = await client.recv_frame()  # reading answers each ping with a pong
        pings += frame.opcode.name == "PING"
    assert await client.request({"op": "ping", "id": 1}) == {"op": "pong", "id": 1}


async def test_heartbeat_spares_a_publisher_held_by_backpressure(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(
        server={"heartbeat_interval": 0.05, "heartbeat_timeout": 0.2},
        limits={"max_queued_messages": 1, "slow_consumer_timeout": 5.0},
    )
    reader = await connect(broker, receive_buffer=65536)
    publisher = await connect(broker)
    await reader.request({"op": "subscribe", "topic": "t", "id": 0})
    count, payload = 200, "x" * 16_000

    async def read_slowly() -> None:
        # The reader keeps reading (and answering its pings), slower than the publisher sends.
        for n in range(count):
            assert (await reader.recv())["data"][0] == n
            await trio.sleep(0.005)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_slowly)
        for n in range(count):
            await publisher.send({"op": "publish", "topic": "t", "data": [n, payload]})
        # Held up, the broker reads nothing from the publisher, its pongs included.
        assert await publisher.request({"op": "ping", "id": "end"}) == {"op": "pong", "id": "end"}
        held = trio.current_time() - started
    assert held > 0.5, "the publisher was not held up long enough to test anything"


async def test_heartbeat_closes_silent_clients(start_broker: StartBroker) -> None:
    broker = await start_broker(
        server={"heartbeat_interval": 0.05, "heartbeat_timeout": 0.1, "close_timeout": 0.5}
    )
    client = await WsClient.connect(url(broker))
    # Read the raw bytes without feeding the protocol, so no ping is ever answered.
    raw = b""
    with trio.fail_after(10):
        while chunk := await client.stream.receive_some(65536):
            raw += chunk
    await client.stream.aclose()
    client.protocol.receive_data(raw)
    client.protocol.receive_eof()
    assert (client.protocol.close_code, client.protocol.close_reason) == (1011, "heartbeat timeout")


# --- Reconfiguration -------------------------------------------------------------------------


async def test_new_limits_apply_to_new_connections(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(limits={"max_subscriptions": 1})
    old = await connect(broker)
    broker.reconfigure(make_config(limits={"max_subscriptions": 3}))
    new = await connect(broker)
    for n in range(3):
        assert (await new.request({"op": "subscribe", "topic": f"t/{n}", "id": n}))["op"] == "ack"
    await old.request({"op": "subscribe", "topic": "t/0", "id": 0})
    await old.send({"op": "subscribe", "topic": "t/1", "id": 1})
    await _expect_error(old, "limit_exceeded", 1)

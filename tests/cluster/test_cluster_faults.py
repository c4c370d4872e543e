"""The redis engine when Redis or a node fails: no hang, no duplicate, back on its own."""

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from broker import Broker
from tests.admin.test_admin import ADMIN, AUTH, admin_url, scrape
from tests.cluster.nodes import CHAT, read_until, subscribed
from tests.conftest import Connect, StartBroker, StartNode
from tests.daemon_process import Daemon, serving
from tests.redis_proxy import SlowPubSubProxy
from tests.redis_server import RedisServer
from tests.wsclient import Closed, WsClient

pytestmark = pytest.mark.slow  # redis-server, subprocesses


async def wait_ready(node: Broker, ready: bool = True, timeout: float = 15) -> None:
    """Until the node's readiness is ``ready`` (it reconnects with backoff)."""
    with trio.fail_after(timeout):
        while (node.unready_reason is None) != ready:  # noqa: ASYNC110 (Redis is elsewhere)
            await trio.sleep(0.01)


async def test_while_redis_is_down_requests_fail_fast_nobody_is_dropped_and_it_comes_back(
    start_node: StartNode, connect: Connect, redis: RedisServer, http: httpx.AsyncClient
) -> None:
    nodes = [await start_node(topics=[CHAT], admin=ADMIN) for _ in range(2)]
    subscribers = [await subscribed(connect, node, "chat/#") for node in nodes]
    publisher = await connect(nodes[0])
    ack = await publisher.request({"op": "publish", "topic": "chat/a", "data": 1, "id": 1})
    assert ack["op"] == "ack"
    positions = [(await client.recv())["pos"] for client in subscribers]

    redis.kill()
    await wait_ready(nodes[0], ready=False)
    with trio.fail_after(5):  # each answer comes at once, none hangs
        for n in range(20):
            reply = await publisher.request(
                {"op": "publish", "topic": "chat/a", "data": n, "id": n}
            )
            assert reply["op"] == "error" and reply["code"] == "unavailable", reply
        for topic in ("chat/b", "news"):
            reply = await publisher.request({"op": "subscribe", "topic": topic, "id": "s"})
            assert reply["code"] == "unavailable"
        reply = await publisher.request({"op": "history", "topic": "chat/a", "id": "h"})
        assert reply["code"] == "unavailable"
        for topic in ("chat/a", "news"):  # without an id: an error without one
            await publisher.send({"op": "publish", "topic": topic, "data": 0})
            reply = await publisher.recv()
            assert reply["op"] == "error" and reply["code"] == "unavailable" and "id" not in reply
    response = await http.post(
        admin_url(nodes[1], "/api/publish"), headers=AUTH, json={"topic": "chat/a", "data": 0}
    )
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["code"] == "unavailable"
    ready = await http.get(admin_url(nodes[1], "/readyz"))
    assert ready.status_code == 503 and "redis" in ready.json()["reason"]
    metrics = await scrape(http, nodes[1])
    assert metrics["trio_broker_redis_up", (("shard", "0"),)] == 0
    assert metrics["trio_broker_redis_outages_total", (("shard", "0"),)] == 1
    assert all(node.connection_count == 2 for node in nodes[:1]) and nodes[1].connection_count == 1

    redis.start()  # empty: no persistence, as after a crash without a disk
    for node in nodes:
        await wait_ready(node)
    assert (await http.get(admin_url(nodes[1], "/readyz"))).status_code == 200
    # The subscriptions were made again on the new Redis: the same clients get the next one.
    ack = await publisher.request({"op": "publish", "topic": "chat/a", "data": "back", "id": 2})
    assert ack["op"] == "ack"
    for client in subscribers:
        message = await client.recv()
        assert message["data"] == "back"
        # A new history: old positions no longer recover, and say so.
        assert message["pos"].split(":")[0] != positions[0].split(":")[0]
    again = await connect(nodes[1])
    await again.send({"op": "subscribe", "topic": "chat/#", "id": 1, "since": positions[0]})
    replay, reply = await read_until(again, "ack")
    assert reply["recovered"] is False and [m["data"] for m in replay] == ["back"]
    metrics = await scrape(http, nodes[1])
    assert metrics["trio_broker_redis_up", (("shard", "0"),)] == 1


async def test_publishers_running_through_a_redis_restart_never_hang_nor_duplicate(
    start_node: StartNode, connect: Connect, redis: RedisServer
) -> None:
    a, b = await start_node(), await start_node()
    receiver = await subscribed(connect, b, "feed")
    publishers = [await connect(node) for node in (a, b)]
    acked: list[list[int]] = []
    refused = 0
    wanted, enough = 0, trio.Event()
    done = False

    async def publish(index: int, publisher: WsClient) -> None:
        nonlocal refused
        n = 0
        while not done:
            with trio.fail_after(10):
                reply = await publisher.request(
                    {"op": "publish", "topic": "feed", "data": [index, n], "id": n}
                )
            if reply["op"] == "ack":
                acked.append([index, n])
                if len(acked) >= wanted:
                    enough.set()
            else:
                assert reply["code"] == "unavailable"
                refused += 1
                await trio.sleep(0.01)  # as a client backing off before it retries
            n += 1

    async def acked_more(count: int) -> None:
        nonlocal wanted, enough
        wanted, enough = len(acked) + count, trio.Event()
        await enough.wait()

    async with trio.open_nursery() as nursery:
        for index, publisher in enumerate(publishers):
            nursery.start_soon(publish, index, publisher)
        await acked_more(50)
        redis.kill()
        await wait_ready(a, ready=False)
        await wait_ready(b, ready=False)
        redis.start()
        await wait_ready(a)
        await wait_ready(b)
        await acked_more(1)
        after_restart = len(acked) - 1
        await acked_more(50)
        done = True
    for publisher in publishers:
        reply = await publisher.request({"op": "publish", "topic": "feed", "data": "end", "id": 0})
        assert reply["op"] == "ack"
    received: list[Any] = []
    while received.count("end") < 2:
        received.append((await receiver.recv())["data"])
    messages = [tuple(m) for m in received if m != "end"]
    assert refused > 0
    assert len(messages) == len(set(messages)), "a message came twice"
    for index in (0, 1):
        mine = [n for i, n in messages if i == index]
        assert mine == sorted(mine), "out of order"
    # What was acked once Redis was back reached the subscriber, all of it.
    assert {tuple(m) for m in acked[after_restart:]} <= set(messages)


def node_config(
    directory: Path, redis: RedisServer, name: str, cluster: str = "", **server: Any
) -> Path:
    path = directory / f"{name}.toml"
    settings = "".join(f"{key} = {value!r}\n" for key, value in server.items())
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\n{settings}\n'
        f'[cluster]\nengine = "redis"\nredis_url = "{redis.url}"\n{cluster}\n'
        '[[topics]]\nfilter = "chat/#"\nhistory_size = 1000\npresence = true\n'
        "join_leave = true\n"
    )
    return path


async def test_a_node_killed_mid_stream_its_clients_recover_on_another(
    redis: RedisServer, tmp_path: Path, connect: Connect
) -> None:
    with (
        serving(node_config(tmp_path, redis, "a")) as a,
        serving(node_config(tmp_path, redis, "b")) as b,
    ):
        clients = [await connect(a.url) for _ in range(3)]
        for client in clients:
            assert (await client.request({"op": "subscribe", "topic": "chat/#", "id": 1}))["pos"]
        publisher = await connect(b.url)
        sent = 0
        last: list[str] = []
        for _ in range(10):
            await publisher.request({"op": "publish", "topic": "chat/r", "data": sent, "id": 1})
            sent += 1
        for client in clients:
            got = [await client.recv() for _ in range(10)]
            assert [m["data"] for m in got] == list(range(10))
            last.append(got[-1]["pos"])
        a.kill()  # SIGKILL: no close frame, no goodbye to Redis
        for client in clients:
            await client.wait_closed()
        for _ in range(10):  # while the clients are away
            await publisher.request({"op": "publish", "topic": "chat/r", "data": sent, "id": 2})
            sent += 1
        for position in last:
            again = await connect(b.url)
            await again.request({"op": "subscribe", "topic": "chat/other", "id": 1})
            await again.send({"op": "subscribe", "topic": "chat/#", "id": 2, "since": position})
            replay, ack = await read_until(again, "ack")
            assert [m["data"] for m in replay] == list(range(10, 20))
            assert ack["recovered"] is True


def worker_pids(daemon: Daemon, count: int) -> dict[int, int]:
    pids = {}
    while len(pids) < count:
        match = daemon.wait_for(r"worker (\d+) \(pid (\d+)\) listening")
        pids[int(match.group(1))] = int(match.group(2))
    return pids


async def test_workers_share_the_port_and_the_supervisor_restarts_one_that_dies(
    redis: RedisServer, tmp_path: Path, connect: Connect, http: httpx.AsyncClient
) -> None:
    config = node_config(tmp_path, redis, "workers", workers=2)
    with config.open("a") as file:
        file.write(
            '\n[admin]\nenabled = true\nhost = "127.0.0.1"\nport = 0\n'
            f'api_keys = [{{ key = "{"k" * 24}", user = "backend" }}]\n'
        )
    daemon = Daemon(config)
    try:
        pids = worker_pids(daemon, 2)
        daemon.wait_listening()
        admin = f"http://127.0.0.1:{daemon.wait_admin_listening()}"
        clients = [await connect(daemon.url) for _ in range(40)]
        for client in clients:
            await client.request({"op": "subscribe", "topic": "news", "id": 1})
        stats = (await http.get(f"{admin}/api/stats", headers=AUTH)).json()
        assert stats["connections"] == 40 and stats["subscriptions"] == 40
        response = await http.post(
            f"{admin}/api/publish", headers=AUTH, json={"topic": "news", "data": "hi"}
        )
        assert response.status_code == 200
        for client in clients:
            assert (await client.recv())["data"] == "hi"
        metrics = (await http.get(f"{admin}/metrics")).text
        assert "trio_broker_deliveries_total 40.0" in metrics

        os.kill(pids[1], signal.SIGKILL)
        daemon.wait_for(r"worker 1 exited \(killed by SIGKILL\); starting it again")
        new_pid = worker_pids(daemon, 1)[1]
        assert new_pid != pids[1]
        ready = await http.get(f"{admin}/readyz")
        assert ready.status_code == 200
        # The clients of the dead worker are gone; the others still get messages.
        survivors = []
        for client in clients:
            try:
                await client.request({"op": "ping", "id": 1}, timeout=2)
                survivors.append(client)
            except (Closed, trio.TooSlowError):
                pass
        # Both workers had some: the kernel spreads connections over their sockets.
        assert 0 < len(survivors) < 40
        stats = (await http.get(f"{admin}/api/stats", headers=AUTH)).json()
        assert stats["connections"] == len(survivors)

        daemon.send_signal(signal.SIGHUP)
        for _ in range(3):  # the supervisor and both workers
            daemon.wait_for(r"configuration reloaded")
        codes = []

        async def closed(client: WsClient) -> None:
            codes.append((await client.wait_closed())[0])

        async with trio.open_nursery() as nursery:
            for client in survivors:  # answering the close frames as they come
                nursery.start_soon(closed, client)
            daemon.send_signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(daemon.wait_exit) == 0
        assert codes == [1001] * len(survivors)
    finally:
        daemon.kill()


async def test_the_presence_of_a_dead_nodes_clients_expires(
    redis: RedisServer, tmp_path: Path, connect: Connect
) -> None:
    short = "presence_ttl = 3.0\n"
    with (
        serving(node_config(tmp_path, redis, "a", short)) as a,
        serving(node_config(tmp_path, redis, "b", short)) as b,
    ):
        watcher = await connect(b.url)
        await watcher.request({"op": "subscribe", "topic": "chat/room", "id": 1})
        doomed = await connect(a.url)
        await doomed.request({"op": "subscribe", "topic": "chat/room", "id": 1})

        async def present() -> int:
            await watcher.send({"op": "presence", "topic": "chat/room", "id": 2})
            _, reply = await read_until(watcher, "presence")  # after join events
            return len(reply["clients"])

        assert await present() == 2
        # Renewed while its node lives: still there after the TTL.
        await trio.sleep(4)
        assert await present() == 2
        a.kill()
        with trio.fail_after(10):
            while await present() == 2:  # noqa: ASYNC110 (Redis sends no event for it)
                await trio.sleep(0.2)
        assert await present() == 1


async def test_a_node_with_workers_goes_lame_duck_as_one(
    redis: RedisServer, tmp_path: Path, connect: Connect, http: httpx.AsyncClient
) -> None:
    config = node_config(tmp_path, redis, "lame", workers=2, lame_duck_duration=1.0)
    with config.open("a") as file:
        file.write('\n[admin]\nenabled = true\nhost = "127.0.0.1"\nport = 0\n')
    with serving(config, admin=True) as daemon:
        clients = [await connect(daemon.url) for _ in range(10)]
        daemon.send_signal(signal.SIGUSR2)
        daemon.wait_for("lame duck")
        ready = await http.get(f"http://127.0.0.1:{daemon.admin_port}/readyz")
        assert (ready.status_code, ready.json()["reason"]) == (503, "lame duck")
        for client in clients:
            assert await client.wait_closed() == (1001, "lame duck")
        assert await trio.to_thread.run_sync(daemon.wait_exit) == 0


async def test_a_node_that_falls_too_far_behind_redis_resubscribes_instead_of_growing(
    start_node: StartNode, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    # The receiving node is held up by a subscriber that reads nothing (its outbox holds
    # 10 messages, the node waits up to 2 s for room) while 3,000 messages come from Redis.
    receiving = await start_node(
        cluster={"max_backlog": 500},
        limits={"max_queued_messages": 10, "slow_consumer_timeout": 2.0},
    )
    sending = await start_node()
    stalled = await connect(receiving, receive_buffer=4096)
    assert (await stalled.request({"op": "subscribe", "topic": "t", "id": 1}))["op"] == "ack"
    healthy = await subscribed(connect, receiving, "t")
    received: list[int] = []

    async def read_healthy() -> None:
        while (message := await healthy.recv(timeout=30))["data"] != "after":
            received.append(message["data"][0])

    publisher = await connect(sending)
    padding = "x" * 2000
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_healthy)
        for n in range(3000):
            await publisher.send({"op": "publish", "topic": "t", "data": [n, padding]})
        assert await publisher.request({"op": "ping", "id": 1}) == {"op": "pong", "id": 1}
        shard = receiving.engine.shards[0]  # type: ignore[attr-defined]
        with trio.fail_after(20):
            while shard.outages == 0:  # noqa: ASYNC110 (the backlog is in coredis, no event)
                await trio.sleep(0.01)
        await wait_ready(receiving)
        # What waited beyond the limit was dropped, not delivered; then it carries on.
        ack = await publisher.request({"op": "publish", "topic": "t", "data": "after", "id": 2})
        assert ack == {"op": "ack", "id": 2}
    assert any("messages behind" in record.getMessage() for record in caplog.records)
    assert 0 < len(received) < 3000
    assert received == sorted(received)
    assert (await stalled.wait_closed())[0] in (1008, None)  # a slow consumer, dropped


async def test_a_subscribe_that_fails_loses_nothing_that_waited_aside_meanwhile(
    start_broker: StartBroker, connect: Connect, redis: RedisServer
) -> None:
    async with SlowPubSubProxy(str(redis.socket_path), delay=0) as proxy:
        cluster = {"engine": "redis", "redis_url": proxy.url, "redis_timeout": 0.5}
        node = await start_broker(cluster=cluster)
        client = await subscribed(connect, node, "news")
        publisher = await connect(node)
        proxy.delay = 5.0  # Redis' confirmation of the next subscription comes too late
        await client.send({"op": "subscribe", "topic": "chat/x", "id": "x"})
        shard = node.engine.shards[0]  # type: ignore[attr-defined]
        with trio.fail_after(5):
            while not shard.counts.channels.get("trio-broker:t:chat/x"):  # noqa: ASYNC110
                await trio.sleep(0.005)
        # The subscribe waits for Redis: a delivery for the other subscription waits aside.
        assert await publisher.request({"op": "publish", "topic": "news", "data": 1, "id": 1}) == {
            "op": "ack",
            "id": 1,
        }
        assert (await client.recv())["data"] == 1
        error = await client.recv()
        assert (error["op"], error["code"], error["id"]) == ("error", "unavailable", "x")

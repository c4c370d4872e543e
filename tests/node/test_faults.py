"""Faults under load, against the daemon as users run it: signals while a thousand clients are
connected and a publisher floods, peers that vanish, plugins that misbehave."""

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from broker import Broker
from tests.conftest import Connect, StartBroker, open_clients
from tests.daemon_process import Daemon
from tests.example_plugins import misbehave
from tests.wsclient import WsClient

pytestmark = pytest.mark.slow  # faults under load, subprocesses

CLIENTS = 1000
CONFIG = """
[server]
host = "127.0.0.1"
port = 0
shutdown_timeout = {shutdown_timeout}
[limits]
max_connections_per_ip = 0
handshake_rate_per_ip = 0
max_incoming_rate = 0
max_queued_bytes = {queued_bytes}
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    config = tmp_path / "broker.toml"
    config.write_text(CONFIG.format(shutdown_timeout=5.0, queued_bytes=1048576))
    process = Daemon(config)
    process.wait_listening()
    yield process
    process.kill()


async def flood(publisher: WsClient, topic: str, stop: trio.Event) -> int:
    """Publish numbered messages until ``stop`` or the server closes; how many went out."""
    sent = 0
    try:
        while not stop.is_set():
            await publisher.send({"op": "publish", "topic": topic, "data": sent})
            sent += 1
            if sent % 100 == 0:
                await trio.lowlevel.checkpoint()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    return sent


async def test_sigterm_under_load_closes_every_client_with_1001_and_exits_0(
    daemon: Daemon, opened: list[WsClient]
) -> None:
    clients = await open_clients(daemon.url, CLIENTS, opened)
    subscribers = clients[:100]
    for client in subscribers:
        await client.send({"op": "subscribe", "topic": "flood", "id": 1})
    publisher = await WsClient.connect(daemon.url)
    opened.append(publisher)
    closes: list[tuple[int | None, str | None]] = []
    stop = trio.Event()

    async def wait_closed(client: WsClient) -> None:
        closes.append(await client.wait_closed(timeout=30))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood, publisher, "flood", stop)
        # The flood reaches subscribers; read before the watchers start, as one client's
        # socket has one reader at a time.
        await subscribers[-1].recv()
        for client in clients:
            nursery.start_soon(wait_closed, client)
        signalled = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = await trio.to_thread.run_sync(daemon.wait_exit, 30)
        stopped_after = time.monotonic() - signalled
        stop.set()
    assert code == 0
    assert stopped_after < 5.0 + 1.0, "within shutdown_timeout (5 s), with a margin for the exit"
    assert len(closes) == CLIENTS
    assert set(closes) == {(1001, "server shutdown")}


async def test_sighup_under_load_loses_nothing_for_a_subscriber_that_keeps_reading(
    tmp_path: Path, opened: list[WsClient]
) -> None:
    config = tmp_path / "broker.toml"
    config.write_text(CONFIG.format(shutdown_timeout=5.0, queued_bytes=1048576))
    daemon = Daemon(config)
    try:
        daemon.wait_listening()
        clients = await open_clients(daemon.url, CLIENTS, opened)
        reader = clients[0]
        await reader.request({"op": "subscribe", "topic": "flood", "id": 1})
        publisher = await WsClient.connect(daemon.url)
        opened.append(publisher)
        assert (await publisher.recv())["op"] == "welcome"
        count = 20_000
        received: list[int] = []

        async def read_all() -> None:
            while len(received) < count:
                received.append((await reader.recv(timeout=30))["data"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            for n in range(count):
                await publisher.send({"op": "publish", "topic": "flood", "data": n})
                if n == count // 4:
                    config.write_text(CONFIG.format(shutdown_timeout=7.0, queued_bytes=2097152))
                    daemon.send_signal(signal.SIGHUP)
                if n % 100 == 0:
                    await trio.lowlevel.checkpoint()
        assert received == list(range(count))
        await trio.to_thread.run_sync(daemon.wait_for, "configuration reloaded")
    finally:
        daemon.kill()


async def test_a_vanished_peer_is_found_by_the_heartbeat_and_released(
    start_broker: StartBroker, connect: Connect, autojump_clock: trio.testing.MockClock
) -> None:
    broker = await start_broker(
        server={"heartbeat_interval": 30, "heartbeat_timeout": 10, "close_timeout": 5}
    )
    # A peer that completed the handshake, then went silent: never reads, never answers.
    client = await connect(broker)  # the welcome comes once the broker counts it
    assert broker.connection_count == 1
    started = trio.current_time()
    with trio.fail_after(100):  # virtual seconds: the autojump clock skips the waits
        while await client.stream.receive_some(65536):
            pass  # read raw: the ping arrives, nobody answers it
    # 30 s to the ping, 10 s for the pong; no close_timeout for a handshake that cannot come.
    assert 40 <= trio.current_time() - started <= 41
    assert broker.connection_count == 0


async def test_a_misbehaving_plugin_under_load_harms_only_what_it_judged(
    start_broker: StartBroker, connect: Connect
) -> None:
    # Publishing to "bad/raise" raises, "bad/hang" hangs past plugin_timeout, "bad/garbage"
    # returns garbage; every other topic passes.
    broker: Broker = await start_broker(
        [
            misbehave("authorize_publish", how, only_topic=f"bad/{how}")
            for how in ("raise", "hang", "garbage")
        ],
        server={"plugin_timeout": 0.2},
    )
    subscriber = await connect(broker)
    await subscriber.request({"op": "subscribe", "topic": "#", "id": 0})
    publishers = [await connect(broker) for _ in range(5)]
    count = 200
    replies: dict[str, list[str]] = {}

    async def publish(index: int, client: WsClient) -> None:
        for n in range(count):
            topic = ["good", "bad/raise", "bad/hang", "bad/garbage"][n % 4]
            if topic == "bad/hang" and n > 8:
                topic = "good"  # a few hangs are enough; each costs plugin_timeout
            reply = await client.request({"op": "publish", "topic": topic, "data": n, "id": n})
            replies.setdefault(topic, []).append(reply["op"] + ":" + reply.get("code", ""))

    async with trio.open_nursery() as nursery:
        for index, client in enumerate(publishers):
            nursery.start_soon(publish, index, client)
    assert set(replies["good"]) == {"ack:"}
    for topic in ("bad/raise", "bad/hang", "bad/garbage"):
        assert set(replies[topic]) == {"error:internal"}, topic
    delivered = []
    with trio.move_on_after(1):
        while len(delivered) < len(replies["good"]):
            delivered.append((await subscriber.recv())["topic"])
    assert delivered == ["good"] * len(replies["good"])
    assert broker.connection_count == 6

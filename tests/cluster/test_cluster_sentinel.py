"""The redis engine on Redis Sentinel: a cluster that survives the loss of its master.

Real processes: a master, a replica and three sentinels (tests/redis_sentinel.py), two
broker nodes, clients of `websockets`' protocol.
"""

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from broker import Broker
from tests.cluster.nodes import CHAT, read_until, subscribed, wait_until
from tests.conftest import Connect, StartBroker
from tests.redis_sentinel import DOWN_AFTER_MS, SentinelSetup, sentinel_setup
from tests.wsclient import WsClient

pytestmark = pytest.mark.slow  # redis-server and sentinels

REDIS_TIMEOUT = 1.0


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSetup]:
    with sentinel_setup(tmp_path) as setup:
        yield setup


class Progress:
    """What the clients below did: a test waits on it for a condition to hold."""

    def __init__(self) -> None:
        self._changed = trio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, condition: Callable[[], bool], timeout: float = 10) -> None:
        with trio.fail_after(timeout):
            while not condition():
                await self._changed.wait()


class Publisher:
    """Publishes numbered messages with an id, one after the other, and keeps what was
    acked (and when) and how long each answer took."""

    def __init__(self, client: WsClient, name: str, progress: Progress) -> None:
        self.client = client
        self.name = name
        self.progress = progress
        self.acked: list[tuple[int, float]] = []  # (n, when)
        self.refused = 0
        self.slowest = 0.0
        self._numbers = itertools.count()

    async def publish(self) -> bool:
        n = next(self._numbers)
        started = trio.current_time()
        reply = await self.client.request(
            {"op": "publish", "topic": "chat/room", "data": [self.name, n], "id": n}
        )
        self.slowest = max(self.slowest, trio.current_time() - started)
        if reply == {"op": "ack", "id": n}:
            self.acked.append((n, trio.current_time()))
            self.progress.notify()
            return True
        assert (reply["op"], reply["code"], reply["id"]) == ("error", "unavailable", n), reply
        self.refused += 1
        return False

    async def run(self, until: trio.Event) -> None:
        while not until.is_set():
            if not await self.publish():
                await trio.sleep(0.05)  # as a client backs off


class Reader:
    """A subscriber that reads all the time and keeps every message."""

    def __init__(self, client: WsClient, progress: Progress) -> None:
        self.client = client
        self.progress = progress
        self.got: list[tuple[str, int]] = []
        self.positions: list[str] = []

    async def run(self) -> None:
        while True:
            message = await self.client.recv(timeout=60)
            assert message["op"] == "message", message
            self.got.append(tuple(message["data"]))  # type: ignore[arg-type]
            self.positions.append(message["pos"])
            self.progress.notify()


def _each_acked(publishers: list[Publisher], counts: list[int], more: int) -> bool:
    return all(len(p.acked) >= n + more for p, n in zip(publishers, counts, strict=True))


async def _readiness(nodes: list[Broker], *, ready: bool) -> bool:
    """Whether every node is ready (or every one is not), as /readyz says."""
    return all((node.unready_reason is None) == ready for node in nodes)


async def _publishing(
    publishers: list[Publisher], stop: trio.Event, *, task_status: trio.TaskStatus[trio.Event]
) -> None:
    """Run the publishers until ``stop``; the event it starts with is set once they are
    all done (their last publish answered)."""
    done = trio.Event()
    task_status.started(done)
    async with trio.open_nursery() as nursery:
        for publisher in publishers:
            nursery.start_soon(publisher.run, stop)
    done.set()


async def test_a_two_node_cluster_survives_the_kill_of_its_master(
    sentinels: SentinelSetup, start_broker: StartBroker, connect: Connect
) -> None:
    await sentinels.wait_ready()
    cluster = {"engine": "redis", "redis_url": sentinels.url, "redis_timeout": REDIS_TIMEOUT}
    nodes = [await start_broker(cluster=cluster, topics=[{**CHAT, "history_size": 10000}])]
    nodes.append(await start_broker(cluster=cluster, topics=[{**CHAT, "history_size": 10000}]))
    progress = Progress()
    readers = [Reader(await subscribed(connect, node, "chat/#"), progress) for node in nodes]
    publishers = [Publisher(await connect(node), f"p{i}", progress) for i, node in enumerate(nodes)]
    # A client that will come back after the failover, from a position before it.
    away = await subscribed(connect, nodes[0], "chat/#")
    for publisher in publishers:
        assert await publisher.publish()
    since = (await away.recv())["pos"]
    await away.aclose()

    async with trio.open_nursery() as nursery:
        for reader in readers:
            nursery.start_soon(reader.run)
        stop = trio.Event()
        publishing = await nursery.start(_publishing, publishers, stop)
        switch: list[float] = []

        async def note_switch(*, task_status: trio.TaskStatus[None]) -> None:
            switch.append(await sentinels.switched(task_status=task_status))

        await nursery.start(note_switch)
        # What the master acknowledges from here on never reaches the replica.
        await sentinels.cut_replication()
        doomed = [len(p.acked) for p in publishers]
        await progress.until(lambda: _each_acked(publishers, doomed, 5))
        sentinels.master.kill()
        killed = trio.current_time()
        # Down: requests fail fast, /readyz says why, nobody is disconnected.
        await wait_until(lambda: _readiness(nodes, ready=False))
        reasons = {node.unready_reason for node in nodes}
        await wait_until(lambda: _readiness(nodes, ready=True), 30)
        promoted = trio.current_time()
        assert await sentinels.master_port() == sentinels.replica.port
        # Back: every node publishes again through the new master.
        await progress.until(lambda: all(p.acked[-1][1] > promoted for p in publishers), 30)
        outage = max(min(when for _, when in p.acked if when > killed) for p in publishers)
        back = [len(p.acked) for p in publishers]
        await progress.until(lambda: _each_acked(publishers, back, 20))
        stop.set()
        await publishing.wait()
        # Everything acked after the promotion reaches both readers (they stayed).
        last = [(p.name, p.acked[-1][0]) for p in publishers]
        await progress.until(lambda: all(m in r.got for r in readers for m in last))
        nursery.cancel_scope.cancel()

    # What clients saw: the sentinels' detection and election (2.3 s after the kill here,
    # with a detection time of 1 s), then the nodes' reconnection, at once.
    assert outage - killed < DOWN_AFTER_MS / 1000 + 4
    assert outage - switch[0] < 0.5
    for reader in readers:
        per_publisher: dict[str, list[int]] = defaultdict(list)
        for name, n in reader.got:
            per_publisher[name].append(n)
        for publisher in publishers:
            seen = per_publisher[publisher.name]
            assert seen == sorted(set(seen)), "duplicated or reordered"
            acked_after = [n for n, when in publisher.acked if when > promoted]
            assert set(acked_after) <= set(seen)
    for publisher in publishers:
        assert publisher.slowest < REDIS_TIMEOUT + 1.0  # never hung
        assert publisher.refused > 0
    assert all("unavailable" in str(reason) for reason in reasons), reasons
    # The client from before: messages after its position were lost with the old master.
    again = await connect(nodes[1])
    await again.send({"op": "subscribe", "topic": "chat/#", "id": "r", "since": since})
    _, ack = await read_until(again, "ack")
    assert ack["recovered"] is False
    # A position after the promotion recovers exactly.
    position = readers[0].positions[-1]
    await again.send({"op": "subscribe", "topic": "chat/#", "id": "s", "since": position})
    replayed, ack = await read_until(again, "ack")
    assert ack["recovered"] is True and replayed == []


async def test_sentinels_that_require_a_password_get_the_one_of_its_file(
    tmp_path: Path, start_broker: StartBroker, connect: Connect
) -> None:
    with sentinel_setup(tmp_path / "redis", sentinel_password="sentinels-s3cret") as setup:
        await setup.wait_ready()
        password_file = tmp_path / "sentinel-password"
        password_file.write_text("sentinels-s3cret\n")
        cluster = {"engine": "redis", "redis_url": setup.url, "redis_timeout": REDIS_TIMEOUT}
        node = await start_broker(
            cluster={**cluster, "redis_sentinel_password_file": str(password_file)}
        )
        reader = await subscribed(connect, node, "t")
        publisher = await connect(node)
        assert await publisher.request({"op": "publish", "topic": "t", "data": 1, "id": 1}) == {
            "op": "ack",
            "id": 1,
        }
        assert (await reader.recv())["data"] == 1
        # Without it: not ready, and /readyz says why (never the password).
        without = await start_broker(cluster=cluster)
        reason = without.unready_reason
        assert reason is not None and "sentinels-s3cret" not in reason
        assert reason.startswith(f"redis shard 0 ({setup.url}) unavailable: ")
        assert reason.endswith(
            "(a password is missing or wrong: [cluster] redis_password_file for Redis, "
            "redis_sentinel_password_file for the sentinels)"
        ), reason
        client = await connect(without)
        reply = await client.request({"op": "subscribe", "topic": "t", "id": 1})
        assert (reply["op"], reply["code"]) == ("error", "unavailable")

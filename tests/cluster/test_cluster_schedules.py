"""Random publish, disconnect and reconnect schedules on a two-node cluster: never a message
lost or delivered twice (the redis engine; tests/core/test_history.py has the memory engine's).

Real nodes on the test's redis-server, clients of `websockets`' protocol. What Redis
publishes reaches the nodes late (`SlowPubSubProxy`), and on each node a watcher holds the
same filter, so that the node is subscribed in Redis already when the client reconnects:
its replay is then read at once, while messages it holds are still on their way to the
node and arrive after the ack (as on a busy node). The watchers, which never disconnect,
must see every message once too.
"""

import itertools
from typing import Any

import hypothesis.strategies as st
import pytest
import trio
from hypothesis import HealthCheck, given, settings

from broker import Broker, Config
from tests.conftest import make_config, make_pipeline, url
from tests.core.test_history import TOPICS, matching
from tests.redis_proxy import SlowPubSubProxy
from tests.redis_server import RedisServer
from tests.wsclient import WsClient

pytestmark = pytest.mark.slow  # redis-server, hypothesis

NODES = 2
PUBSUB_DELAY = 0.05  # seconds: many times what a replay takes here
steps = st.lists(
    st.one_of(
        # Several publishes sent at once, their acks read after: from one node.
        st.tuples(
            st.just("publish"),
            st.integers(0, NODES - 1),
            st.lists(st.sampled_from(TOPICS), min_size=1, max_size=6),
        ),
        st.tuples(st.just("disconnect")),
        st.tuples(st.just("reconnect"), st.integers(0, NODES - 1)),
    ),
    max_size=25,
)
prefixes = itertools.count()


class Subscriber:
    """A client as a real one behaves: it reads all the time, remembers the last position
    it saw, and recovers from it when it connects again."""

    def __init__(self, topic_filter: str) -> None:
        self.topic_filter = topic_filter
        self.received: list[tuple[str, int]] = []
        self.position: str | None = None
        self.client: WsClient | None = None
        self._reading: trio.CancelScope | None = None
        self._stopped = trio.Event()

    async def connect(self, node: Broker, nursery: trio.Nursery) -> tuple[list[Any], bool | None]:
        """Subscribe (from the last position, if any); the replay and `recovered`."""
        client = self.client = await WsClient.connect(url(node))
        assert (await client.recv())["op"] == "welcome"
        request: dict[str, Any] = {"op": "subscribe", "topic": self.topic_filter, "id": "s"}
        if self.position is not None:
            request["since"] = self.position
        await client.send(request)
        replayed = []
        while (message := await client.recv())["op"] != "ack":
            replayed.append(message)
        self.position = message["pos"]
        self._reading = await nursery.start(self._read, client)
        return replayed, message.get("recovered")

    async def _read(
        self, client: WsClient, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        self._stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                while True:
                    self.take(await client.recv(timeout=60))
        finally:
            self._stopped.set()

    def take(self, message: dict[str, Any]) -> None:
        assert message["op"] == "message", message
        self.received.append((message["topic"], message["data"]))
        self.position = message["pos"]

    async def disconnect(self) -> None:
        assert self._reading is not None and self.client is not None
        self._reading.cancel()
        await self._stopped.wait()  # before its socket closes under it
        await trio.aclose_forcefully(self.client.stream)
        self.client = None

    async def wait_for(self, last: tuple[str, int]) -> None:
        with trio.fail_after(30):
            while last not in self.received:  # noqa: ASYNC110 (the reader appends)
                await trio.sleep(0.005)


class Cluster:
    """Two nodes of one cluster, a publisher on each, and the subscriber."""

    def __init__(self, nursery: trio.Nursery, topic_filter: str) -> None:
        self.nursery = nursery
        self.topic_filter = topic_filter
        self.nodes: list[Broker] = []
        self.publishers: list[WsClient] = []
        self.subscriber = Subscriber(topic_filter)
        self.watchers = [Subscriber(topic_filter) for _ in range(NODES)]
        self.published: list[tuple[str, int]] = []  # in the order Redis took them
        self._numbers = itertools.count()

    async def start(self, config: Config) -> None:
        for _ in range(NODES):
            node = Broker(config, make_pipeline(config))
            await self.nursery.start(node.serve)
            self.nodes.append(node)
            self.publishers.append(publisher := await WsClient.connect(url(node)))
            assert (await publisher.recv())["op"] == "welcome"
        for watcher, node in zip(self.watchers, self.nodes, strict=True):
            await watcher.connect(node, self.nursery)

    async def publish(self, node_index: int, topics: list[str]) -> None:
        publisher = self.publishers[node_index]
        sent = []
        for topic in topics:
            n = next(self._numbers)
            await publisher.send({"op": "publish", "topic": topic, "data": n, "id": n})
            sent.append((topic, n))
        for topic, n in sent:
            assert await publisher.recv() == {"op": "ack", "id": n}
            self.published.append((topic, n))

    async def reconnect(self, node_index: int) -> None:
        subscriber = self.subscriber
        count_before = len(subscriber.received)
        before = subscriber.received[:count_before]
        replayed, recovered = await subscriber.connect(self.nodes[node_index], self.nursery)
        replay = [(m["topic"], m["data"]) for m in replayed]
        wanted = matching(self.published, self.topic_filter)
        if recovered:
            # Everything published (and acked) so far, each once: what came before, then
            # the replay; what comes live from now on was published later.
            assert before + replay == wanted
        else:
            # Honest: something the client had not seen is really gone. It reloads its
            # state another way (here: it is handed all of it).
            assert not set(wanted) <= set(before) | set(replay)
            assert len(replay) == len(set(replay))
        subscriber.received[:count_before] = wanted

    async def close(self) -> None:
        for subscriber in [self.subscriber, *self.watchers]:
            if subscriber.client is not None:
                await subscriber.disconnect()
        for publisher in self.publishers:
            await trio.aclose_forcefully(publisher.stream)


async def run_schedule(
    redis: RedisServer, schedule: list[tuple[Any, ...]], topic_filter: str, size: int
) -> None:
    async with SlowPubSubProxy(str(redis.socket_path), PUBSUB_DELAY) as proxy:
        config = make_config(
            # A cluster of its own on the shared Redis.
            cluster={"engine": "redis", "redis_url": proxy.url, "prefix": f"s{next(prefixes)}"},
            topics=[{"filter": "#", "history_size": size}],
        )
        await run_cluster(config, schedule, topic_filter)


async def run_cluster(config: Config, schedule: list[tuple[Any, ...]], topic_filter: str) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, topic_filter)
        try:
            await cluster.start(config)
            subscriber = cluster.subscriber
            await subscriber.connect(cluster.nodes[0], nursery)
            for step, *rest in schedule:
                if step == "publish":
                    await cluster.publish(*rest)
                elif step == "disconnect" and subscriber.client is not None:
                    await subscriber.disconnect()
                elif step == "reconnect" and subscriber.client is None:
                    await cluster.reconnect(*rest)
            if subscriber.client is None:
                await cluster.reconnect(0)
            # A last publish the filter matches: behind it, everything else has arrived.
            await cluster.publish(0, ["a/1"])
            wanted = matching(cluster.published, topic_filter)
            for each in [subscriber, *cluster.watchers]:
                await each.wait_for(cluster.published[-1])
                # No duplicate, nothing missing, in publish order.
                assert each.received == wanted
        finally:
            with trio.CancelScope(shield=True):
                await cluster.close()
            nursery.cancel_scope.cancel()


@settings(
    max_examples=40,
    deadline=None,
    # One redis-server for every example: each runs a cluster of its own (its prefix).
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    schedule=steps,
    topic_filter=st.sampled_from(["a/#", "a/1", "+/1", "#"]),
    size=st.integers(min_value=1, max_value=8),
)
def test_random_schedules_on_two_nodes_never_lose_or_duplicate(
    redis: RedisServer,
    schedule: list[tuple[Any, ...]],
    topic_filter: str,
    size: int,
) -> None:
    trio.run(run_schedule, redis, schedule, topic_filter, size)

"""occupied and vacated across the nodes of a cluster: once per transition, whichever node
sees it, and a node that dies unannounced does not leave a filter occupied for ever."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from broker import Broker
from tests.backend_server import Backend
from tests.cluster.nodes import subscribed
from tests.conftest import Connect, StartNode, make_config, make_pipeline
from tests.node.test_webhooks import SECRET, events_of
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow  # redis-server


@pytest.fixture
def backend() -> Iterator[Backend]:
    with Backend().running() as running:
        running.answer("/events", (200, {}))
        yield running


@pytest.fixture
def webhooks(backend: Backend, tmp_path: Path) -> dict[str, Any]:
    secret = tmp_path / "webhook-secret"
    secret.write_text(SECRET)
    return {"url": backend.url("/events"), "secret_file": str(secret), "batch_delay": 0}


async def occupancy_until(backend: Backend, *last: str) -> list[tuple[str, str]]:
    """Every (event, filter) posted by any node, once each of ``last`` came (each node's
    events come in order: a node's duplicate would come before its own marker)."""
    calls = 1
    while True:
        posted = events_of(await backend.wait_for_calls("/events", calls))
        seen = [(e["event"], e["topic"]) for e in posted]
        if all(("occupied", marker) in seen for marker in last):
            return [pair for pair in seen if pair[1] not in last]
        calls = len(backend.calls_to("/events")) + 1


async def test_one_occupied_and_one_vacated_per_transition_across_nodes(
    start_node: StartNode, connect: Connect, backend: Backend, webhooks: dict[str, Any]
) -> None:
    nodes = [await start_node(webhooks=webhooks) for _ in range(2)]
    alice = await subscribed(connect, nodes[0], "room/+")
    bob = await subscribed(connect, nodes[1], "room/+")
    carol = await subscribed(connect, nodes[1], "room/+")  # a second one on the same node
    for client in (alice, bob, carol):
        await client.request({"op": "unsubscribe", "topic": "room/+", "id": "u"})
    await subscribed(connect, nodes[1], "room/+")  # occupied again
    for index, node in enumerate(nodes):
        await subscribed(connect, node, f"marker/{index}")
    # Nodes post on their own: only each node's events are in order.
    assert sorted(await occupancy_until(backend, "marker/0", "marker/1")) == [
        ("occupied", "room/+"),
        ("occupied", "room/+"),
        ("vacated", "room/+"),
    ]


async def test_a_node_that_dies_unannounced_vacates_within_the_presence_ttl(
    nursery: trio.Nursery,
    start_node: StartNode,
    connect: Connect,
    backend: Backend,
    webhooks: dict[str, Any],
    redis: RedisServer,
) -> None:
    cluster = {"engine": "redis", "redis_url": redis.url, "presence_ttl": 3}
    await start_node(webhooks=webhooks, cluster={"presence_ttl": 3})  # the survivor
    config = make_config(webhooks=webhooks, cluster=cluster)
    doomed = Broker(config, make_pipeline(config))
    async with trio.open_nursery() as doomed_nursery:
        await doomed_nursery.start(doomed.serve)
        await subscribed(connect, doomed, "lobby")
        await subscribed(connect, doomed, "marker/dying")
        seen = await occupancy_until(backend, "marker/dying")
        assert seen == [("occupied", "lobby")]
        # Gone without a word: no vacate reaches Redis, its claims just stop being renewed.
        doomed_nursery.cancel_scope.cancel()
    started = trio.current_time()
    with trio.fail_after(10):
        while ("vacated", "lobby") not in (
            seen := [(e["event"], e["topic"]) for e in events_of(backend.calls_to("/events"))]
        ):
            await backend.wait_for_calls("/events", len(backend.calls_to("/events")) + 1)
    assert trio.current_time() - started <= 3 + 1 + 1  # the ttl, a renewal period, slack
    assert seen.count(("vacated", "lobby")) == 1


async def test_exactly_once_across_a_node_with_workers_and_another_node(
    start_node: StartNode,
    connect: Connect,
    backend: Backend,
    webhooks: dict[str, Any],
    redis: RedisServer,
    tmp_path: Path,
) -> None:
    from tests.cluster.test_cluster_faults import node_config, worker_pids
    from tests.daemon_process import Daemon

    config = node_config(tmp_path, redis, "workers", workers=2)
    with config.open("a") as file:
        file.write("\n[webhooks]\n")
        file.writelines(f"{key} = {value!r}\n" for key, value in webhooks.items())
    daemon = Daemon(config)
    try:
        worker_pids(daemon, 2)
        daemon.wait_listening()
        other = await start_node(webhooks=webhooks)
        clients = [await connect(daemon.url) for _ in range(8)]
        clients += [await connect(other) for _ in range(2)]
        for client in clients:
            await client.request({"op": "subscribe", "topic": "room/+", "id": "s"})
        for n, client in enumerate(clients):
            await client.request({"op": "unsubscribe", "topic": "room/+", "id": "u"})
            # Its node's marker comes after whatever that node reported of room/+.
            await client.request({"op": "subscribe", "topic": f"marker/{n}", "id": "m"})
        markers = [f"marker/{n}" for n in range(len(clients))]
        assert sorted(await occupancy_until(backend, *markers)) == [
            ("occupied", "room/+"),
            ("vacated", "room/+"),
        ]
    finally:
        daemon.kill()

"""Helpers of the cluster tests (the redis engine)."""

from collections.abc import Awaitable, Callable
from typing import Any

import coredis
import trio

from broker import Broker
from tests.conftest import Connect
from tests.redis_server import RedisServer
from tests.wsclient import WsClient

CHAT = {"filter": "chat/#", "history_size": 100}


async def subscribed(connect: Connect, node: Broker, topic_filter: str, **fields: Any) -> WsClient:
    client = await connect(node)
    ack = await client.request({"op": "subscribe", "topic": topic_filter, "id": "s", **fields})
    assert ack["op"] == "ack", ack
    return client


async def redis_client(redis: RedisServer) -> "coredis.Redis[bytes]":
    return coredis.Redis(unix_socket_path=str(redis.socket_path))


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Poll ``condition`` (state in another process: Redis) until it holds."""
    with trio.fail_after(timeout):
        while not await condition():  # noqa: ASYNC110 (Redis sends no event for it)
            await trio.sleep(0.01)


async def read_until(client: WsClient, op: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    before = []
    while (message := await client.recv())["op"] != op:
        before.append(message)
    return before, message

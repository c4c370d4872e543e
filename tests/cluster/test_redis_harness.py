"""The Redis client the cluster engine is built on (coredis), on Trio, against a real server."""

import coredis
import pytest
import trio

from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow  # redis-server


async def test_coredis_commands_and_pubsub_run_on_trio(redis: RedisServer) -> None:
    client = coredis.Redis(unix_socket_path=str(redis.socket_path))
    async with client:
        assert await client.ping() == b"PONG"
        assert await client.incr("offset") == 1
        assert await client.xadd("history", {"frame": "f1"})
        assert [e.field_values for e in await client.xrange("history")] == [{b"frame": b"f1"}]
        pubsub = client.pubsub()
        async with pubsub:
            await pubsub.subscribe("topic")
            assert await client.publish("topic", "m1") == 1
            with trio.fail_after(5):
                async for message in pubsub:
                    if message["type"] == "message":
                        assert message["data"] == b"m1"
                        break

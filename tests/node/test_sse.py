"""Server-Sent Events on the WebSocket listener, read with a plain HTTP client (httpx):
deliveries as events, recovery from Last-Event-ID or ?since=, the same gates as a
WebSocket (origins, authentication, authorization per filter), heartbeats, shutdown."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from broker import Broker
from tests.admin.test_control_api import HEADER_AUTH
from tests.conftest import Connect, StartBroker

TOPICS = [{"filter": "chat/#", "history_size": 10}]
ACL = {"use": "acl", "rules": [{"subscribe": ["chat/#"], "publish": ["chat/#"]}]}


class Stream:
    """An event stream read from a plain socket (HTTP/1.1 by hand, as any client may):
    the answer's status and headers, then the events parsed as they come."""

    def __init__(self, socket: trio.SocketStream) -> None:
        self._socket = socket
        self._buffer = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.comments: list[str] = []

    async def _line(self) -> str:
        while b"\n" not in self._buffer:
            data = await self._socket.receive_some(65536)
            if not data:
                raise EOFError("the stream ended")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode().rstrip("\r")

    async def read_head(self) -> None:
        self.status = int((await self._line()).split()[1])
        while line := await self._line():
            name, _, value = line.partition(": ")
            self.headers[name.lower()] = value

    async def body(self) -> str:
        """What follows the head until the server closes (an error's text)."""
        with trio.fail_after(10):
            while data := await self._socket.receive_some(65536):
                self._buffer += data
        return self._buffer.decode()

    async def event(self, timeout: float = 10) -> dict[str, Any]:
        """The next event's fields (``data`` parsed as JSON); comments are kept aside."""
        fields: dict[str, Any] = {}
        with trio.fail_after(timeout):
            while True:
                line = await self._line()
                if line.startswith(":"):
                    self.comments.append(line)
                elif line:
                    name, _, value = line.partition(": ")
                    fields[name] = json.loads(value) if name == "data" else value
                elif fields:
                    return fields


@asynccontextmanager
async def stream(broker: Broker, query: str, **headers: str) -> AsyncIterator[Stream]:
    socket = await trio.open_tcp_stream("127.0.0.1", broker.port)
    async with socket:
        lines = [f"GET /sse?{query} HTTP/1.1", f"Host: 127.0.0.1:{broker.port}"]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        await socket.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        opened = Stream(socket)
        with trio.fail_after(10):
            await opened.read_head()
        yield opened


async def publish(
    connect: Connect, broker: Broker, topic: str, *payloads: Any, user: str | None = None
) -> list[str]:
    """Publish each of ``payloads`` (bytes as binary data), acked; their positions."""
    client = await connect(broker, headers={"X-User": user} if user else None)
    await client.request({"op": "subscribe", "topic": topic, "id": 0})
    positions = []
    for n, data in enumerate(payloads, 1):
        field = (
            {"data_b64": __import__("base64").b64encode(data).decode()}
            if isinstance(data, bytes)
            else {"data": data}
        )
        await client.send({"op": "publish", "topic": topic, **field, "id": n})
        got = {m["op"]: m for m in [await client.recv(), await client.recv()]}
        positions.append(got["message"].get("pos"))
    return positions


async def test_deliveries_arrive_as_events_with_their_position(
    either_engine: StartBroker, connect: Connect
) -> None:
    broker = await either_engine(topics=TOPICS)
    async with stream(broker, "topic=chat/%2B&topic=news") as events:
        assert events.status == 200
        assert events.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert events.headers["cache-control"] == "no-cache"
        await trio.testing.wait_all_tasks_blocked()  # subscribed before the publishes
        (first, second) = await publish(connect, broker, "chat/a", {"text": "hi"}, b"\x00\xff")
        assert await events.event() == {
            "id": first,
            "event": "message",
            "data": {"topic": "chat/a", "data": {"text": "hi"}},
        }
        binary = await events.event()
        assert (binary["id"], binary["data"]) == (second, {"topic": "chat/a", "data_b64": "AP8="})
        await publish(connect, broker, "news", "no history here")
        assert await events.event() == {
            "event": "message",
            "data": {"topic": "news", "data": "no history here"},
        }


async def test_last_event_id_or_since_recovers_what_was_missed(
    either_engine: StartBroker, connect: Connect
) -> None:
    broker = await either_engine(topics=[{"filter": "chat/#", "history_size": 2}])
    positions = await publish(connect, broker, "chat/a", 1, 2, 3)
    async with stream(broker, "topic=chat/%23", Last_Event_ID=positions[0]) as events:
        assert [(await events.event())["data"]["data"] for _ in range(2)] == [2, 3]
    async with stream(broker, f"topic=chat/%23&since={positions[1]}") as events:
        assert (await events.event())["data"]["data"] == 3
    # Too old: what there is, and the page told to reload.
    async with stream(broker, "topic=chat/%23", Last_Event_ID="0:0") as events:
        got = [await events.event() for _ in range(3)]
        assert [e["event"] for e in got] == ["message", "message", "recovery"]
        assert got[2]["data"] == {"recovered": False, "topic": "chat/#"}


async def test_the_same_gates_as_a_websocket(start_broker: StartBroker, connect: Connect) -> None:
    broker = await start_broker(
        [HEADER_AUTH, ACL], topics=TOPICS, server={"allowed_origins": ["https://app.example"]}
    )

    async def refused(query: str, **headers: str) -> tuple[int, str]:
        async with stream(broker, query, **headers) as answer:
            return answer.status, await answer.body()

    assert (await refused("topic=chat/x"))[0] == 401  # who are you?
    status, body = await refused("topic=chat/x&topic=secret&user=ann")
    assert status == 403 and "subscribing to 'secret'" in body
    status, body = await refused("topic=chat/x&user=ann", Origin="https://evil.example")
    assert status == 403 and "origin" in body.lower()
    assert (await refused("user=ann"))[0] == 400
    assert (await refused("topic=a%2F%2Fb&user=ann"))[0] == 400
    origin = {"Origin": "https://app.example"}
    async with stream(broker, "topic=chat/x&user=ann", **origin) as events:
        assert events.status == 200
        assert events.headers["access-control-allow-origin"] == "https://app.example"
        await trio.testing.wait_all_tasks_blocked()
        await publish(connect, broker, "chat/x", "for ann", user="bob")
        assert (await events.event())["data"]["data"] == "for ann"


async def test_heartbeats_keep_proxies_open_and_a_shutdown_ends_the_stream(
    start_broker: StartBroker,
) -> None:
    broker = await start_broker(server={"heartbeat_interval": 0.05, "heartbeat_timeout": 0.05})
    async with stream(broker, "topic=t") as events:
        with trio.fail_after(5):
            while not events.comments:
                with trio.move_on_after(0.5):
                    await events.event()
        assert events.comments[0] == ": keep-alive"
        broker.stop()
        with pytest.raises(EOFError):
            while True:
                await events.event()


async def test_streams_are_counted_by_transport(
    start_broker: StartBroker, connect: Connect, http: httpx.AsyncClient
) -> None:
    from tests.admin.test_admin import admin_url, samples, start_admin

    broker = await start_admin(start_broker)
    await connect(broker)
    async with stream(broker, "topic=t"):
        metrics = samples((await http.get(admin_url(broker, "/metrics"))).text)
    by_transport = "trio_broker_connections_by_transport"
    assert metrics[(by_transport, (("transport", "sse"),))] == 1
    assert metrics[(by_transport, (("transport", "websocket"),))] == 1
    assert metrics[("trio_broker_connections", ())] == 2


async def test_a_stream_that_is_not_read_is_ended_as_a_slow_consumer(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(
        limits={"max_queued_messages": 8, "slow_consumer_timeout": 0.5, "max_message_size": 65536}
    )
    async with stream(broker, "topic=busy") as stalled:
        await trio.testing.wait_all_tasks_blocked()
        publisher = await connect(broker)
        payload = "x" * 16_000
        for n in range(1000):  # 16 MB: more than the socket buffers hold
            await publisher.send({"op": "publish", "topic": "busy", "data": [n, payload]})
        assert await publisher.request({"op": "ping", "id": 1}, timeout=30) == {
            "op": "pong",
            "id": 1,
        }
        assert broker.stats.slow_consumer_disconnects == 1
        received = 0
        with pytest.raises(EOFError):  # some events, then the end
            while True:
                assert (await stalled.event())["data"]["data"][0] == received
                received += 1
        assert 0 < received < 1000

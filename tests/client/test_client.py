"""The Python client library (broker.client) against the real broker, on Trio and asyncio."""

import asyncio
import base64
import contextlib
import hashlib
import time
from functools import partial
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio

from broker.client import (
    BrokerError,
    Client,
    ConnectionLost,
    HandshakeRefused,
    Membership,
    Message,
    RecoveryFailed,
    connect,
)
from broker.client.client import refresh_delay
from broker.wire.frames import text_frame
from tests.conftest import StartBroker, url
from tests.daemon_process import serving
from tests.tcp_proxy import CuttableProxy

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CHAT = {"filter": "chat/#", "history_size": 100, "presence": True, "join_leave": True}
TOKENS = {"use": "token_auth", "tokens": [{"token": "t" * 20, "user": "alice"}]}
FAST = (0.01, 0.05)  # reconnect backoff for tests


async def next_message(client: Client) -> Message:
    async for event in client.messages():
        if isinstance(event, Message):
            return event
    raise AssertionError("the stream ended")


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_subscribe_publish_and_every_request(
    start_broker: StartBroker, encoding: str
) -> None:
    broker = await start_broker(topics=[CHAT])
    async with connect(url(broker), encoding=encoding) as client:
        subscribed = await client.subscribe("chat/#")
        assert subscribed.pos is not None and subscribed.recovered is None
        await client.publish("chat/room", {"text": "hi"})
        message = await next_message(client)
        assert (message.topic, message.data) == ("chat/room", {"text": "hi"}) and message.pos
        await client.subscribe("chat/room")
        joined = [e async for e in _take(client, 1)]
        assert isinstance(joined[0], Membership) and joined[0].client_id == client.client_id
        assert [m.data for m in await client.history("chat/+")] == [{"text": "hi"}]
        await client.publish("chat/room", {"text": "yo"})
        assert (await next_message(client)).data == {"text": "yo"}
        page = await client.history_after("chat/+", subscribed.pos, limit=1)
        assert ([m.data for m in page.messages], page.recovered, page.more) == (
            [{"text": "hi"}],
            True,
            True,
        )
        page = await client.history_after("chat/+", page.messages[-1].pos or "")
        assert [m.data for m in page.messages] == [{"text": "yo"}] and not page.more
        assert [c["client_id"] for c in await client.presence("chat/room")] == [client.client_id]
        await client.ping()
        with pytest.raises(BrokerError) as refused:
            await client.publish("$reserved", 1)
        assert refused.value.code == "forbidden"
        with pytest.raises(BrokerError) as refused:
            await client.presence("other")
        assert refused.value.code == "forbidden"
        with pytest.raises(BrokerError) as refused:
            await client.refresh("token")
        assert refused.value.code == "forbidden"  # no plugin refreshes here
        # Pipelined: sent in order without waiting, acked after.
        pending = [await client.start_publish("chat/many", n) for n in range(500)]
        for ack in pending:
            await ack.result()
        got = [(await next_message(client)).data for _ in range(500)]
        assert got == list(range(500))
        await client.unsubscribe("chat/#")
        await client.unsubscribe("chat/room")


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_binary_data_is_bytes_both_ways(start_broker: StartBroker, encoding: str) -> None:
    broker = await start_broker(topics=[CHAT])
    async with connect(url(broker), encoding=encoding) as client:
        await client.subscribe("chat/bin")
        await client.publish("chat/bin", b"\x00\x01\xff")
        assert (await next_message(client)).data == b"\x00\x01\xff"
        assert [m.data for m in await client.history("chat/bin")] == [b"\x00\x01\xff"]


async def test_an_unknown_encoding_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="encoding must be one of json, msgpack, not 'xml'"):
        async with connect("ws://127.0.0.1:1/ws", encoding="xml"):
            pass


async def _take(client: Client, count: int) -> Any:
    taken = 0
    async for event in client.messages():
        yield event
        taken += 1
        if taken == count:
            return


async def test_a_refused_connection_says_why(start_broker: StartBroker) -> None:
    broker = await start_broker([TOKENS])
    with pytest.raises(HandshakeRefused) as refused:
        async with connect(url(broker)):
            pass
    assert refused.value.status == 401 and refused.value.permanent
    async with connect(url(broker), token="t" * 20) as client:
        await client.ping()
    with pytest.raises(OSError):
        async with connect("ws://127.0.0.1:1/ws"):
            pass
    with pytest.raises(ValueError, match="not a WebSocket URL"):
        async with connect("http://127.0.0.1/ws"):
            pass


async def test_after_the_connection_drops_it_reconnects_and_recovers_what_it_missed(
    start_broker: StartBroker,
) -> None:
    broker = await start_broker(topics=[CHAT])
    async with (
        CuttableProxy(broker.port) as proxy,
        connect(proxy.url, backoff=FAST) as client,
        connect(url(broker)) as publisher,
    ):
        await client.subscribe("chat/+")
        await client.subscribe("chat/a")  # overlapping: both replay, once is delivered
        await publisher.publish("chat/a", "before")
        assert (await next_message(client)).data == "before"
        proxy.cut()
        for n in range(3):
            await publisher.publish("chat/a", n)
        # Reconnected (through the proxy again), subscribed again from the last position.
        got = [(await next_message(client)).data for _ in range(3)]
        assert got == [0, 1, 2] and proxy.connections == 2
        await publisher.publish("chat/a", "live")
        assert (await next_message(client)).data == "live"
        # A request in flight when the connection drops fails (it may or may not have been
        # done); one made while the client reconnects waits for the new connection.
        proxy.cut()
        with contextlib.suppress(ConnectionLost):
            await client.publish("chat/a", "in flight")
        await client.publish("chat/a", "after the second cut")
        assert (await next_message(client)).data == "after the second cut"


async def test_when_recovery_is_incomplete_the_application_is_told(
    start_broker: StartBroker,
) -> None:
    broker = await start_broker(topics=[{**CHAT, "history_size": 2}])
    async with (
        CuttableProxy(broker.port) as proxy,
        connect(proxy.url, backoff=FAST) as client,
        connect(url(broker)) as publisher,
    ):
        await client.subscribe("chat/a")
        await publisher.publish("chat/a", "seen")
        await next_message(client)
        proxy.cut()
        for n in range(5):  # more than history_size while it is away
            await publisher.publish("chat/a", n)
        # What the broker still had, then word that it was not all.
        replayed = []
        async for event in client.messages():
            if isinstance(event, RecoveryFailed):
                assert event.topic_filter == "chat/a"
                break
            if isinstance(event, Message):
                replayed.append(event.data)
        assert replayed == [3, 4]


async def test_without_reconnecting_the_stream_ends_with_why(start_broker: StartBroker) -> None:
    broker = await start_broker()
    async with CuttableProxy(broker.port) as proxy, connect(proxy.url, reconnect=False) as client:
        await client.subscribe("x")
        proxy.cut()
        with pytest.raises(ConnectionLost):
            async for _ in client.messages():
                pass
        with pytest.raises(ConnectionLost):
            await client.publish("x", 1)


SECRET = "client-test-secret-client-test-secret"
JWT = {"use": "jwt_auth", "secret": SECRET, "algorithms": ["HS256"]}


def short_token(lifetime: float = 2.0) -> str:
    return jwt.encode({"sub": "alice", "exp": time.time() + lifetime}, SECRET, algorithm="HS256")


def test_credentials_are_renewed_before_they_expire() -> None:
    assert refresh_delay(3600.0, 0.0) == 3570.0  # 30 s before
    assert refresh_delay(102.0, 100.0) == 1.5  # three quarters of a short lifetime
    assert refresh_delay(99.0, 100.0) == 0.0  # already late: now


async def test_get_token_keeps_a_connection_authenticated_past_expiry(
    start_broker: StartBroker,
) -> None:
    broker = await start_broker([JWT], topics=[{"filter": "news", "history_size": 10}])
    tokens_asked = [trio.Event() for _ in range(6)]
    failures = []

    async def get_token() -> str:
        asked = next(i for i, event in enumerate(tokens_asked) if not event.is_set())
        tokens_asked[asked].set()
        if failures:
            raise failures.pop()
        return short_token()

    async with connect(url(broker), get_token=get_token, backoff=FAST) as client:
        first_connection = client.client_id
        await client.subscribe("news")
        with trio.fail_after(6):  # three tokens of 2 s: two refreshes on this connection
            await tokens_asked[2].wait()
        assert client.client_id == first_connection
        assert client.expires_at is not None and client.expires_at > time.time()
        await client.publish("news", 1)
        assert (await next_message(client)).data == 1
        # The application's get_token fails once: the token expires, the broker closes with
        # 4001, and the client reconnects with a new token and recovers what it missed.
        failures.append(RuntimeError("the backend said no"))
        with trio.fail_after(6):
            await tokens_asked[4].wait()
        await client.publish("news", 2)
        assert client.client_id != first_connection
        assert (await next_message(client)).data == 2


async def test_without_get_token_an_expired_token_ends_the_client(
    start_broker: StartBroker,
) -> None:
    broker = await start_broker([JWT])
    async with connect(url(broker), token=short_token(), backoff=FAST) as client:
        assert client.expires_at is not None
        with trio.fail_after(5), pytest.raises(ConnectionLost) as lost:
            async for _ in client.messages():
                pass
        assert lost.value.code == 4001


async def test_a_slow_reader_holds_the_broker_back_instead_of_filling_memory(
    start_broker: StartBroker,
) -> None:
    broker = await start_broker()
    async with connect(url(broker), max_queued=5) as client, connect(url(broker)) as publisher:
        await client.subscribe("flood")
        for n in range(200):
            await publisher.publish("flood", n)
        queued = client._receive.statistics().current_buffer_used
        assert queued <= 5
        got = [(await next_message(client)).data for _ in range(200)]
        assert got == list(range(200))


def test_it_runs_on_asyncio_too(tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text('[server]\nport = 0\n[[topics]]\nfilter = "chat/#"\nhistory_size = 10\n')

    async def main(address: str) -> list[Any]:
        async with connect(address) as client:
            await client.subscribe("chat/#")
            await client.publish("chat/a", {"on": "asyncio"})
            message = await anext(aiter(client.messages()))
            history = await client.history("chat/#")
            return [message, history]

    with serving(config) as daemon:
        message, history = asyncio.run(main(daemon.url))
    assert message.data == {"on": "asyncio"} and [m.data for m in history] == [{"on": "asyncio"}]


async def test_messages_in_the_same_read_as_the_handshake_answer_are_kept() -> None:
    # A server (here a fake one) may write its 101 and the first messages at once.
    async def serve(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        welcome = text_frame(b'{"op":"welcome","client_id":"c1"}')
        # A binary frame, which a JSON client ignores, then a delivery.
        binary = b"\x82\x03\x00\x01\x02"
        delivery = text_frame(b'{"op":"message","topic":"t","data":1}')
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + welcome + binary + delivery
        )
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/ws", request_timeout=2) as client:
            assert client.client_id == "c1"
            assert (await next_message(client)).data == 1
        nursery.cancel_scope.cancel()

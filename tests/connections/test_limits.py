"""Limits a client cannot get around: per address, per connection, per outbox."""

import pytest
import trio
import trio.testing

from broker import Broker
from broker.core.token_bucket import TokenBucket
from broker.handshake.admission import AddressLimits, address_key
from tests.conftest import UPGRADE, Connect, StartBroker, http_exchange, url
from tests.wsclient import Closed, Rejected, WsClient

# --- The sans-IO parts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("?", "?"),
    ],
)
def test_addresses_count_per_ipv4_address_and_per_ipv6_slash_64(host: str, key: str) -> None:
    assert address_key(host) == key


def test_open_sockets_per_address_are_capped_and_released() -> None:
    limits = AddressLimits(max_open=2, rate=0, burst=1)
    assert limits.admit("a", 0) is None
    assert limits.admit("a", 0) is None
    assert limits.admit("a", 0) == "too many connections from a"
    assert limits.admit("b", 0) is None, "other addresses are not affected"
    limits.release("a")
    assert limits.admit("a", 0) is None
    for _ in range(2):
        limits.release("a")
    limits.release("b")
    assert limits.tracked == 0


def test_new_sockets_per_address_are_rate_limited_after_a_burst() -> None:
    limits = AddressLimits(max_open=0, rate=2, burst=3)
    assert [limits.admit("a", 0.0) for _ in range(4)] == [
        None,
        None,
        None,
        "too many new connections from a",
    ]
    assert limits.admit("a", 0.4) is not None, "0.4 s at 2/s refills 0.8 of one"
    assert limits.admit("a", 0.5) is None
    assert limits.admit("a", 0.5) is not None


def test_refilled_buckets_are_forgotten() -> None:
    limits = AddressLimits(max_open=0, rate=1, burst=1)
    for n in range(3000):
        assert limits.admit(f"10.0.{n // 256}.{n % 256}", now=float(n)) is None
        limits.release(f"10.0.{n // 256}.{n % 256}")
    # Each bucket is full again a second after its one handshake: at most a sweep's worth stay.
    assert limits.tracked <= 1024


def test_token_bucket_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=10, capacity=2, now=0)
    bucket.take(2)
    assert bucket.wait_for(1, now=0) == pytest.approx(0.1)
    assert bucket.wait_for(1, now=0.05) == pytest.approx(0.05)
    assert bucket.wait_for(1, now=1) == 0
    assert bucket.is_full(now=1)


# --- Over real sockets ----------------------------------------------------------------------


async def test_connections_per_address_beyond_the_limit_get_429(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(limits={"max_connections_per_ip": 2})
    first = await connect(broker)
    await connect(broker)
    with pytest.raises(Rejected) as caught:
        await WsClient.connect(url(broker))
    assert caught.value.status == 429
    assert b"too many connections from 127.0.0.1" in caught.value.body
    await first.aclose()  # returns after the server dropped it, and released its count
    await connect(broker)


async def test_handshaking_sockets_count_against_the_address_limit(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(limits={"max_connections_per_ip": 2})
    first = await trio.open_tcp_stream("127.0.0.1", broker.port)
    second = await trio.open_tcp_stream("127.0.0.1", broker.port)
    async with first, second:
        # Two sockets that never finish their handshake hold the address's two places.
        with pytest.raises(Rejected) as caught:
            await WsClient.connect(url(broker))
        assert caught.value.status == 429
    # The broker sees both closes and gives the places back before it idles.
    await trio.testing.wait_all_tasks_blocked()
    await connect(broker)


async def test_handshakes_beyond_the_rate_get_429_with_retry_after(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(
        limits={"handshake_rate_per_ip": 0.001, "handshake_burst_per_ip": 2}
    )
    await connect(broker)
    await connect(broker)
    response = await http_exchange(broker, UPGRADE + b"\r\n")
    assert response.startswith(b"HTTP/1.1 429 ")
    assert b"\r\nRetry-After: 1\r\n" in response
    assert b"too many new connections from 127.0.0.1" in response


async def test_a_client_over_the_incoming_rate_is_slowed_down_not_dropped(
    start_broker: StartBroker, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    broker = await start_broker(limits={"max_incoming_rate": 1000.0, "incoming_burst": 10})
    flooder = await connect(broker)
    other = await connect(broker)
    count = 510
    # From the first send: the broker (in this process) reads while the test sends.
    started = trio.current_time()
    for n in range(count):
        await flooder.send({"op": "ping", "id": n})
    # Meanwhile everyone else is served at once.
    assert await other.request({"op": "ping", "id": "x"}, timeout=0.5) == {"op": "pong", "id": "x"}
    for n in range(count):
        assert await flooder.recv() == {"op": "pong", "id": n}
    # 500 requests past the burst at 1000/s: no faster than 0.5 s, from the first send.
    assert trio.current_time() - started >= 0.45
    # Said once, not once per frame held back.
    (throttled,) = [r for r in caplog.records if "max_incoming_rate" in r.getMessage()]
    assert throttled.levelname == "WARNING"
    assert "sends faster than [limits] max_incoming_rate (1000 frames/s" in throttled.getMessage()


async def test_the_default_incoming_rate_lets_a_backend_publish_20000_messages_at_once(
    broker: Broker, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = await connect(broker)
    count = 20_000

    async def publish_all() -> None:
        for n in range(count):
            await publisher.send({"op": "publish", "topic": "t", "data": n, "id": n})
            if n % 500 == 0:
                await trio.lowlevel.checkpoint()

    # A limit of 1000 frames/s (the old default) takes 19 s here; the broker alone, about 2.
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_all)
            for n in range(count):
                assert await publisher.recv() == {"op": "ack", "id": n}
    assert not [r for r in caplog.records if "max_incoming_rate" in r.getMessage()]


async def test_the_byte_bound_on_an_outbox_cuts_off_a_stalled_consumer(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(
        limits={
            "max_queued_messages": 100_000,
            "max_queued_bytes": 64 * 1024,
            "slow_consumer_timeout": 0.2,
        }
    )
    stalled = await connect(broker, receive_buffer=4096)
    publisher = await connect(broker)
    await stalled.request({"op": "subscribe", "topic": "t", "id": 0})
    payload = "x" * 10_000
    # Far fewer messages than max_queued_messages, far more bytes than max_queued_bytes
    # plus the socket buffers.
    for n in range(1000):
        await publisher.send({"op": "publish", "topic": "t", "data": [n, payload]})
    assert await publisher.request({"op": "ping", "id": 1}, timeout=10) == {"op": "pong", "id": 1}
    received = 0
    with pytest.raises(Closed) as caught:
        while True:
            assert (await stalled.recv())["data"][0] == received
            received += 1
    assert (caught.value.code, caught.value.reason) == (1008, "slow consumer")
    assert received < 1000

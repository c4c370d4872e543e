"""Reconnect storms from one address, and client addresses behind trusted proxies."""

import logging
import re

import pytest

from tests.conftest import UPGRADE, Connect, StartBroker, http_exchange, upgrade_all_at_once

pytestmark = pytest.mark.slow  # thousands of clients

STORM = 5000


def _forwarded_for(n: int) -> bytes:
    return f"X-Forwarded-For: 6.6.6.6, 198.51.{n // 256}.{n % 256}\r\n".encode()


async def test_5000_clients_reconnecting_at_once_from_one_address_are_let_in(
    start_broker: StartBroker,
) -> None:
    # The defaults, with no proxy declared: a NAT, or nginx before anyone set trusted_proxies.
    broker = await start_broker()
    statuses = await upgrade_all_at_once(broker.port, [b""] * STORM)
    assert statuses == {101: STORM}


async def test_behind_a_trusted_proxy_each_client_is_limited_by_its_own_address(
    start_broker: StartBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tight = {"max_connections_per_ip": 1, "handshake_rate_per_ip": 0.1, "handshake_burst_per_ip": 1}
    broker = await start_broker(server={"trusted_proxies": ["127.0.0.0/8"]}, limits=tight)
    # 5000 users behind one proxy, all at once: each is one connection of its own address.
    statuses = await upgrade_all_at_once(broker.port, [_forwarded_for(n) for n in range(STORM)])
    assert statuses == {101: STORM}
    # One user, twice: its own address is over its limits, whatever the proxy's.
    response = await http_exchange(broker, UPGRADE + _forwarded_for(7) + b"\r\n")
    assert response.startswith(b"HTTP/1.1 429 ")
    assert b"too many new connections from 198.51.0.7" in response
    refused = [r.getMessage() for r in caplog.records if "429" in r.getMessage()]
    assert len(refused) == 1
    assert refused[0].startswith("refused 198.51.0.7 via 127.0.0.1:")


async def test_an_untrusted_peer_cannot_choose_its_address(start_broker: StartBroker) -> None:
    tight = {"max_connections_per_ip": 0, "handshake_rate_per_ip": 0.1, "handshake_burst_per_ip": 1}
    broker = await start_broker(server={"trusted_proxies": ["10.0.0.0/8"]}, limits=tight)
    assert await upgrade_all_at_once(broker.port, [_forwarded_for(1)]) == {101: 1}
    second = await http_exchange(broker, UPGRADE + _forwarded_for(2) + b"\r\n")
    assert second.startswith(b"HTTP/1.1 429 ")
    assert b"too many new connections from 127.0.0.1" in second


@pytest.mark.parametrize(
    ("trusted", "address"), [(["127.0.0.1"], r"203\.0\.113\.9"), ([], r"127\.0\.0\.1:\d+")]
)
async def test_plugins_see_the_forwarded_address_only_from_trusted_proxies(
    start_broker: StartBroker, connect: Connect, trusted: list[str], address: str
) -> None:
    broker = await start_broker(
        [{"use": "tests.example_plugins:StampAddress"}], server={"trusted_proxies": trusted}
    )
    client = await connect(broker, headers={"X-Forwarded-For": "203.0.113.9"})
    await client.request({"op": "subscribe", "topic": "t", "id": 1})
    await client.send({"op": "publish", "topic": "t", "data": 0})
    assert re.fullmatch(address, (await client.recv())["address"])


async def test_a_trusted_proxy_without_the_header_is_logged_once(
    start_broker: StartBroker, caplog: pytest.LogCaptureFixture
) -> None:
    broker = await start_broker(server={"trusted_proxies": ["127.0.0.1"]})
    assert await upgrade_all_at_once(broker.port, [b"", b""]) == {101: 2}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("trusted proxy 127.0.0.1:")
    assert "sent no X-Forwarded-For header" in warning

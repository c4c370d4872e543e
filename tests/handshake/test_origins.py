"""Cross-site WebSocket hijacking: browsers' Origin header against [server] allowed_origins."""

import pytest

from broker import Broker
from broker.config.schema import ConfigError, parse_config
from broker.handshake.origins import origin_allowed
from tests.conftest import Connect, StartBroker, url
from tests.wsclient import Rejected, WsClient


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        (None, "broker:8080", (), True),  # not a browser
        ("http://broker:8080", "broker:8080", (), True),  # same origin
        ("HTTP://Broker:8080", "broker:8080", (), True),
        ("http://broker:8081", "broker:8080", (), False),
        ("https://evil.example", "broker:8080", (), False),
        ("null", "broker:8080", (), False),
        ("", "", (), False),
        ("https://app.example.com", "b", ("https://app.example.com",), True),
        ("http://app.example.com", "b", ("https://app.example.com",), False),
        ("https://app.example.com:8443", "b", ("https://app.example.com",), False),
        ("https://a.example.com", "b", ("https://*.example.com",), True),
        ("https://a.b.example.com", "b", ("https://*.example.com",), True),
        ("https://example.com", "b", ("https://*.example.com",), False),
        ("https://evilexample.com", "b", ("https://*.example.com",), False),
        ("https://a.example.com.evil.net", "b", ("https://*.example.com",), False),
        ("https://x@a.example.com", "b", ("https://*.example.com",), False),
        ("https://a.example.com:8443", "b", ("https://*.example.com:8443",), True),
        ("https://a.example.com", "b", ("https://*.example.com:8443",), False),
        ("https://anything.net", "b", ("*",), True),
        ("null", "b", ("null",), True),
        # Any port: development servers (Vite, webpack, ...) pick their own.
        ("http://localhost:5173", "b", ("http://localhost:*",), True),
        ("http://localhost", "b", ("http://localhost:*",), True),
        ("https://localhost:5173", "b", ("http://localhost:*",), False),
        ("http://localhost.evil.net:5173", "b", ("http://localhost:*",), False),
        ("http://x@localhost:5173", "b", ("http://localhost:*",), False),
        ("http://[::1]:3000", "b", ("http://[::1]:*",), True),
        ("http://[::2]:3000", "b", ("http://[::1]:*",), False),
        ("http://a.example.com:1234", "b", ("http://*.example.com:*",), True),
    ],
)
def test_origin_rules(
    origin: str | None, host: str, allowed: tuple[str, ...], expected: bool
) -> None:
    assert origin_allowed(origin, host, allowed) is expected


@pytest.mark.parametrize(
    "origins",
    [
        '["example.com"]',
        '["https://Example.com"]',
        '["https://a.com/path"]',
        '["https://a.com:*8"]',
        '["https://a.com/"]',
        '"*"',
        "[1]",
    ],
)
def test_bad_origin_entries_are_config_errors(origins: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.allowed_origins"):
        parse_config(f"[server]\nallowed_origins = {origins}\n")


async def test_a_browser_from_another_site_gets_403(broker: Broker, connect: Connect) -> None:
    with pytest.raises(Rejected) as caught:
        await WsClient.connect(url(broker), headers={"Origin": "https://evil.example"})
    assert caught.value.status == 403
    assert b"origin 'https://evil.example' is not allowed" in caught.value.body
    # The same page served by the broker's own host and port, and a non-browser client, may.
    await connect(url(broker), headers={"Origin": f"http://127.0.0.1:{broker.port}"})
    await connect(broker)


async def test_configured_origins_are_allowed_and_only_they(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(server={"allowed_origins": ["https://*.example.com"]})
    await connect(url(broker), headers={"Origin": "https://app.example.com"})
    for origin in ("https://example.com", f"http://127.0.0.1:{broker.port}"):
        with pytest.raises(Rejected) as caught:
            await WsClient.connect(url(broker), headers={"Origin": origin})
        assert caught.value.status == 403

"""wss:// with [server.tls], checked by a client that verifies the certificate."""

import ssl
from pathlib import Path

import pytest
import trio
import trustme

from broker import Broker
from broker.config import ConfigError, parse_config
from broker.plugin_loader import load
from tests.conftest import Connect, StartBroker, make_config
from tests.wsclient import Closed, WsClient


def issue(ca: trustme.CA, directory: Path) -> dict[str, str]:
    """A certificate for 127.0.0.1 signed by ``ca``, as [server.tls] keys."""
    directory.mkdir(exist_ok=True)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return {"cert_file": str(cert_file), "key_file": str(key_file)}


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_broker(start_broker: StartBroker, ca: trustme.CA, tmp_path: Path) -> Broker:
    return await start_broker(
        server={"tls": issue(ca, tmp_path / "first")}, limits={"max_queued_bytes": 16 * 2**20}
    )


def wss(broker: Broker) -> str:
    return f"wss://127.0.0.1:{broker.port}/ws"


async def test_publish_and_subscribe_over_wss(
    tls_broker: Broker, connect: Connect, ca: trustme.CA
) -> None:
    subscriber = await connect(wss(tls_broker), ssl_context=trusting(ca), receive_buffer=4096)
    publisher = await connect(wss(tls_broker), ssl_context=trusting(ca))
    await subscriber.request({"op": "subscribe", "topic": "t", "id": 1})
    # More than the socket buffers hold while the subscriber does not read: the TLS stream
    # has no file descriptor to write to directly, so this runs the writer task's path.
    payload = "x" * 16_000
    for n in range(200):
        await publisher.send({"op": "publish", "topic": "t", "data": [n, payload]})
    assert await publisher.request({"op": "ping", "id": 2}) == {"op": "pong", "id": 2}
    for n in range(200):
        assert await subscriber.recv() == {"op": "message", "topic": "t", "data": [n, payload]}


async def test_a_client_that_does_not_trust_the_certificate_refuses_it(
    tls_broker: Broker, connect: Connect
) -> None:
    with pytest.raises(trio.BrokenResourceError) as caught:
        await WsClient.connect(wss(tls_broker), ssl_context=trusting(trustme.CA()))
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)


async def test_plain_ws_to_a_tls_port_is_dropped_and_others_carry_on(
    tls_broker: Broker, connect: Connect, ca: trustme.CA
) -> None:
    with pytest.raises(Closed):
        await WsClient.connect(f"ws://127.0.0.1:{tls_broker.port}/ws")
    client = await connect(wss(tls_broker), ssl_context=trusting(ca))
    assert await client.request({"op": "ping", "id": 1}) == {"op": "pong", "id": 1}


async def test_a_reload_picks_up_a_renewed_certificate(
    tls_broker: Broker, connect: Connect, ca: trustme.CA, tmp_path: Path
) -> None:
    before = await connect(wss(tls_broker), ssl_context=trusting(ca))
    renewed_by = trustme.CA()
    config = make_config(server={"tls": issue(renewed_by, tmp_path / "renewed")})
    tls_broker.reconfigure(config)
    await connect(wss(tls_broker), ssl_context=trusting(renewed_by))
    with pytest.raises(trio.BrokenResourceError):
        await WsClient.connect(wss(tls_broker), ssl_context=trusting(ca))
    assert await before.request({"op": "ping", "id": 1}) == {"op": "pong", "id": 1}


def test_tls_needs_both_files() -> None:
    with pytest.raises(ConfigError, match=r"server\.tls\.key_file: required"):
        parse_config('[server.tls]\ncert_file = "/x.pem"\n')


def test_unusable_tls_files_are_config_errors(tmp_path: Path, ca: trustme.CA) -> None:
    keys = issue(ca, tmp_path / "ok")
    for cert_file, key_file in [
        (str(tmp_path / "missing.pem"), keys["key_file"]),
        (keys["key_file"], keys["cert_file"]),  # swapped
    ]:
        path = tmp_path / "broker.toml"
        path.write_text(f'[server.tls]\ncert_file = "{cert_file}"\nkey_file = "{key_file}"\n')
        with pytest.raises(ConfigError, match=r"server\.tls: cannot use"):
            load(path)


async def test_a_reload_with_broken_tls_files_changes_nothing(
    tls_broker: Broker, connect: Connect, ca: trustme.CA, tmp_path: Path
) -> None:
    old_config = tls_broker.config
    broken = make_config(
        server={"tls": {"cert_file": str(tmp_path / "nope"), "key_file": str(tmp_path / "no")}}
    )
    with pytest.raises(ConfigError):
        tls_broker.reconfigure(broken)
    assert tls_broker.config is old_config
    await connect(wss(tls_broker), ssl_context=trusting(ca))

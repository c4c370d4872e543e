"""wss:// with [server.tls], checked by a client that verifies the certificate."""

import json
import ssl
from pathlib import Path

import pytest
import trio
import trustme
from websockets.frames import Opcode

from broker import Broker
from broker.config.schema import ConfigError, parse_config
from broker.node.config_file import load
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


async def test_a_burst_of_publishes_over_wss_arrives_whole_and_in_order(
    start_broker: StartBroker, connect: Connect, ca: trustme.CA, tmp_path: Path
) -> None:
    broker = await start_broker(
        server={"tls": issue(ca, tmp_path / "keys")},
        limits={"max_message_size": 2**21, "max_queued_messages": 5000, "max_queued_bytes": 2**23},
    )
    subscribers = [await connect(wss(broker), ssl_context=trusting(ca)) for _ in range(3)]
    publisher = await connect(wss(broker), ssl_context=trusting(ca))
    for subscriber in subscribers:
        await subscriber.request({"op": "subscribe", "topic": "t", "id": 1})
    # Many frames per TLS read for the broker, many per direct write to each subscriber,
    # and one message of many TLS records each way.
    for n in range(2000):
        publisher.protocol.send_text(
            json.dumps({"op": "publish", "topic": "t", "data": n}).encode()
        )
    big = "y" * 2**20
    publisher.protocol.send_text(json.dumps({"op": "publish", "topic": "t", "data": big}).encode())
    await publisher.send({"op": "ping", "id": 2})  # sends everything queued above
    assert await publisher.recv() == {"op": "pong", "id": 2}
    for subscriber in subscribers:
        assert [(await subscriber.recv())["data"] for _ in range(2000)] == list(range(2000))
        assert (await subscriber.recv())["data"] == big


async def test_heartbeats_over_wss_keep_a_quiet_client_and_drop_a_silent_one(
    start_broker: StartBroker,
    connect: Connect,
    ca: trustme.CA,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = await start_broker(
        server={
            "tls": issue(ca, tmp_path / "keys"),
            "heartbeat_interval": 30,
            "heartbeat_timeout": 10,
        }
    )
    quiet = await connect(wss(broker), ssl_context=trusting(ca))
    silent = await connect(wss(broker), ssl_context=trusting(ca))
    # The quiet one answers pings (the client library does, as it reads); the silent one
    # reads raw, so its pings are decrypted but never answered.
    with trio.fail_after(100):  # virtual seconds
        assert (await quiet.recv_frame(timeout=100)).opcode is Opcode.PING
        while await silent.stream.receive_some(65536):
            pass
    assert broker.connection_count == 1
    with trio.fail_after(200):
        assert (await quiet.recv_frame(timeout=100)).opcode is Opcode.PING
        assert (await quiet.recv_frame(timeout=100)).opcode is Opcode.PING
    assert await quiet.request({"op": "ping", "id": 1}) == {"op": "pong", "id": 1}


async def test_a_client_ending_tls_without_a_websocket_close_is_let_go(
    tls_broker: Broker, connect: Connect, ca: trustme.CA
) -> None:
    client = await connect(wss(tls_broker), ssl_context=trusting(ca))
    assert await client.request({"op": "subscribe", "topic": "t", "id": 1})
    stream = client.stream
    assert isinstance(stream, trio.SSLStream)
    with trio.fail_after(10):
        transport, _ = await stream.unwrap()  # close_notify, then waits for the broker's
        assert await transport.receive_some(100) == b""  # then the broker hangs up
    await transport.aclose()
    assert tls_broker.connection_count == 0


async def test_a_tls_client_that_never_finishes_its_handshake_is_dropped(
    start_broker: StartBroker, connect: Connect, ca: trustme.CA, tmp_path: Path
) -> None:
    broker = await start_broker(
        server={"tls": issue(ca, tmp_path / "keys"), "handshake_timeout": 0.5}
    )
    stalled = await trio.open_tcp_stream("127.0.0.1", broker.port)
    await stalled.send_all(b"\x16\x03\x01\x02\x00")  # the start of a ClientHello, no more
    with trio.fail_after(5):
        assert await stalled.receive_some(100) == b""
    await stalled.aclose()
    client = await connect(wss(broker), ssl_context=trusting(ca))
    assert await client.request({"op": "ping", "id": 1}) == {"op": "pong", "id": 1}


async def test_a_tampered_record_ends_only_its_own_connection(
    tls_broker: Broker, connect: Connect, ca: trustme.CA
) -> None:
    other = await connect(wss(tls_broker), ssl_context=trusting(ca))
    client = await connect(wss(tls_broker), ssl_context=trusting(ca))
    stream = client.stream
    assert isinstance(stream, trio.SSLStream)
    # A record of the right type and length whose authentication tag cannot match.
    await stream.transport_stream.send_all(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
    with trio.fail_after(10):
        while await stream.transport_stream.receive_some(65536):
            pass  # the broker's alert, then its end of the connection
    assert tls_broker.connection_count == 1
    assert await other.request({"op": "ping", "id": 1}) == {"op": "pong", "id": 1}

"""broker.handshake: the upgrade request checked without sockets, as RFC 6455 4.2.1 says."""

import base64
import hashlib

import h11
import pytest
import trio

from broker import Broker
from broker.handshake.upgrade import NOT_WEBSOCKET, HandshakeFailed, accept_response, check_upgrade
from broker.plugin_host.handshake_view import plugin_view
from tests.conftest import UPGRADE
from tests.wire.test_hostile_frames import TEXT, frame

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
GOOD = {
    "Host": "broker.example",
    "Upgrade": "websocket",
    "Connection": "keep-alive, Upgrade",
    "Sec-WebSocket-Key": KEY.decode(),
    "Sec-WebSocket-Version": "13",
}


def parsed(
    headers: dict[str, str], method: str = "GET", target: str = "/ws?token=t"
) -> h11.Request:
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(head.encode() + b"\r\n")
    event = parser.next_event()
    assert isinstance(event, h11.Request)
    return event


def refusal(
    headers: dict[str, str], method: str = "GET"
) -> tuple[int, str, tuple[tuple[str, str], ...]]:
    with pytest.raises(HandshakeFailed) as failed:
        check_upgrade(parsed(headers, method))
    return failed.value.refusal.status, failed.value.refusal.reason, failed.value.refusal.headers


def without(name: str, **changes: str) -> dict[str, str]:
    headers = {k: v for k, v in GOOD.items() if k != name}
    headers.update(changes)
    return headers


def test_a_good_request_is_taken_apart_for_plugins() -> None:
    offer = {"Sec-WebSocket-Protocol": "chat, trio-broker.json", "X-Custom": "1"}
    request = check_upgrade(parsed({**GOOD, **offer}))
    assert (request.target, request.host, request.key) == ("/ws?token=t", "broker.example", KEY)
    view = plugin_view(request, "127.0.0.1:5000", "c-1")
    assert view.path == "/ws" and view.query == {"token": ("t",)} and view.client_id == "c-1"
    names = [name for name, _ in view.headers]
    assert names[0] == "host" and "x-custom" in names and "sec-websocket-protocol" not in names
    expected = base64.b64encode(
        hashlib.sha1(KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    )
    assert request.subprotocols == ("chat", "trio-broker.json")
    assert accept_response(request) == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + expected + b"\r\n"
        b"Sec-WebSocket-Protocol: trio-broker.json\r\n\r\n"
    )
    no_offer = check_upgrade(parsed(GOOD))
    assert accept_response(no_offer).endswith(b"Sec-WebSocket-Accept: " + expected + b"\r\n\r\n")


def test_only_unknown_subprotocols_are_a_400_that_names_the_known_ones() -> None:
    status, reason = refusal({**GOOD, "Sec-WebSocket-Protocol": "mqtt"})[:2]
    assert (status, reason) == (
        400,
        "unknown subprotocol(s) mqtt: this broker speaks trio-broker.json, trio-broker.msgpack",
    )


def test_what_is_missing_is_said() -> None:
    assert refusal(without("Connection", Connection="keep-alive"))[:2] == (
        400,
        "Missing header, 'Connection: Upgrade'",
    )
    assert refusal(without("Sec-WebSocket-Key"))[:2] == (400, "Missing header, 'Sec-WebSocket-Key'")
    assert refusal(without("Upgrade", Upgrade="h2c"))[:2] == (
        400,
        "Missing header, 'Upgrade: websocket'",
    )
    assert refusal(GOOD, method="POST")[:2] == (400, "Request method must be GET")
    status, _, headers = refusal(without("Sec-WebSocket-Version", **{"Sec-WebSocket-Version": "8"}))
    assert status == 426 and headers == (("Sec-WebSocket-Version", "13"),)
    assert refusal(without("Sec-WebSocket-Version"))[0] == 400


def test_a_plain_get_is_told_this_is_a_websocket_endpoint() -> None:
    with pytest.raises(HandshakeFailed) as failed:
        check_upgrade(parsed({"Host": "x"}))
    assert failed.value.refusal == NOT_WEBSOCKET


async def test_frames_sent_with_the_request_are_read(broker: Broker) -> None:
    # A client may send its first frames before it has read the 101.
    ping = frame(TEXT, b'{"op":"ping","id":7}')
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", broker.port)
        await stream.send_all(UPGRADE + b"\r\n" + ping)
        received = b""
        while b'"op":"pong"' not in received:
            data = await stream.receive_some(4096)
            assert data, received
            received += data
        await stream.aclose()
    assert received.startswith(b"HTTP/1.1 101 ")
    assert b'"op":"welcome"' in received and b'{"op":"pong","id":7}' in received

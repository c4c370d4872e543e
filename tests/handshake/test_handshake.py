"""broker.handshake: the upgrade request checked without sockets, as RFC 6455 4.2.1 says."""

import base64
import hashlib
import itertools
import string

import h11
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from broker import Broker
from broker.handshake.upgrade import (
    MAX_REQUEST_SIZE,
    NOT_WEBSOCKET,
    HandshakeFailed,
    RequestReader,
    UpgradeRequest,
    accept_response,
)
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


def head(headers: dict[str, str], method: str = "GET", target: str = "/ws?token=t") -> bytes:
    lines = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return lines.encode() + b"\r\n"


def checked(
    headers: dict[str, str], method: str = "GET", target: str = "/ws?token=t"
) -> UpgradeRequest:
    received = RequestReader().receive(head(headers, method, target))
    assert received is not None
    return received.request


def refusal(
    headers: dict[str, str], method: str = "GET"
) -> tuple[int, str, tuple[tuple[str, str], ...]]:
    with pytest.raises(HandshakeFailed) as failed:
        checked(headers, method)
    return failed.value.refusal.status, failed.value.refusal.reason, failed.value.refusal.headers


def without(name: str, **changes: str) -> dict[str, str]:
    headers = {k: v for k, v in GOOD.items() if k != name}
    headers.update(changes)
    return headers


def test_a_good_request_is_taken_apart_for_plugins() -> None:
    offer = {"Sec-WebSocket-Protocol": "chat, trio-broker.json", "X-Custom": "1"}
    request = checked({**GOOD, **offer})
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
    no_offer = checked(GOOD)
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
        checked({"Host": "x"})
    assert failed.value.refusal == NOT_WEBSOCKET


def read_in_pieces(data: bytes, cuts: list[int]) -> tuple[UpgradeRequest, bytes]:
    """The request read from ``data`` cut at ``cuts``, and what followed its head."""
    reader = RequestReader()
    bounds = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    for start, end in itertools.pairwise(bounds):
        received = reader.receive(data[start:end])
        if received is not None:
            return received.request, received.after + data[end:]
    raise AssertionError("the head never completed")


def test_a_request_read_a_byte_at_a_time_keeps_its_target_and_first_frames() -> None:
    ping = frame(TEXT, b'{"op":"ping"}')
    data = head(GOOD, target="/ws?token=" + "t" * 300) + ping
    request, after = read_in_pieces(data, list(range(1, len(data))))
    assert request.target == "/ws?token=" + "t" * 300 and request.key == KEY
    assert after == ping


def test_header_names_are_lowercased_and_values_trimmed() -> None:
    request = checked({**GOOD, "Sec-WebSocket-Version": " 13\t", "X-Trace": "  a b  "})
    assert (b"x-trace", b"a b") in request.extra_headers
    assert (b"sec-websocket-version", b"13") in request.extra_headers


@pytest.mark.parametrize(
    "data",
    [
        b"HELLO\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"\x16\x03\x01\x02\x00",
    ],
    ids=["not HTTP", "space in a header name", "negative length", "TLS hello"],
)
def test_malformed_requests_are_a_400(data: bytes) -> None:
    with pytest.raises(HandshakeFailed) as failed:
        RequestReader().receive(data)
    assert failed.value.refusal.status == 400
    assert failed.value.refusal.reason == "Bad HTTP message"


def test_a_head_over_the_limit_is_a_431_however_it_arrives() -> None:
    reader = RequestReader()
    assert reader.receive(b"GET /ws HTTP/1.1\r\nHost: x\r\n") is None
    with pytest.raises(HandshakeFailed) as failed:
        for _ in range(MAX_REQUEST_SIZE // 100 + 1):
            assert reader.receive(b"X-Padding: " + b"y" * 87 + b"\r\n") is None
    assert failed.value.refusal.status == 431


def test_what_follows_a_plain_get_is_not_read() -> None:
    with pytest.raises(HandshakeFailed) as failed:
        RequestReader().receive(head({"Host": "x"}) + b"\0\xff not HTTP")
    assert failed.value.refusal == NOT_WEBSOCKET
    received = RequestReader().receive(head({"Host": "x"}, target="/sse?topic=a") + b"junk")
    assert received is not None and received.request.stream and received.after == b""


_TOKEN = st.text(string.ascii_letters + string.digits + "-_!#$%&'*+.^`|~", min_size=1)
_VALUE = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
).map(lambda text: text.replace(" ", ""))


@given(
    extra=st.lists(st.tuples(_TOKEN.map(lambda name: "X-" + name), _VALUE), max_size=8),
    target=st.text("abcdefghijklmnopqrstuvwxyz0123456789/?=&%.-_~", max_size=60),
    cuts=st.lists(st.integers(min_value=0), max_size=6),
)
def test_the_reader_sees_what_h11_sees(
    extra: list[tuple[str, str]], target: str, cuts: list[int]
) -> None:
    data = f"GET /{target} HTTP/1.1\r\n".encode()
    data += b"".join(f"{k}: {v}\r\n".encode() for k, v in [*GOOD.items(), *extra]) + b"\r\n"
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(data)
    event = parser.next_event()
    assert isinstance(event, h11.Request)
    request, after = read_in_pieces(data, cuts)
    assert after == b""
    assert request.target.encode() == event.target
    wanted = [(bytes(name), bytes(value)) for name, value in event.headers if name != b"host"]
    assert list(request.extra_headers) == wanted


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

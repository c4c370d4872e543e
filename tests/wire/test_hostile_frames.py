"""Malformed handshakes and frames over real sockets, answered as RFC 6455 section 7.4.1 says.

The categories follow the Autobahn|Testsuite fuzzing-client cases: framing (reserved bits
and opcodes), control frames, fragmentation, UTF-8, close handling, limits. After each, the
broker must still serve a fresh client.
"""

import socket
import struct

import pytest
import trio
import trio.testing

from broker import Broker
from tests.conftest import UPGRADE, Connect, StartBroker, http_exchange
from tests.wsclient import WsClient

MASK = b"\x37\xfa\x21\x3d"


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """A client frame, as a broken client might build it."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


TEXT, BINARY, CLOSE, PING, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0x0


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


PROTOCOL_ERRORS = {
    "reserved data opcode 3": frame(0x3, b"x"),
    "reserved data opcode 7": frame(0x7),
    "reserved control opcode 11": frame(0xB),
    "reserved control opcode 15": frame(0xF, b"x"),
    "RSV1 without an extension": frame(TEXT, b"{}", rsv=0b100),
    "RSV2": frame(TEXT, b"{}", rsv=0b010),
    "RSV3 on a ping": frame(PING, b"", rsv=0b001),
    "unmasked frame": frame(TEXT, b"{}", masked=False),
    "ping of 126 bytes": frame(PING, b"x" * 126),
    "close of 126 bytes": frame(CLOSE, close_payload(1000, b"x" * 124)),
    "fragmented ping": frame(PING, b"x", fin=False),
    "fragmented close": frame(CLOSE, close_payload(1000), fin=False),
    "continuation with nothing to continue": frame(CONTINUATION, b"x"),
    "new text inside a fragmented message": frame(TEXT, b"[", fin=False) + frame(TEXT, b"1"),
    "new binary inside a fragmented message": frame(TEXT, b"[", fin=False) + frame(BINARY, b""),
    "close with a 1-byte body": frame(CLOSE, b"\x03"),
    "close code 999": frame(CLOSE, close_payload(999)),
    "close code 1004": frame(CLOSE, close_payload(1004)),
    "close code 1005": frame(CLOSE, close_payload(1005)),
    "close code 1006": frame(CLOSE, close_payload(1006)),
    "close code 1015": frame(CLOSE, close_payload(1015)),
    "close code 1016": frame(CLOSE, close_payload(1016)),
    "close code 2999": frame(CLOSE, close_payload(2999)),
    "close code 5000": frame(CLOSE, close_payload(5000)),
}

INVALID_UTF8 = {
    "invalid UTF-8 in a text frame": frame(TEXT, b'{"op":"ping","id":"\xff"}'),
    "overlong encoding": frame(TEXT, b'"\xc0\xaf"'),
    "encoded surrogate": frame(TEXT, b'"\xed\xa0\x80"'),
    "invalid UTF-8 across fragments": frame(TEXT, b'"\xce', fin=False)
    + frame(CONTINUATION, b'\xff"'),
    "truncated sequence at the end of a message": frame(TEXT, b'"\xe2\x82'),
    "invalid UTF-8 in a close reason": frame(CLOSE, close_payload(1000, b"\xff")),
}


async def assert_still_serving(broker: Broker) -> None:
    client = await WsClient.connect(f"ws://127.0.0.1:{broker.port}/ws")
    try:
        assert (await client.recv())["op"] == "welcome"
        assert await client.request({"op": "ping", "id": 1}) == {"op": "pong", "id": 1}
    finally:
        await client.aclose()


@pytest.mark.parametrize("data", PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
async def test_protocol_violations_close_with_1002(
    broker: Broker, connect: Connect, data: bytes
) -> None:
    client = await connect(broker)
    await client.stream.send_all(data)
    assert (await client.wait_closed())[0] == 1002
    await assert_still_serving(broker)


@pytest.mark.parametrize("data", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
async def test_invalid_utf8_closes_with_1007(broker: Broker, connect: Connect, data: bytes) -> None:
    client = await connect(broker)
    await client.stream.send_all(data)
    assert (await client.wait_closed())[0] == 1007
    await assert_still_serving(broker)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999])
async def test_valid_close_codes_are_echoed(broker: Broker, connect: Connect, code: int) -> None:
    client = await connect(broker)
    await client.stream.send_all(frame(CLOSE, close_payload(code, b"bye")))
    assert await client.wait_closed() == (code, "bye")


async def test_a_frame_announcing_more_than_max_message_size_closes_with_1009(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(limits={"max_message_size": 4096})
    client = await connect(broker)
    # 2^40 bytes announced; the broker must not wait for (or buffer) them.
    await client.stream.send_all(frame(TEXT, b"x" * 5000, length=2**40)[: 14 + 5000])
    assert (await client.wait_closed())[0] == 1009
    await assert_still_serving(broker)


async def test_thousands_of_fragments_beyond_max_message_size_close_with_1009(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(limits={"max_message_size": 4096})
    client = await connect(broker)
    data = frame(TEXT, b"[", fin=False) + frame(CONTINUATION, b"1,", fin=False) * 5000
    await client.stream.send_all(data)
    assert (await client.wait_closed())[0] == 1009
    await assert_still_serving(broker)


async def test_a_64_bit_length_with_the_top_bit_set_is_a_protocol_error(
    broker: Broker, connect: Connect
) -> None:
    client = await connect(broker)
    await client.stream.send_all(bytes([0x81, 0xFF]) + b"\x80" + b"\0" * 7 + MASK)
    assert (await client.wait_closed())[0] in (1002, 1009)
    await assert_still_serving(broker)


async def test_a_tcp_reset_in_the_middle_of_a_frame_releases_the_connection(
    broker: Broker, connect: Connect
) -> None:
    client = await connect(broker)
    await client.request({"op": "subscribe", "topic": "t", "id": 1})
    await client.stream.send_all(frame(TEXT, b'{"op":"ping"}')[:5])
    assert broker.connection_count == 1
    sock = client.stream.socket  # type: ignore[attr-defined]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # with linger 0: a reset, not a FIN
    await trio.testing.wait_all_tasks_blocked()
    assert broker.connection_count == 0
    await assert_still_serving(broker)


async def test_headers_over_the_size_limit_get_431(broker: Broker) -> None:
    padding = b"".join(b"X-Padding-%d: %s\r\n" % (n, b"y" * 100) for n in range(100))
    response = await http_exchange(broker, UPGRADE + padding + b"\r\n")
    assert response.startswith(b"HTTP/1.1 431 ")
    await assert_still_serving(broker)


@pytest.mark.parametrize(
    "request_",
    [
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",  # no Sec-WebSocket-Key
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40,  # a TLS hello
        b"\0\xff" * 1000,
    ],
    ids=["no key", "no upgrade header", "POST", "TLS hello", "binary garbage"],
)
async def test_malformed_handshakes_get_400(broker: Broker, request_: bytes) -> None:
    response = await http_exchange(broker, request_)
    assert response.startswith(b"HTTP/1.1 400 "), response[:100]
    await assert_still_serving(broker)


# --- What a conforming client may do (Autobahn categories 2, 5 and 7) ---------------------------


async def test_a_ping_of_125_bytes_gets_its_payload_back(broker: Broker, connect: Connect) -> None:
    client = await connect(broker)
    payload = bytes(range(125))
    await client.stream.send_all(frame(PING, payload))
    reply = await client.recv_frame()
    assert (reply.opcode.name, reply.data) == ("PONG", payload)


async def test_an_unsolicited_pong_is_ignored(broker: Broker, connect: Connect) -> None:
    client = await connect(broker)
    await client.stream.send_all(frame(0xA, b"nobody asked"))
    assert await client.request({"op": "ping", "id": 1}) == {"op": "pong", "id": 1}


async def test_control_frames_inside_a_fragmented_message_are_answered(
    broker: Broker, connect: Connect
) -> None:
    client = await connect(broker)
    await client.stream.send_all(
        frame(TEXT, b'{"op":"pi', fin=False)
        + frame(PING, b"between")
        + frame(CONTINUATION, b"", fin=False)  # an empty fragment is valid
        + frame(0xA, b"unsolicited")
        + frame(CONTINUATION, b'ng","id":7}')
    )
    first = await client.recv_frame()
    assert (first.opcode.name, first.data) == ("PONG", b"between")
    assert await client.recv() == {"op": "pong", "id": 7}


async def test_a_close_in_the_middle_of_a_fragmented_message_is_answered(
    broker: Broker, connect: Connect
) -> None:
    client = await connect(broker)
    await client.stream.send_all(
        frame(TEXT, b'{"op":', fin=False) + frame(CLOSE, close_payload(1000, b"done"))
    )
    assert await client.wait_closed() == (1000, "done")


async def test_an_empty_close_is_answered_with_an_empty_close(
    broker: Broker, connect: Connect
) -> None:
    client = await connect(broker)
    await client.stream.send_all(frame(CLOSE))
    assert (await client.wait_closed())[0] in (None, 1005)  # "no status", as RFC 6455 7.1.5

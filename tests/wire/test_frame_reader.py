"""broker.frame_reader: client frames parsed in bulk, checked against wsproto as an oracle."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from broker.wire import frame_reader
from broker.wire.frame_reader import Close, FrameReader, Received, unmask
from broker.wire.frames import close_frame, ping_frame, pong_frame
from tests.wire.test_hostile_frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    INVALID_UTF8,
    PING,
    PROTOCOL_ERRORS,
    TEXT,
    close_payload,
    frame,
)


def described(events: list[frame_reader.Event]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for event in events:
        if isinstance(event, Received):
            out.append(("message", event.payload, event.frames))
        elif isinstance(event, frame_reader.Ping | frame_reader.Pong):
            out.append((type(event).__name__.lower(), event.payload))
        elif isinstance(event, Close):
            out.append(("close", event.code, event.reason))
        else:
            out.append(("violation", event.code))
    return out


def read_in_pieces(
    data: bytes, cuts: list[int], max_size: int = 1 << 20
) -> list[tuple[object, ...]]:
    reader = FrameReader(max_size)
    events = []
    previous = 0
    for cut in [*sorted(cuts), len(data)]:
        events += reader.receive(data[previous:cut])
        previous = cut
    return described(events)


CONVERSATION = (
    frame(TEXT, b'{"op":"ping"}')
    + frame(TEXT, b'{"op":', fin=False)
    + frame(PING, b"in between")
    + frame(CONTINUATION, b'"pub', fin=False)
    + frame(CONTINUATION, 'lish\u00e9"}'.encode())
    + frame(BINARY, b"\x00\x01" * 100)
    + frame(TEXT, b"x" * 300)
    + frame(TEXT, b"y" * 70_000)
    + frame(0xA, b"")
    + frame(CLOSE, close_payload(1000, b"bye"))
    + frame(TEXT, b"after the close: never read")
)
EXPECTED = [
    ("message", '{"op":"ping"}', 1),
    ("ping", b"in between"),
    ("message", '{"op":"publish\u00e9"}', 3),
    ("message", b"\x00\x01" * 100, 1),
    ("message", "x" * 300, 1),
    ("message", "y" * 70_000, 1),
    ("pong", b""),
    ("close", 1000, "bye"),
]


def test_a_conversation_read_at_once_or_byte_by_byte_gives_the_same_events() -> None:
    assert read_in_pieces(CONVERSATION, []) == EXPECTED
    assert read_in_pieces(CONVERSATION, list(range(1, 400))) == EXPECTED
    assert read_in_pieces(CONVERSATION, list(range(1, len(CONVERSATION), 997))) == EXPECTED


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 8, 125, 126, 65_535, 65_536, 100_000])
def test_unmask_is_its_own_inverse_and_xors_every_byte(length: int) -> None:
    payload = bytes(range(256)) * (length // 256 + 1)
    payload = payload[:length]
    mask = b"\x01\x80\xff\x37"
    masked = unmask(payload, mask)
    assert masked == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert unmask(masked, mask) == payload


@pytest.mark.parametrize("data", PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
def test_protocol_errors_are_1002_and_end_the_reading(data: bytes) -> None:
    events = read_in_pieces(data + frame(TEXT, b"{}"), [])
    assert events[-1] == ("violation", 1002)


@pytest.mark.parametrize("data", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
def test_invalid_utf8_is_1007(data: bytes) -> None:
    assert read_in_pieces(data, [])[-1] == ("violation", 1007)


def test_non_minimal_lengths_and_a_set_top_bit_are_protocol_errors() -> None:
    two_bytes_for_5 = bytes([0x81, 0xFE]) + struct.pack("!H", 5) + b"\0" * 4 + b"x" * 5
    eight_bytes_for_5 = bytes([0x81, 0xFF]) + struct.pack("!Q", 5) + b"\0" * 4 + b"x" * 5
    top_bit = bytes([0x81, 0xFF]) + b"\x80" + b"\0" * 7 + b"\0" * 4
    for data in (two_bytes_for_5, eight_bytes_for_5, top_bit):
        assert read_in_pieces(data, []) == [("violation", 1002)]


def test_a_message_too_big_is_refused_when_announced_and_the_close_after_it_still_heard() -> None:
    reader = FrameReader(1000)
    announced = frame(TEXT, b"x" * 5000, length=2**20)[: 14 + 5000]
    assert described(reader.receive(announced)) == [("violation", 1009)]
    # The rest of that payload is skipped as it comes, then frames are read again: data
    # dropped, the peer's close heard.
    assert reader.receive(b"\0" * (2**20 - 5000)) == []
    rest = frame(TEXT, b"dropped") + frame(PING, b"p") + frame(CLOSE, close_payload(1009))
    assert described(reader.receive(rest)) == [("close", 1009, "")]
    assert reader.receive(frame(TEXT, b"{}")) == []


def test_fragments_beyond_the_limit_are_1009_and_not_kept() -> None:
    reader = FrameReader(100)
    data = frame(TEXT, b"[", fin=False) + frame(CONTINUATION, b"1," * 30, fin=False) * 2
    assert described(reader.receive(data)) == [("violation", 1009)]
    after = frame(CONTINUATION, b"1]") + frame(CLOSE, b"")
    assert described(reader.receive(after)) == [("close", 1005, "")]


def test_server_control_frames_are_what_wsproto_sends() -> None:
    server = Connection(ConnectionType.SERVER)
    for code, reason in [(1000, ""), (1001, "going away"), (4001, "token expired")]:
        assert close_frame(code, reason) == Connection(ConnectionType.SERVER).send(
            CloseConnection(code=code, reason=reason)
        )
    long_reason = "é" * 100  # 200 bytes: cut at a character boundary within 123
    sent = close_frame(1008, long_reason)
    assert len(sent) <= 127 and sent[4:].decode() == "é" * 61
    assert close_frame(1005) == b"\x88\x00"
    assert ping_frame(b"heartbeat") == server.send(Ping(payload=b"heartbeat"))
    assert pong_frame(b"x" * 125) == server.send(Pong(payload=b"x" * 125))


# Valid client traffic: wsproto's server connection, fed the same bytes, must agree.
_payloads = st.binary(max_size=300)
_texts = st.text(max_size=100).map(str.encode)


@st.composite
def client_messages(draw: st.DrawFn) -> tuple[bytes, list[tuple[object, ...]]]:
    data = b""
    expected: list[tuple[object, ...]] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["text", "binary", "ping", "pong"]))
        if kind in ("ping", "pong"):
            payload = draw(st.binary(max_size=125))
            data += frame(PING if kind == "ping" else 0xA, payload)
            expected.append((kind, payload))
            continue
        payload = draw(_texts if kind == "text" else _payloads)
        parts = draw(st.integers(1, 4))
        cut_points = sorted(
            draw(st.lists(st.integers(0, len(payload)), min_size=parts - 1, max_size=parts - 1))
        )
        pieces = [
            payload[a:b] for a, b in zip([0, *cut_points], [*cut_points, len(payload)], strict=True)
        ]
        opcode = TEXT if kind == "text" else BINARY
        for index, piece in enumerate(pieces):
            data += frame(
                opcode if index == 0 else CONTINUATION, piece, fin=index == len(pieces) - 1
            )
        expected.append(("message", payload.decode() if kind == "text" else payload, len(pieces)))
    return data, expected


def wsproto_events(data: bytes) -> list[tuple[object, ...]]:
    server = Connection(ConnectionType.SERVER)
    server.receive_data(data)
    out: list[tuple[object, ...]] = []
    parts: list[object] = []
    for event in server.events():
        if isinstance(event, TextMessage | BytesMessage):
            parts.append(event.data)
            if event.message_finished:
                joined = "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)  # type: ignore[arg-type]
                out.append(("message", joined))
                parts = []
        elif isinstance(event, Ping | Pong):
            out.append((type(event).__name__.lower(), event.payload))
    return out


@settings(max_examples=200, deadline=None)
@given(client_messages(), st.lists(st.integers(0, 2000), max_size=6))
def test_valid_traffic_reads_as_wsproto_reads_it(
    traffic: tuple[bytes, list[tuple[object, ...]]], cuts: list[int]
) -> None:
    data, expected = traffic
    ours = read_in_pieces(data, [c for c in cuts if c < len(data)])
    assert ours == expected
    assert [event[:2] for event in ours] == wsproto_events(data)

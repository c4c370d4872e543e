"""The frame reader on a connection that negotiated permessage-deflate: compressed
messages (whole or in fragments) inflated, bounded by the message size limit however
well they compress, and RSV bits allowed only where RFC 7692 allows them."""

import zlib

import pytest

from broker.wire.frame_reader import FrameReader
from tests.wire.test_frame_reader import described
from tests.wire.test_hostile_frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    TEXT,
    close_payload,
    frame,
)

RSV1, RSV2 = 4, 2  # as test_hostile_frames.frame shifts them


def deflated(payload: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def read(data: bytes, max_size: int = 1 << 20, pieces: int = 1) -> list[tuple[object, ...]]:
    reader = FrameReader(max_size, deflate=True)
    step = max(1, len(data) // pieces)
    events = []
    for start in range(0, len(data), step):
        events += reader.receive(data[start : start + step])
    return described(events)


def test_compressed_messages_whole_or_in_fragments_beside_plain_ones() -> None:
    text = '{"op":"publish","topic":"chat","data":"' + "héllo " * 200 + '"}'
    packed = deflated(text.encode())
    half = len(packed) // 2
    data = (
        frame(TEXT, packed, rsv=RSV1)
        + frame(TEXT, b'{"op":"ping"}')  # uncompressed: allowed too
        + frame(BINARY, packed[:half], rsv=RSV1, fin=False)
        + frame(PING, b"between")
        + frame(CONTINUATION, packed[half:])
        + frame(TEXT, deflated(b""), rsv=RSV1)
        + frame(CLOSE, close_payload(1000, b""))
    )
    expected = [
        ("message", text, 1),
        ("message", '{"op":"ping"}', 1),
        ("ping", b"between"),
        ("message", text.encode(), 2),
        ("message", "", 1),
        ("close", 1000, ""),
    ]
    assert read(data) == expected
    assert read(data, pieces=len(data)) == expected  # byte by byte


def test_a_small_message_that_inflates_beyond_the_limit_is_1009_without_inflating_it_all() -> None:
    bomb = deflated(bytes(10 * 1024 * 1024))  # 10 MiB of zeros in about 10 KB
    assert len(bomb) < 20_000
    data = frame(TEXT, bomb, rsv=RSV1) + frame(CLOSE, close_payload(1000, b""))
    assert read(data, max_size=1024 * 1024) == [("violation", 1009), ("close", 1000, "")]


def test_the_limit_is_on_the_inflated_size() -> None:
    exact = b"a" * 1000
    assert read(frame(TEXT, deflated(exact), rsv=RSV1), max_size=1000) == [
        ("message", exact.decode(), 1)
    ]
    assert read(frame(TEXT, deflated(exact + b"a"), rsv=RSV1), max_size=1000) == [
        ("violation", 1009)
    ]
    # Incompressible: deflated it is a little larger than itself, and still fits.
    noise = bytes(range(256)) * 4
    stored = zlib.compressobj(0, zlib.DEFLATED, -15)
    packed = (stored.compress(noise) + stored.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(packed) > len(noise)
    assert read(frame(BINARY, packed, rsv=RSV1), max_size=1024) == [("message", noise, 1)]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(TEXT, b"x", fin=False) + frame(CONTINUATION, b"y", rsv=RSV1), 1002),
        (frame(PING, b"", rsv=RSV1), 1002),
        (frame(TEXT, deflated(b"x"), rsv=RSV1 | RSV2), 1002),
        (frame(TEXT, b"\xff\xfe not deflate data", rsv=RSV1), 1007),
        (frame(TEXT, deflated(b"\xff not utf-8"), rsv=RSV1), 1007),
    ],
)
def test_rsv_bits_where_they_may_not_be_and_broken_compressed_data(data: bytes, code: int) -> None:
    assert read(data)[-1] == ("violation", code)


def test_without_deflate_rsv1_is_still_a_protocol_error() -> None:
    reader = FrameReader(1 << 20)
    assert described(reader.receive(frame(TEXT, deflated(b"x"), rsv=RSV1))) == [("violation", 1002)]

"""permessage-deflate without sockets: the negotiation's every branch, bounded inflation,
and frames compressed once however many subscribers take them."""

import os
import random
import zlib

import pytest

from broker.speedups import ENVIRONMENT
from broker.wire.deflate import (
    ZLIB,
    Agreement,
    Deflater,
    Library,
    Malformed,
    fastest_library,
    inflate,
    isal_library,
    negotiate,
    parse_extensions,
)
from broker.wire.frames import frame_payload, text_frame
from tests.conftest import require_service

PLAIN = b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"


@pytest.mark.parametrize(
    "offer",
    [
        b"permessage-deflate; client_max_window_bits",  # Chromium's
        b"permessage-deflate",
        b"permessage-deflate; client_no_context_takeover",
        b"permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
        b'permessage-deflate; client_max_window_bits="15"',
        b"PerMessage-Deflate ;  Client_Max_Window_Bits",  # names are case-insensitive
        b"x-webkit-deflate-frame, permessage-deflate",  # another extension first: skipped
    ],
)
def test_offers_the_broker_accepts_as_they_are(offer: bytes) -> None:
    agreement = negotiate([offer])
    assert agreement == Agreement(15) and agreement.header() == PLAIN


def test_a_smaller_server_window_is_honoured() -> None:
    agreement = negotiate([b"permessage-deflate; server_max_window_bits=10"])
    assert agreement == Agreement(10)
    assert agreement.header() == PLAIN + b"; server_max_window_bits=10"


@pytest.mark.parametrize(
    "offer",
    [
        b"permessage-deflate; server_max_window_bits=8",  # zlib cannot deflate in 256 bytes
        b"permessage-deflate; server_max_window_bits",  # needs a value
        b"permessage-deflate; server_max_window_bits=16",
        b"permessage-deflate; server_max_window_bits=010",
        b"permessage-deflate; client_max_window_bits=7",
        b"permessage-deflate; server_no_context_takeover=1",
        b"permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        b"permessage-deflate; mystery",
        b"x-webkit-deflate-frame",
        b"permessage-deflate; client_max_window_bits=",  # malformed: no compression at all
        b"permessage-deflate;; client_max_window_bits",
        b"permessage-deflate client_max_window_bits",
        "permessage-deflate; é".encode(),
    ],
)
def test_offers_it_cannot_honour_leave_the_connection_uncompressed(offer: bytes) -> None:
    assert negotiate([offer]) is None


def test_the_first_acceptable_offer_wins_across_header_lines() -> None:
    offers = [
        b"permessage-deflate; server_max_window_bits=8",
        b"permessage-deflate; server_max_window_bits=12",
    ]
    assert negotiate(offers) == Agreement(12)
    assert negotiate([b"permessage-deflate; server_max_window_bits=8, permessage-deflate"]) == (
        Agreement(15)
    )


def test_the_header_grammar() -> None:
    assert parse_extensions([b' a ; b = "x\\"y" ; c , , d ']) == [
        ("a", [("b", 'x"y'), ("c", None)]),
        ("d", []),
    ]
    assert parse_extensions([b""]) == []
    for bad in (b"a; b=", b'a; b="open', b"a b", b"; b", b"a;"):
        with pytest.raises(Malformed):
            parse_extensions([bad])


def deflated(payload: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_inflate_is_bounded_by_the_message_size() -> None:
    assert inflate(deflated(b"hello" * 100), 500) == b"hello" * 100
    bomb = deflated(bytes(10 * 1024 * 1024))  # 10 MiB of zeros
    assert len(bomb) < 20_000
    assert inflate(bomb, 1024 * 1024) is None
    assert inflate(deflated(b""), 0) == b""
    with pytest.raises(zlib.error):
        inflate(b"\xff\xff\xff not deflate", 1000)


def unpacked(frame: bytes) -> bytes:
    """A frame's payload as the client reads it, inflated when RSV1 says so."""
    payload = frame_payload(frame)
    if frame[0] & 0x40:
        inflater = zlib.decompressobj(-15)
        return inflater.decompress(payload + b"\x00\x00\xff\xff")
    return payload


def test_a_frame_is_compressed_once_per_window_and_each_message_stands_alone() -> None:
    deflater = Deflater(level=1, min_size=256)
    chat = text_frame(b'{"op":"message","topic":"chat/lobby","data":"' + b"hello " * 100 + b'"}')
    first = deflater.frame(chat)
    assert first is deflater.frame(chat)  # the next subscriber gets the same bytes
    assert first[0] == 0xC1 and len(first) < len(chat) // 3
    assert unpacked(first) == frame_payload(chat)
    shared = deflater.for_window(15)
    assert shared is deflater.for_window(15)  # one function for every connection
    assert unpacked(shared(chat)) == frame_payload(chat) and shared(chat) is shared(chat)
    smaller_window = deflater.frame(chat, 10)
    assert smaller_window is not first and unpacked(smaller_window) == frame_payload(chat)
    # Without context takeover: a fresh inflater reads any message on its own.
    second = text_frame(b'{"op":"message","data":"' + b"hello " * 100 + b'"}')
    assert unpacked(deflater.frame(second)) == frame_payload(second)


def test_small_and_incompressible_frames_go_as_they_are() -> None:
    deflater = Deflater(level=1, min_size=256)
    small = text_frame(b"x" * 255)
    assert deflater.frame(small) is small
    noise = text_frame(os.urandom(2000).hex().encode()[:2000])
    assert unpacked(deflater.frame(noise)) == frame_payload(noise)
    random_bytes = text_frame(os.urandom(1000))  # not UTF-8, but a payload all the same
    assert deflater.frame(random_bytes) is random_bytes


def test_the_cache_is_bounded_and_never_mistakes_a_frame() -> None:
    deflater = Deflater(level=1, min_size=10)
    frames = [text_frame(b"a" * 100 + str(n).encode()) for n in range(Deflater.CACHED * 3)]
    for frame in frames:
        assert unpacked(deflater.frame(frame)) == frame_payload(frame)
    assert len(deflater._cache) == Deflater.CACHED


def _library(name: str) -> Library:
    if name == "zlib":
        return ZLIB
    isal = isal_library()
    require_service("isal", isal is not None, "pip install isal (make test installs it)")
    assert isal is not None
    return isal


@pytest.mark.parametrize("library", ["zlib", "isal"])
@pytest.mark.parametrize("level", [1, 4, 9])
@pytest.mark.parametrize("window_bits", [9, 12, 15])
def test_each_library_deflates_what_a_client_inflates_within_the_agreed_window(
    library: str, level: int, window_bits: int
) -> None:
    deflater = Deflater(level=level, min_size=256, library=_library(library))
    # A block of 3,000 random letters, repeated: matches lie 3,000 bytes back, beyond the
    # smaller windows, which a compressor that ignored them would use.
    block = bytes(random.Random(level).choices(b"abcdefghijklmnop", k=3000))
    for size in (300, 5000, 200_000):
        text = (block * (size // len(block) + 1))[:size]
        frame = text_frame(text)
        compressed = deflater.frame(frame, window_bits)
        assert compressed[0] == 0xC1 and len(compressed) < len(frame)
        # An inflater with exactly the agreed window: a reference beyond it would fail.
        inflater = zlib.decompressobj(-window_bits)
        payload = frame_payload(compressed)
        assert inflater.decompress(payload + b"\x00\x00\xff\xff") == text


def test_isal_deflates_unless_speedups_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    isal = _library("isal")
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    assert fastest_library().name == isal.name and Deflater(1, 256).library.name == isal.name
    monkeypatch.setenv(ENVIRONMENT, "1")
    assert fastest_library() is ZLIB and Deflater(1, 256).library is ZLIB
    monkeypatch.setenv(ENVIRONMENT, "0")
    assert fastest_library().name.startswith("ISA-L (isal ")

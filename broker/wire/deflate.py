"""permessage-deflate (RFC 7692), no I/O: the negotiation, and messages deflated and
inflated.

The broker's answer always carries ``server_no_context_takeover``: each message it sends
is compressed alone, so one compressed frame serves every subscriber that negotiated the
same window (`Deflater`), never once per subscriber. It also asks for
``client_no_context_takeover`` (RFC 7692 section 7.1.1.2 lets a server add it): the
broker then keeps no inflater between a client's messages, which would cost every
connection tens of kilobytes while idle.

Inflating is bounded: `inflate` stops at ``max_size`` bytes of output, so a small
message that would inflate to gigabytes costs no more than ``max_size``.

Deflating uses ISA-L (the ``isal`` package, ``pip install 'trio-broker[speedups]'``)
when it is installed: in the saturated broker it takes about half of zlib's time for the
same size. Without it, or with ``TRIO_BROKER_NO_SPEEDUPS=1``, the standard zlib does.
"""

import re
import zlib
from collections.abc import Callable, Iterable
from functools import partial
from typing import ClassVar, Protocol

import attrs

from .. import speedups
from .frames import LastConverted, frame_header, frame_payload

EXTENSION = "permessage-deflate"
# What a sync flush ends with; RFC 7692 section 7.2.1 takes it off each message.
_TAIL = b"\x00\x00\xff\xff"
_RSV1 = 0x40
# zlib cannot deflate with a window of 256 bytes: an offer that demands it is declined.
_SMALLEST_WINDOW = 9
_LARGEST_WINDOW = 15

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_OWS = re.compile(r"[ \t]*")
_TOKEN_RE = re.compile(_TOKEN)
_VALUE_RE = re.compile(rf"{_TOKEN}|{_QUOTED}")
_BITS_RE = re.compile(r"[89]|1[0-5]")

Params = list[tuple[str, str | None]]


class Malformed(ValueError):
    """A Sec-WebSocket-Extensions header that RFC 7230's grammar does not accept."""


def parse_extensions(values: Iterable[bytes]) -> list[tuple[str, Params]]:
    """Each extension offered (in order) with its parameters: ``name; p; q=v, name2``.
    Raises Malformed when the header does not parse."""
    try:
        text = ",".join(value.decode("ascii") for value in values)
    except UnicodeDecodeError:
        raise Malformed("not ASCII") from None
    offers: list[tuple[str, Params]] = []
    position = 0

    def skip_spaces() -> None:
        nonlocal position
        match = _OWS.match(text, position)
        position = match.end() if match else position

    def expect(pattern: re.Pattern[str], what: str) -> str:
        nonlocal position
        match = pattern.match(text, position)
        if match is None:
            raise Malformed(f"expected {what} at {position}")
        position = match.end()
        return match.group()

    while position < len(text):
        skip_spaces()
        if position < len(text) and text[position] == ",":  # empty list elements
            position += 1
            continue
        if position >= len(text):
            break
        name = expect(_TOKEN_RE, "an extension name")
        params: Params = []
        skip_spaces()
        while position < len(text) and text[position] == ";":
            position += 1
            skip_spaces()
            param = expect(_TOKEN_RE, "a parameter name")
            skip_spaces()
            value = None
            if position < len(text) and text[position] == "=":
                position += 1
                skip_spaces()
                value = expect(_VALUE_RE, "a parameter value")
                if value.startswith('"'):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                skip_spaces()
            params.append((param.lower(), value))
        if position < len(text) and text[position] != ",":
            raise Malformed(f"unexpected {text[position]!r} at {position}")
        offers.append((name.lower(), params))
    return offers


@attrs.frozen
class Agreement:
    """A negotiated permessage-deflate: the window the broker may deflate with."""

    window_bits: int = _LARGEST_WINDOW

    def header(self) -> bytes:
        """The Sec-WebSocket-Extensions value of the 101 answer."""
        params = [EXTENSION, "server_no_context_takeover", "client_no_context_takeover"]
        if self.window_bits != _LARGEST_WINDOW:
            params.append(f"server_max_window_bits={self.window_bits}")
        return "; ".join(params).encode()


def negotiate(values: Iterable[bytes]) -> Agreement | None:
    """The first permessage-deflate offer the broker can honour, if any. A malformed
    header, or offers it cannot honour, leave the connection uncompressed."""
    try:
        offers = parse_extensions(values)
    except Malformed:
        return None
    for name, params in offers:
        if name == EXTENSION and (agreement := _acceptable(params)) is not None:
            return agreement
    return None


def _acceptable(params: Params) -> Agreement | None:
    names = [name for name, _ in params]
    if len(set(names)) != len(names):
        return None  # section 7: a parameter given twice declines the offer
    window = _LARGEST_WINDOW
    for name, value in params:
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                return None
        elif name == "server_max_window_bits":
            if value is None or not _BITS_RE.fullmatch(value):
                return None
            window = int(value)
            if window < _SMALLEST_WINDOW:
                return None
        elif name == "client_max_window_bits":
            # Any window of the client's inflates with the largest one.
            if value is not None and not _BITS_RE.fullmatch(value):
                return None
        else:
            return None
    return Agreement(window)


def inflate(data: bytes, max_size: int) -> bytes | None:
    """A compressed message's payload inflated; None when it inflates to more than
    ``max_size`` bytes (no more than that is ever produced). Raises zlib.error when it
    is not deflate data."""
    inflater = zlib.decompressobj(-_LARGEST_WINDOW)
    payload = inflater.decompress(data + _TAIL, max_size + 1)
    return None if len(payload) > max_size else payload


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self, mode: int, /) -> bytes: ...


@attrs.frozen
class Library:
    """A deflate implementation: ``compressor(level, window_bits)`` for raw deflate
    (negative window bits) at one of zlib's levels, 1 (fastest) to 9 (smallest)."""

    name: str
    compressor: Callable[[int, int], _Compressor]


ZLIB = Library(
    f"zlib {zlib.ZLIB_RUNTIME_VERSION}",
    lambda level, window_bits: zlib.compressobj(level, zlib.DEFLATED, window_bits),
)


def isal_library() -> Library | None:
    """ISA-L's deflate, if the isal package is installed. Its levels are 0 to 3: zlib's
    1-3 become its 1, 4-6 its 2, 7-9 its 3 (its 0 compresses far less than zlib's 1)."""
    try:
        from isal import __version__, isal_zlib
    except ImportError:
        return None
    return Library(
        f"ISA-L (isal {__version__})",
        lambda level, window_bits: isal_zlib.compressobj(
            (level + 2) // 3, isal_zlib.DEFLATED, window_bits
        ),
    )


def fastest_library() -> Library:
    """ISA-L when it is installed and speedups are on, else zlib."""
    return (isal_library() if speedups.enabled() else None) or ZLIB


class Deflater:
    """Compressed text frames for the connections that negotiated permessage-deflate.

    A publish's frame is offered to each subscriber in turn: the compressed frame of the
    last few frames is kept, by identity, so that each is compressed once per window
    size in use, however many subscribers take it.
    """

    __slots__ = ("_cache", "_for_window", "level", "library", "min_size")

    CACHED: ClassVar[int] = 16

    def __init__(self, level: int, min_size: int, library: Library | None = None) -> None:
        self.level = level
        self.min_size = min_size  # smaller payloads go uncompressed
        self.library = library or fastest_library()
        self._cache: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        self._for_window: dict[int, Callable[[bytes], bytes]] = {}

    def for_window(self, window_bits: int) -> Callable[[bytes], bytes]:
        """`frame` for one agreed window: one function that connections share."""
        compress = self._for_window.get(window_bits)
        if compress is None:
            window = LastConverted(partial(self.frame, window_bits=window_bits))
            compress = self._for_window[window_bits] = window.frame
        return compress

    def frame(self, frame: bytes, window_bits: int = _LARGEST_WINDOW) -> bytes:
        """``frame`` (one of `broker.wire.frames.text_frame`'s) compressed, or itself if
        its payload is smaller than ``min_size`` or would not shrink."""
        if len(frame) - 2 < self.min_size:  # a header is 2 bytes at least
            return frame
        key = (id(frame), window_bits)
        cached = self._cache.get(key)
        if cached is not None and cached[0] is frame:
            return cached[1]
        compressed = self._compress(frame, window_bits)
        if len(self._cache) >= self.CACHED:
            del self._cache[next(iter(self._cache))]
        self._cache[key] = (frame, compressed)
        return compressed

    def _compress(self, frame: bytes, window_bits: int) -> bytes:
        payload = frame_payload(frame)
        if len(payload) < self.min_size:
            return frame
        # A compressor of its own: each message stands alone, as server_no_context_takeover
        # promises. Measured on 1 KiB of chat text, a new one costs no more than reusing
        # one and resetting it with a full flush.
        compressor = self.library.compressor(self.level, -window_bits)
        deflated = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        deflated = deflated[:-4] if deflated.endswith(_TAIL) else deflated
        if len(deflated) >= len(payload):
            return frame
        return frame_header(frame[0] | _RSV1, len(deflated)) + deflated

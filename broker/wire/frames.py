"""Server-to-client WebSocket frames (RFC 6455 section 5.2).

Server frames are never masked, so one frame serves every subscriber of a
message: it is built once per publish instead of once per delivery.
"""

import struct
from collections.abc import Callable

from .close_codes import LOCAL_ONLY, CloseCode

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82
_FIN_CLOSE = 0x88
_FIN_PING = 0x89
_FIN_PONG = 0x8A
# Codes that say something about this end's connection only, never sent in a close frame.
_MAX_CLOSE_REASON = 123  # a control frame's 125 bytes, less the code


def frame_header(first: int, length: int) -> bytes:
    """An unmasked frame's header: ``first`` its first byte (FIN, RSV and opcode bits)."""
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame carrying ``payload`` (UTF-8)."""
    return frame_header(_FIN_TEXT, len(payload)) + payload


def binary_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked binary frame carrying ``payload``."""
    return frame_header(_FIN_BINARY, len(payload)) + payload


def frame_payload(frame: bytes) -> bytes:
    """The payload of a frame made by `text_frame`."""
    length = frame[1]
    return frame[2 + (2 if length == 126 else 8 if length == 127 else 0) :]


def _control_frame(first: int, payload: bytes) -> bytes:
    assert len(payload) <= 125, "control frames carry at most 125 bytes"
    return bytes((first, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; a reason too long for it is cut at a character boundary.

    NO_STATUS (1005: the peer's close had no code) is answered with no code at all.
    """
    if code == CloseCode.NO_STATUS:
        return _control_frame(_FIN_CLOSE, b"")
    if code in LOCAL_ONLY:
        code = CloseCode.NORMAL
    encoded = reason.encode()
    if len(encoded) > _MAX_CLOSE_REASON:
        encoded = encoded[:_MAX_CLOSE_REASON].decode(errors="ignore").encode()
    return _control_frame(_FIN_CLOSE, struct.pack("!H", code) + encoded)


def ping_frame(payload: bytes) -> bytes:
    return _control_frame(_FIN_PING, payload)


def pong_frame(payload: bytes) -> bytes:
    return _control_frame(_FIN_PONG, payload)


class LastConverted:
    """``convert`` (a frame to another: re-encoded, compressed) with the frame converted
    last at hand. The subscribers of a publish take its frame one after the other, so a
    publish is converted once for all of them."""

    __slots__ = ("_convert", "_converted", "_last")

    def __init__(self, convert: Callable[[bytes], bytes]) -> None:
        self._convert = convert
        self._last = b""
        self._converted = b""

    def frame(self, frame: bytes) -> bytes:
        if frame is self._last:
            return self._converted
        converted = self._convert(frame)
        self._last, self._converted = frame, converted
        return converted

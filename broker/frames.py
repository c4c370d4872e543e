"""Server-to-client WebSocket data frames (RFC 6455 section 5.2).

Server frames are never masked, so one frame serves every subscriber of a
message: it is built once per publish instead of once per delivery. Control
frames (ping, pong, close) go through wsproto, which tracks the close handshake.
"""

import struct

_FIN_TEXT = 0x81


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame carrying ``payload`` (UTF-8)."""
    length = len(payload)
    if length < 126:
        header = bytes((_FIN_TEXT, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", _FIN_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, length)
    return header + payload


def frame_payload(frame: bytes) -> bytes:
    """The payload of a frame made by `text_frame`."""
    length = frame[1]
    return frame[2 + (2 if length == 126 else 8 if length == 127 else 0) :]

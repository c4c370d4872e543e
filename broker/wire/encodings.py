"""What a connection speaks (no I/O): JSON in text frames, or MessagePack in binary
frames (the ``trio-broker.msgpack`` subprotocol), with or without permessage-deflate.

The broker builds every message as JSON once (a publish's delivery frame serves every
JSON subscriber). A MessagePack connection's outbox re-encodes each frame it takes
(`MsgpackFrames`): the same map, the same fields, binary data (``data_b64`` in JSON) as
MessagePack bin. The subscribers of a publish take its frame one after the other, so the
last frame re-encoded is kept: a publish is re-encoded once for all of them.
"""

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import msgpack

from .frames import LastConverted, binary_frame, frame_payload
from .protocol import MAX_JSON_DEPTH, ErrorCode, ProtocolError, data_field
from .sse import StreamRequest

JSON = "trio-broker.json"
MSGPACK = "trio-broker.msgpack"
SUBPROTOCOLS = (JSON, MSGPACK)


def choose_subprotocol(offered: Sequence[str]) -> str | None:
    """The first subprotocol offered that the broker speaks (the client's preference)."""
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    return None


def decode_msgpack(payload: bytes) -> dict[str, Any]:
    """A request sent in MessagePack: one map whose values JSON could carry, but ``data``,
    which may also be binary (bin). ProtocolError ``bad_request`` for anything else."""
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        message = f"not valid MessagePack: {str(error)[:100] or type(error).__name__}"
        raise ProtocolError(ErrorCode.BAD_REQUEST, message) from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request must be a MessagePack map")
    for key, value in obj.items():
        if not (key == "data" and isinstance(value, bytes)):
            _check_value(value, 2)
    return obj


def _check_value(value: Any, depth: int) -> None:
    """What JSON could carry, at most `MAX_JSON_DEPTH` deep (as a JSON request may be)."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "numbers must be finite")
        return
    if isinstance(value, (dict, list)):
        if depth > MAX_JSON_DEPTH:
            message = f"maps and arrays nest more than {MAX_JSON_DEPTH} deep"
            raise ProtocolError(ErrorCode.BAD_REQUEST, message)
        for child in value.values() if isinstance(value, dict) else value:
            _check_value(child, depth + 1)
        return
    if isinstance(value, bytes):
        message = "binary values may only be a publish's whole 'data'"
    else:
        message = f"MessagePack {type(value).__name__} values are not supported"
    raise ProtocolError(ErrorCode.BAD_REQUEST, message)


def msgpack_frame(frame: bytes) -> bytes:
    """One of the broker's JSON text frames as a MessagePack binary frame."""
    obj = json.loads(frame_payload(frame))
    _with_bytes(obj)
    for message in obj.get("messages", ()):  # a history reply's
        if isinstance(message, dict):
            _with_bytes(message)
    try:
        payload = msgpack.packb(obj)
    except UnicodeEncodeError:  # a lone surrogate, which JSON escapes and UTF-8 cannot carry
        payload = msgpack.packb(_without_surrogates(obj))
    return binary_frame(payload)


_SURROGATE = re.compile(f"[{chr(0xD800)}-{chr(0xDFFF)}]")  # mypyc takes no surrogate literals


def _without_surrogates(value: Any) -> Any:
    """``value`` with each lone surrogate in its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    return value


def _with_bytes(envelope: dict[str, Any]) -> None:
    if "data_b64" in envelope:
        envelope["data"] = data_field({"data_b64": envelope.pop("data_b64")})


class MsgpackFrames(LastConverted):
    """`msgpack_frame`, once per publish (`LastConverted`)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(lambda frame: msgpack_frame(frame))  # the module's, when called


@attrs.frozen
class WireFormat:
    """What one connection speaks; one shared instance per combination in use."""

    msgpack: bool = False
    deflate: bool = False  # permessage-deflate was agreed: the reader inflates
    # What the connection's outbox does to each data frame before it goes (re-encoding,
    # compressing), or None: it goes as built.
    outgoing: Callable[[bytes], bytes] | None = None
    # A read-only event stream (Server-Sent Events): the filters and position it asked
    # for. Its instance is its own, not shared.
    stream: StreamRequest | None = None

    def first(self, frame: bytes) -> bytes:
        """A frame sent outside the outbox (the welcome, with the handshake's answer)."""
        return frame if self.outgoing is None else self.outgoing(frame)


JSON_FORMAT = WireFormat()


def chained(
    first: Callable[[bytes], bytes], then: Callable[[bytes], bytes]
) -> Callable[[bytes], bytes]:
    """``then(first(frame))``: re-encoded, then compressed."""

    def both(frame: bytes) -> bytes:
        return then(first(frame))

    return both

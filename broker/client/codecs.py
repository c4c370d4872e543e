"""How the client encodes its requests and decodes what the broker sends: JSON in text
frames, or MessagePack in binary frames (the ``trio-broker.msgpack`` subprotocol)."""

from typing import Any, Protocol

from ..wire import protocol
from . import events

ENCODINGS = ("json", "msgpack")


class Codec(Protocol):
    @property
    def subprotocol(self) -> str | None:
        """Asked for at the handshake (None: none, JSON)."""

    def encode(self, request: protocol.Request) -> str | bytes: ...

    def decode(self, payload: str | bytes) -> dict[str, Any] | None:
        """The message's fields; None for a frame of the other kind (ignored)."""


class JsonCodec:
    subprotocol: str | None = None

    def encode(self, request: protocol.Request) -> str | bytes:
        return protocol.encode_request(request)

    def decode(self, payload: str | bytes) -> dict[str, Any] | None:
        if isinstance(payload, bytes):
            return None  # the protocol is text, on a JSON connection
        return events.decode(payload)


class MsgpackCodec:
    subprotocol: str | None = "trio-broker.msgpack"

    def __init__(self) -> None:
        import msgpack  # only for clients that speak it

        self._msgpack = msgpack

    def encode(self, request: protocol.Request) -> str | bytes:
        encoded: bytes = self._msgpack.packb(protocol.request_fields(request))
        return encoded

    def decode(self, payload: str | bytes) -> dict[str, Any] | None:
        if isinstance(payload, str):
            return None  # the protocol is binary, on a MessagePack connection
        fields: dict[str, Any] = self._msgpack.unpackb(payload)
        return fields


def codec(encoding: str) -> Codec:
    if encoding == "json":
        return JsonCodec()
    if encoding == "msgpack":
        return MsgpackCodec()
    raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")

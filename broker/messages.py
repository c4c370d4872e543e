"""Reassemble fragmented WebSocket messages from wsproto events, within a size limit."""

from typing import Any

import attrs
from wsproto.events import BytesMessage, TextMessage


class MessageTooBig(Exception):
    """The message being received exceeds the limit (close code 1009)."""


@attrs.frozen
class Received:
    """One complete message: text (str) or binary (bytes)."""

    payload: str | bytes


class MessageAssembler:
    """Feed it wsproto data events; it returns each complete message once."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._parts: list[Any] = []
        self._size = 0

    def feed(self, event: TextMessage | BytesMessage) -> Received | None:
        data = event.data
        # Text is counted in characters, a lower bound of its UTF-8 size; the
        # exact size is computed only when that bound comes close to the limit.
        self._size += len(data)
        if self._size > self.max_size:
            raise MessageTooBig(f"message exceeds {self.max_size} bytes")
        self._parts.append(data)
        if not event.message_finished:
            return None
        parts, self._parts, self._size = self._parts, [], 0
        if isinstance(event, TextMessage):
            text = "".join(parts)
            if len(text) * 4 > self.max_size and len(text.encode()) > self.max_size:
                raise MessageTooBig(f"message exceeds {self.max_size} bytes")
            return Received(text)
        assert isinstance(event, BytesMessage)
        return Received(b"".join(parts))

"""The answer to a ``history`` request, cut the same way by every engine."""

import json
from typing import Any

import attrs

from ..wire.frames import frame_payload


@attrs.frozen
class HistoryPage:
    messages: list[dict[str, Any]]  # as delivered, without ``op``; oldest first
    position: str | None  # now; None when the filter covers no topic with history
    # Asked with ``since``: whether nothing published after it was dropped (by the
    # history bounds, or because it is not a position of this history) ...
    recovered: bool | None = None
    # ... and whether messages after the last of ``messages`` were left out by the
    # limit or the size cap (ask again from the last one's position).
    more: bool | None = None

    def reply(self) -> dict[str, Any]:
        """The fields of the answer (WebSocket and HTTP alike)."""
        fields: dict[str, Any] = {"messages": self.messages}
        if self.position is not None:
            fields["pos"] = self.position
        if self.recovered is not None:
            fields["recovered"] = self.recovered
        if self.more is not None:
            fields["more"] = self.more
        return fields


def newest_page(
    frames: list[bytes], limit: int, max_bytes: int, position: str | None
) -> HistoryPage:
    """The newest ``limit`` of ``frames`` (retained deliveries, oldest first) that fit
    in ``max_bytes``: one reply is one message in the client's queue, so it holds what
    the queue would."""
    first, size = len(frames), 0
    while first > max(0, len(frames) - limit) and size + len(frames[first - 1]) <= max_bytes:
        first -= 1
        size += len(frames[first])
    return HistoryPage([_as_message(frame) for frame in frames[first:]], position)


def page_after(
    frames: list[bytes], limit: int, max_bytes: int, position: str | None, complete: bool
) -> HistoryPage:
    """The oldest ``limit`` of ``frames`` (everything retained after a position, oldest
    first) that fit in ``max_bytes``; ``complete``: nothing after it was dropped."""
    end, size = 0, 0
    while end < min(len(frames), limit) and size + len(frames[end]) <= max_bytes:
        size += len(frames[end])
        end += 1
    messages = [_as_message(frame) for frame in frames[:end]]
    return HistoryPage(messages, position, complete, end < len(frames))


def _as_message(frame: bytes) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(frame_payload(frame))
    del message["op"]
    return message

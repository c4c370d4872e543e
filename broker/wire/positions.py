"""Positions in the message stream, as clients see them: opaque strings (no I/O).

A position is ``EPOCH:OFFSET``: the epoch names this run of the history (a restart
starts a new one, and old positions no longer mean anything), the offset counts the
messages published on topics with history. Only the broker compares them.
"""

import secrets

import attrs

MAX_LENGTH = 64


def new_epoch() -> str:
    return secrets.token_hex(4)


def format_position(epoch: str, offset: int) -> str:
    """A position as clients see it (made once per publish: no object on the way)."""
    return f"{epoch}:{offset}"


@attrs.frozen
class Position:
    epoch: str
    offset: int

    def __str__(self) -> str:
        return format_position(self.epoch, self.offset)


def parse_position(text: object) -> Position | None:
    """The position, or None for anything malformed."""
    if not isinstance(text, str) or len(text) > MAX_LENGTH:
        return None
    epoch, separator, offset = text.partition(":")
    if not separator or not epoch or not offset.isdigit() or not offset.isascii():
        return None
    return Position(epoch, int(offset))

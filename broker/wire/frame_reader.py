"""Client-to-server WebSocket frames (RFC 6455 section 5), parsed in bulk.

`FrameReader.receive` takes what one socket read returned and gives back every event the
complete frames in it make: whole messages (fragments reassembled within the size limit,
text checked as UTF-8), pings, pongs, the peer's close, or the violation that ends the
connection with its close code. One call per read, no generator or per-frame objects
between the socket and the request: a publisher's frames cost a few slices each.

Strictness follows wsproto's (which it replaces on this path): masked frames only, no
reserved bits or opcodes, minimal length encodings, control frames whole and at most 125
bytes, close codes a peer may send.
"""

import zlib
from typing import Final

from .close_codes import CloseCode
from .deflate import inflate

TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA
CONTINUATION: Final = 0x0

PROTOCOL_ERROR: Final = CloseCode.PROTOCOL_ERROR
INVALID_DATA: Final = CloseCode.INVALID_DATA
MESSAGE_TOO_BIG: Final = CloseCode.MESSAGE_TOO_BIG
NO_STATUS: Final = CloseCode.NO_STATUS
# Codes of RFC 6455 section 7.4.1 (and 1012/1013, in use since) a peer may send, and the
# ranges for libraries and applications.
_PEER_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013})
_MAX_CONTROL = 125


class Received:
    """A complete message: text (str) or binary (bytes), and how many frames made it
    (each counts against the client's incoming rate)."""

    __slots__ = ("frames", "payload")

    def __init__(self, payload: str | bytes, frames: int = 1) -> None:
        self.payload = payload
        self.frames = frames

    def __repr__(self) -> str:
        return f"Received({self.payload!r}, frames={self.frames})"


class Ping:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Pong:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Close:
    """The peer's close frame: ``code`` is NO_STATUS when it carried none."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Violation:
    """The peer broke the protocol; the connection closes with ``code``.

    With ``framing_intact`` (a message too big, or not UTF-8) the frames that follow can
    still be told apart: the reader drops data frames and reports the peer's close, so
    the closing handshake completes. Otherwise it reads nothing more.
    """

    __slots__ = ("code", "framing_intact", "reason")

    def __init__(self, code: int, reason: str, *, framing_intact: bool = False) -> None:
        self.code = code
        self.reason = reason
        self.framing_intact = framing_intact


Event = Received | Ping | Pong | Close | Violation


def unmask(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``mask`` repeated: one big-integer XOR, done in C."""
    length = len(payload)
    if not length:
        return b""
    key = (mask * ((length >> 2) + 1))[:length]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(length, "little")


def _deflated_bound(size: int) -> int:
    """The most that ``size`` bytes may take deflated (stored blocks and their headers)."""
    return size + (size >> 10) + 64


def _close_event(payload: bytes) -> Close | Violation:
    if not payload:
        return Close(NO_STATUS, "")
    if len(payload) == 1:
        return Violation(PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if code not in _PEER_CLOSE_CODES and not 3000 <= code <= 4999:
        return Violation(PROTOCOL_ERROR, f"close code {code} may not be sent")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        return Violation(INVALID_DATA, "close reason is not valid UTF-8")
    return Close(code, reason)


class FrameReader:
    """Feed it what the socket gives; it returns the events of each complete frame.

    After a `Close` or a `Violation` it returns nothing more but the peer's close (and
    that only if the framing is intact): the connection is ending.
    """

    __slots__ = (
        "_buffer",
        "_compressed",
        "_deflate",
        "_discarding",
        "_done",
        "_fragments",
        "_frames",
        "_max_size",
        "_opcode",
        "_size",
        "_skip",
    )

    def __init__(self, max_message_size: int, *, deflate: bool = False) -> None:
        """``deflate``: permessage-deflate was negotiated (`broker.wire.deflate`): a
        message whose first frame has RSV1 set is inflated, ``max_message_size``
        bounding its inflated size."""
        self._max_size = max_message_size
        self._deflate = deflate
        self._compressed = False  # the message being received is
        self._buffer = b""  # an incomplete frame's bytes so far
        self._opcode = 0  # of the fragmented message being received; 0: none
        self._fragments: list[bytes] = []
        self._size = 0  # the fragments' bytes
        self._frames = 0  # the fragments' frames
        self._done = False
        self._discarding = False  # after a violation that left the framing intact
        self._skip = 0  # bytes of a dropped frame still to come

    def receive(self, data: bytes) -> list[Event]:
        if self._done:
            return []
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return []
            data, self._skip = data[self._skip :], 0
        buffer = self._buffer + data if self._buffer else data
        events: list[Event] = []
        end = len(buffer)
        position = 0
        while end - position >= 2:
            first = buffer[position]
            second = buffer[position + 1]
            opcode = first & 0x0F
            length = second & 0x7F
            head = position + 2
            if length == 126:
                if end - head < 2:
                    break
                length = int.from_bytes(buffer[head : head + 2], "big")
                head += 2
                if length < 126:
                    return self._fail(events, PROTOCOL_ERROR, "length not minimally encoded")
            elif length == 127:
                if end - head < 8:
                    break
                length = int.from_bytes(buffer[head : head + 8], "big")
                head += 8
                if length >> 63:
                    return self._fail(events, PROTOCOL_ERROR, "64-bit length with its top bit set")
                if length < 1 << 16:
                    return self._fail(events, PROTOCOL_ERROR, "length not minimally encoded")
            problem = self._check_header(first, second, opcode, length)
            if problem is not None:
                code, reason = problem
                if code != MESSAGE_TOO_BIG:
                    return self._fail(events, code, reason)
                events.append(Violation(code, reason, framing_intact=True))
                self._discard()
            if self._discarding and opcode < 0x8:
                # Dropped unread, however long: the payload is skipped as it comes.
                stop = head + 4 + length
                if stop > end:
                    self._skip = stop - end
                    position = end
                    break
                position = stop
                continue
            start = head + 4
            stop = start + length
            if stop > end:
                break
            payload = unmask(buffer[start:stop], buffer[head:start])
            position = stop
            if first & 0x40 and opcode < 0x8:
                self._compressed = True  # RSV1 on a data frame: `_check_header` allowed it
            event = self._frame(first & 0x80, opcode, payload)
            if event is None:
                continue
            events.append(event)
            if type(event) is Close or (type(event) is Violation and not event.framing_intact):
                self._done = True
                self._buffer = b""
                return events
        self._buffer = buffer[position:] if position < end else b""
        return events

    def _check_header(
        self, first: int, second: int, opcode: int, length: int
    ) -> tuple[int, str] | None:
        """What is wrong with a frame's header, if anything: known before its payload."""
        if first & 0x70:
            if not self._deflate:
                return PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)"
            if first & 0x30:
                return PROTOCOL_ERROR, "RSV2 or RSV3 set (only permessage-deflate was negotiated)"
            if opcode not in (TEXT, BINARY):
                return PROTOCOL_ERROR, "RSV1 set on a frame that does not start a message"
        if not second & 0x80:
            return PROTOCOL_ERROR, "client frames must be masked"
        if opcode >= 0x8:
            if opcode > PONG:
                return PROTOCOL_ERROR, f"reserved control opcode {opcode}"
            if not first & 0x80:
                return PROTOCOL_ERROR, "fragmented control frame"
            if length > _MAX_CONTROL:
                return PROTOCOL_ERROR, "control frame longer than 125 bytes"
            return None
        if opcode > BINARY:
            return PROTOCOL_ERROR, f"reserved data opcode {opcode}"
        if self._discarding:
            return None
        if opcode == CONTINUATION:
            if not self._opcode:
                return PROTOCOL_ERROR, "continuation frame with no message to continue"
        elif self._opcode:
            return PROTOCOL_ERROR, "new message inside a fragmented message"
        # Refused as soon as announced: the payload is neither waited for nor buffered.
        if self._size + length > self._max_size:
            compressed = self._compressed if opcode == CONTINUATION else first & 0x40
            # Deflate may add a little to what does not compress; inflating checks again.
            if not compressed or self._size + length > _deflated_bound(self._max_size):
                return MESSAGE_TOO_BIG, "message too big"
        return None

    def _frame(self, fin: int, opcode: int, payload: bytes) -> Event | None:
        if opcode >= 0x8:
            if opcode == CLOSE:
                return _close_event(payload)
            if self._discarding:
                return None
            return Ping(payload) if opcode == PING else Pong(payload)
        if not fin:
            if opcode:
                self._opcode = opcode
            self._fragments.append(payload)
            self._size += len(payload)
            self._frames += 1
            return None
        frames = 1
        if opcode == CONTINUATION:
            self._fragments.append(payload)
            payload = b"".join(self._fragments)
            opcode, frames = self._opcode, self._frames + 1
            self._opcode, self._fragments, self._size, self._frames = 0, [], 0, 0
        if self._compressed:
            self._compressed = False
            try:
                inflated = inflate(payload, self._max_size)
            except zlib.error:
                self._discard()
                return Violation(INVALID_DATA, "malformed compressed message", framing_intact=True)
            if inflated is None:
                self._discard()
                return Violation(MESSAGE_TOO_BIG, "message too big", framing_intact=True)
            payload = inflated
        if opcode == BINARY:
            return Received(payload, frames)
        try:
            return Received(payload.decode(), frames)
        except UnicodeDecodeError:
            self._discard()
            return Violation(INVALID_DATA, "text message is not valid UTF-8", framing_intact=True)

    def _discard(self) -> None:
        self._discarding = True
        self._compressed = False
        self._opcode, self._fragments, self._size, self._frames = 0, [], 0, 0

    def _fail(self, events: list[Event], code: int, reason: str) -> list[Event]:
        self._done = True
        self._buffer = b""
        events.append(Violation(code, reason))
        return events

"""A connection's bounded queue of outgoing frames.

Two things drain it. While its writer task is idle, new data only asks for a flush
(``request_flush``): the broker's flusher then takes everything pending with
`take_for_direct_write` and writes it in one non-blocking call, without waking any
task. When the socket takes only part, the rest goes back with `direct_write_stalled`
and the writer task, which can wait for the socket, sends it first. The writer also
sends control frames and the final close frame, in chunks of at most `WRITE_CHUNK`.

Frames being written still count against the capacity until written, so "full"
means the peer's socket has accepted nothing for a while, and ``full_since`` says
for how long: that is what the slow-consumer timeout measures.
"""

from collections import deque
from collections.abc import Callable, Iterator

import attrs
import trio

# A peer that floods pings while not reading gets answers to the latest ones only,
# which RFC 6455 section 5.5.3 allows.
MAX_PENDING_CONTROL = 8
# Large enough to make one syscall carry many messages, small enough that a slow
# reader still shows progress (and frees queue space) often.
WRITE_CHUNK = 64 * 1024


@attrs.frozen
class Batch:
    head: bytes  # the rest of a direct write the socket did not take: it goes first
    head_count: int  # data frames that finish in ``head``
    control: list[bytes]
    data: list[bytes]
    final: bytes | None
    last: bool


def chunks(frames: list[bytes], limit: int = WRITE_CHUNK) -> Iterator[tuple[bytes, int]]:
    """Join frames into chunks of about ``limit`` bytes: (bytes, number of frames)."""
    start, size = 0, 0
    for index, frame in enumerate(frames):
        size += len(frame)
        if size >= limit:
            yield b"".join(frames[start : index + 1]), index + 1 - start
            start, size = index + 1, 0
    if start < len(frames):
        yield b"".join(frames[start:]), len(frames) - start


class Outbox:
    def __init__(self, capacity: int, request_flush: Callable[[], None] | None = None) -> None:
        self.capacity = capacity
        self._request_flush = request_flush
        self._writer_idle = False
        self._head = b""
        self._head_count = 0
        self._data: deque[bytes] = deque()
        self._in_flight = 0
        self._control: deque[bytes] = deque(maxlen=MAX_PENDING_CONTROL)
        self._finishing = False
        self._drain = False
        self._final: bytes | None = None
        self._full_since: float | None = None
        self._writer = trio.lowlevel.ParkingLot()
        self._space = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._data) + self._in_flight

    @property
    def finishing(self) -> bool:
        return self._finishing

    def offer(self, frame: bytes) -> bool:
        """Queue a data frame if there is room; return False when full.

        Once the outbox is finishing, frames are dropped and True is returned:
        the connection is going away and must hold no one up.
        """
        if self._finishing:
            return True
        queued = len(self._data) + self._in_flight
        if queued >= self.capacity:
            return False
        self._data.append(frame)
        if queued + 1 == self.capacity:
            self._full_since = trio.current_time()
        if self._writer_idle and self._request_flush is not None:
            self._request_flush()
        else:
            self._wake_writer()
        return True

    def _wake_writer(self) -> None:
        self._writer_idle = False
        self._writer.unpark()

    async def put(self, frame: bytes, patience: float) -> bool:
        """Queue a data frame, waiting while full; False if it stays full ``patience`` seconds."""
        while not self.offer(frame):
            assert self._full_since is not None
            deadline = self._full_since + patience
            if trio.current_time() >= deadline:
                return False
            with trio.move_on_at(deadline):
                await self._space.park()
        return True

    def push_control(self, frame: bytes) -> None:
        """Queue a control frame (ping, pong): written before pending data, never blocks."""
        if not self._finishing:
            self._control.append(frame)
            self._wake_writer()

    def finish(self, final: bytes | None, *, drain: bool) -> None:
        """Stop taking frames; the writer sends what is pending (if drain), then ``final``."""
        if self._finishing:
            return
        self._finishing = True
        self._drain = drain
        self._final = final
        if not drain:
            self._data.clear()
            self._control.clear()
        self._space.unpark_all()
        self._wake_writer()

    async def next_batch(self) -> Batch:
        """Wait for work and take all of it; call `sent` as its data frames are written."""
        while not (self._head or self._data or self._control or self._finishing):
            self._writer_idle = True
            await self._writer.park()
        self._writer_idle = False
        head, head_count = self._head, self._head_count
        self._head, self._head_count = b"", 0
        control = list(self._control)
        self._control.clear()
        data = list(self._data)
        self._data.clear()
        self._in_flight += len(data)
        last = self._finishing
        return Batch(head, head_count, control, data, self._final if last else None, last)

    def take_for_direct_write(self) -> tuple[bytes, int] | None:
        """While the writer is idle: everything pending, joined, and its data frame count.

        Call `sent` with the count once all of it is written, else `direct_write_stalled`.
        """
        if not self._writer_idle or self._finishing or not (self._data or self._control):
            return None
        parts = [*self._control, *self._data]
        count = len(self._data)
        self._control.clear()
        self._data.clear()
        self._in_flight += count
        return b"".join(parts), count

    def direct_write_stalled(self, rest: bytes, count: int) -> None:
        """The socket took only part of a direct write: the writer sends ``rest`` first."""
        self._head, self._head_count = rest, count
        self._wake_writer()

    def sent(self, count: int) -> None:
        """``count`` data frames were written: their room is free again."""
        self._in_flight -= count
        if len(self._data) + self._in_flight < self.capacity:
            self._full_since = None
            self._space.unpark_all()

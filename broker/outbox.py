"""A connection's bounded queue of outgoing frames, drained by its one writer task.

The writer takes everything pending at once and sends it with one ``send_all``
(write coalescing). Frames being written still count against the capacity, so
"full" means the peer's socket has not accepted a batch, and ``full_since`` says
for how long: that is what the slow-consumer timeout measures.
"""

from collections import deque

import trio

# A peer that floods pings while not reading gets answers to the latest ones only,
# which RFC 6455 section 5.5.3 allows.
MAX_PENDING_CONTROL = 8


class Outbox:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
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
        self._writer.unpark()
        return True

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
            self._writer.unpark()

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
        self._writer.unpark()

    async def next_batch(self) -> tuple[bytes, bool]:
        """Wait for work; return the bytes to send and whether they are the last.

        The caller must call `sent` once the bytes are written.
        """
        while not (self._data or self._control or self._finishing):
            await self._writer.park()
        parts = list(self._control)
        self._control.clear()
        parts.extend(self._data)
        self._in_flight += len(self._data)
        self._data.clear()
        last = self._finishing
        if last and self._final is not None:
            parts.append(self._final)
        return b"".join(parts), last

    def sent(self) -> None:
        self._in_flight = 0
        if len(self._data) < self.capacity:
            self._full_since = None
            self._space.unpark_all()

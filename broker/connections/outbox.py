"""A connection's bounded queue of outgoing frames, and who writes them.

Most of the time no task waits on a connection's socket. New frames ask for a
flush (``request_flush``): the broker's flusher then takes everything pending with
`take_for_direct_write` and writes it in one non-blocking call. Only when that is
not enough (the socket took part of it, a close must be drained, or the stream
has no file descriptor, as under TLS) does the outbox ask for a writer task
(``start_writer``); the writer takes batches until nothing is left, then ends.
So an idle connection holds no writer task, and a burst of publishes costs one
system call per subscriber.

Frames being written still count against the limits (``capacity`` frames and
``max_bytes`` bytes) until written, so "full" means the peer's socket has accepted
nothing for a while, and ``_full_since`` says for how long: that is what the
slow-consumer timeout measures.
"""

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
    head_bytes: int  # and their size, for `Outbox.sent`
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
    """One connection's outgoing frames, bounded by ``capacity`` frames and ``max_bytes``.

    `offer` queues a delivery if there is room (never waits); `put` waits for room up to a
    timeout (a reply, a replay); control frames (`push_control`) bypass the bounds.
    Whoever writes takes what is pending: the flusher (`take_for_direct_write`) or the
    writer task that ``start_writer`` starts (`take_batch`), never both at once.
    """

    def __init__(
        self,
        capacity: int,
        max_bytes: int,
        start_writer: Callable[[], None],
        request_flush: Callable[[], None] | None = None,
        transform: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """``transform``: what each data frame becomes before it is queued (re-encoded as
        MessagePack, compressed: `broker.wire.encodings.WireFormat.outgoing`)."""
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._start_writer = start_writer
        self._request_flush = request_flush
        self._writer_running = False
        # Asked the flusher already: it calls `take_for_direct_write` before long.
        self._flush_requested = False
        self._head = b""
        self._head_count = 0
        self._head_bytes = 0
        # Lists, not deques: an empty deque costs 600 bytes, and there is one per client.
        self._data: list[bytes] = []
        # Data frames queued or being written, and their bytes.
        self._count = 0
        self._bytes = 0
        self._control: list[bytes] = []
        self._finishing = False
        self._final: bytes | None = None
        self._full_since: float | None = None
        self._space: trio.lowlevel.ParkingLot | None = None  # made when a publisher waits
        self._transform = transform

    def __len__(self) -> int:
        return self._count

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def writer_running(self) -> bool:
        return self._writer_running

    @property
    def _full(self) -> bool:
        return self._count >= self.capacity or self._bytes >= self.max_bytes

    def _run_writer(self) -> None:
        self._writer_running = True
        self._start_writer()

    def _kick(self) -> None:
        """There is something to write: get it written."""
        if self._writer_running:
            return  # it takes another batch before it ends
        if self._request_flush is not None and not self._finishing:
            if not self._flush_requested:  # once per flush, not once per frame
                self._flush_requested = True
                self._request_flush()
        else:
            self._run_writer()

    def offer(self, frame: bytes) -> bool:
        """Queue a data frame if there is room; return False when full.

        Once the outbox is finishing, frames are dropped and True is returned:
        the connection is going away and must hold no one up.
        """
        if self._finishing:
            return True
        if self._transform is not None:
            frame = self._transform(frame)
        # One frame is always taken into an empty queue, however large: else it never would.
        if self._count >= self.capacity or (
            self._count and self._bytes + len(frame) > self.max_bytes
        ):
            if self._full_since is None:
                self._full_since = trio.current_time()
            return False
        self._data.append(frame)
        self._count += 1
        self._bytes += len(frame)
        if self._full:
            self._full_since = trio.current_time()
        self._kick()
        return True

    async def put(self, frame: bytes, patience: float) -> bool:
        """Queue a data frame, waiting while full; False if it stays full ``patience`` seconds."""
        while not self.offer(frame):
            assert self._full_since is not None
            deadline = self._full_since + patience
            if trio.current_time() >= deadline:
                return False
            if self._space is None:
                self._space = trio.lowlevel.ParkingLot()
            with trio.move_on_at(deadline):
                await self._space.park()
        return True

    def _release_waiters(self) -> None:
        if self._space is not None:
            self._space.unpark_all()

    def push_control(self, frame: bytes) -> None:
        """Queue a control frame (ping, pong): written before pending data, never blocks."""
        if not self._finishing:
            if len(self._control) >= MAX_PENDING_CONTROL:
                del self._control[0]
            self._control.append(frame)
            self._kick()

    def finish(self, final: bytes | None, *, drain: bool) -> None:
        """Stop taking frames; the writer sends what is pending (if drain), then ``final``."""
        if self._finishing:
            return
        self._finishing = True
        self._final = final
        if not drain:
            self._count -= len(self._data)
            self._bytes -= sum(map(len, self._data))
            self._data.clear()
            self._control.clear()
        self._release_waiters()
        self._kick()

    def take_batch(self) -> Batch | None:
        """For the writer: everything pending, or None when there is nothing (it ends then).

        Call `sent` as the batch's data frames are written. After a batch with
        ``last`` set, the writer ends and is not started again.
        """
        if not (self._head or self._data or self._control or self._finishing):
            self._writer_running = False
            return None
        head, head_count, head_bytes = self._head, self._head_count, self._head_bytes
        self._head, self._head_count, self._head_bytes = b"", 0, 0
        control, self._control = self._control, []
        data, self._data = self._data, []
        last = self._finishing
        final = self._final if last else None
        return Batch(head, head_count, head_bytes, control, data, final, last)

    def take_for_direct_write(self) -> tuple[bytes, int, int] | None:
        """For the flusher: everything pending, joined; its data frames and their bytes.

        None while a writer task runs (it owns the socket then) or once finishing.
        Call `sent` with the counts once all of it is written, else `direct_write_stalled`.
        """
        self._flush_requested = False
        if self._writer_running or self._finishing or not (self._data or self._control):
            return None
        count = len(self._data)
        data = b"".join(self._data)
        joined = b"".join(self._control) + data if self._control else data
        self._control = []
        self._data = []
        return joined, count, len(data)

    def direct_write_stalled(self, rest: bytes, count: int, nbytes: int) -> None:
        """The socket did not take all of a direct write: a writer sends ``rest`` first."""
        self._head, self._head_count, self._head_bytes = rest, count, nbytes
        self._run_writer()

    def sent(self, count: int, nbytes: int) -> None:
        """``count`` data frames of ``nbytes`` bytes were written: their room is free again."""
        self._count -= count
        self._bytes -= nbytes
        if not self._full:
            self._full_since = None
            self._release_waiters()

import pytest
import trio
import trio.testing

from broker.connections.outbox import MAX_PENDING_CONTROL, Batch, Outbox, chunks


class Recorder:
    """Stands in for the connection: counts writer starts and flush requests."""

    def __init__(self) -> None:
        self.writers_started = 0
        self.flushes_requested = 0

    def start_writer(self) -> None:
        self.writers_started += 1

    def request_flush(self) -> None:
        self.flushes_requested += 1


def writer_only(capacity: int, max_bytes: int = 10**9) -> tuple[Outbox, Recorder]:
    """An outbox without direct writes (as under TLS): every write goes through a writer."""
    recorder = Recorder()
    return Outbox(capacity, max_bytes, recorder.start_writer), recorder


def direct(capacity: int, max_bytes: int = 10**9) -> tuple[Outbox, Recorder]:
    recorder = Recorder()
    return Outbox(capacity, max_bytes, recorder.start_writer, recorder.request_flush), recorder


def sent(outbox: Outbox, batch: Batch) -> None:
    """What the writer reports once a batch's data is written."""
    outbox.sent(batch.head_count + len(batch.data), batch.head_bytes + sum(map(len, batch.data)))


def take(outbox: Outbox) -> Batch:
    batch = outbox.take_batch()
    assert batch is not None
    return batch


def test_chunks_bound_each_write_and_count_frames() -> None:
    frames = [b"a" * 40, b"b" * 70, b"c" * 10, b"d" * 200, b"e"]
    assert list(chunks(frames, limit=100)) == [
        (b"a" * 40 + b"b" * 70, 2),
        (b"c" * 10 + b"d" * 200, 2),
        (b"e", 1),
    ]
    assert list(chunks([], limit=100)) == []


async def test_writer_takes_everything_pending_in_order() -> None:
    outbox, recorder = writer_only(10)
    outbox.offer(b"1")
    outbox.push_control(b"ping")
    outbox.offer(b"2")
    assert recorder.writers_started == 1, "one writer for the whole burst"
    batch = take(outbox)
    assert (batch.control, batch.data, batch.final, batch.last) == (
        [b"ping"],
        [b"1", b"2"],
        None,
        False,
    )


async def test_writer_ends_when_nothing_is_left_and_is_started_again_for_more() -> None:
    outbox, recorder = writer_only(10)
    outbox.offer(b"1")
    sent(outbox, take(outbox))
    assert outbox.take_batch() is None
    assert not outbox.writer_running
    outbox.offer(b"2")
    assert recorder.writers_started == 2
    assert take(outbox).data == [b"2"]


async def test_direct_writes_need_no_writer_and_take_control_frames_first() -> None:
    outbox, recorder = direct(10)
    outbox.offer(b"1")
    outbox.push_control(b"pong")
    outbox.offer(b"2")
    # One request per flush, however many frames come before it.
    assert (recorder.writers_started, recorder.flushes_requested) == (0, 1)
    assert outbox.take_for_direct_write() == (b"pong12", 2, 2)
    assert len(outbox) == 2, "counted until sent"
    outbox.sent(2, 2)
    assert len(outbox) == 0
    assert outbox.take_for_direct_write() is None, "nothing left"
    outbox.offer(b"3")
    outbox.offer(b"4")
    assert recorder.flushes_requested == 2, "a frame after the flush asks for the next"
    assert outbox.take_for_direct_write() == (b"34", 2, 2)


async def test_a_stalled_direct_write_hands_the_rest_to_a_writer_which_sends_it_first() -> None:
    outbox, recorder = direct(10)
    outbox.offer(b"first")
    data, count, nbytes = outbox.take_for_direct_write() or (b"", 0, 0)
    outbox.direct_write_stalled(data[2:], count, nbytes)
    assert recorder.writers_started == 1
    outbox.offer(b"second")
    outbox.push_control(b"ping")
    assert outbox.take_for_direct_write() is None, "the writer owns the socket now"
    assert recorder.flushes_requested == 1, "no flush requested while the writer runs"
    batch = take(outbox)
    # The rest of a half-written frame must go out before anything else, even a ping.
    assert (batch.head, batch.head_count, batch.control, batch.data) == (
        b"rst",
        1,
        [b"ping"],
        [b"second"],
    )


async def test_frames_being_written_count_until_sent() -> None:
    outbox, _ = writer_only(2)
    assert outbox.offer(b"1") and outbox.offer(b"2")
    assert not outbox.offer(b"3")
    take(outbox)
    assert not outbox.offer(b"3"), "in flight, not yet written"
    outbox.sent(1, 1)
    assert outbox.offer(b"3")


async def test_a_stalled_direct_write_still_counts_against_the_capacity() -> None:
    outbox, _ = direct(2)
    outbox.offer(b"1")
    outbox.offer(b"2")
    data, count, nbytes = outbox.take_for_direct_write() or (b"", 0, 0)
    outbox.direct_write_stalled(data, count, nbytes)
    assert not outbox.offer(b"3")
    sent(outbox, take(outbox))
    assert outbox.offer(b"3")


async def test_put_waits_for_room_then_gives_up_after_patience(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox, _ = writer_only(1)
    outbox.offer(b"1")
    started = trio.current_time()
    assert await outbox.put(b"2", patience=5.0) is False
    assert trio.current_time() - started == pytest.approx(5.0)


async def test_patience_counts_from_when_the_queue_filled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox, _ = writer_only(1)
    outbox.offer(b"1")
    await trio.sleep(3)
    started = trio.current_time()
    assert await outbox.put(b"2", patience=5.0) is False
    assert trio.current_time() - started == pytest.approx(2.0)


async def test_put_succeeds_once_the_writer_makes_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox, _ = writer_only(1)
    outbox.offer(b"1")
    result = []

    async def put() -> None:
        result.append(await outbox.put(b"2", patience=5.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(put)
        await trio.sleep(1)
        sent(outbox, take(outbox))
    assert result == [True]
    assert take(outbox).data == [b"2"]


async def test_finish_without_drain_drops_pending_and_releases_waiters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox, recorder = direct(1)
    outbox.offer(b"1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.put, b"2", 100.0)
        await trio.sleep(1)
        outbox.finish(b"close", drain=False)
    assert trio.current_time() < 2
    assert recorder.writers_started == 1, "the close frame always goes through a writer"
    assert outbox.take_for_direct_write() is None
    batch = take(outbox)
    assert (batch.data, batch.final, batch.last) == ([], b"close", True)
    assert outbox.offer(b"late"), "dropped without blocking anyone"


async def test_finish_without_drain_still_completes_a_half_written_frame() -> None:
    outbox, _ = direct(5)
    outbox.offer(b"frame")
    data, count, nbytes = outbox.take_for_direct_write() or (b"", 0, 0)
    outbox.direct_write_stalled(data[1:], count, nbytes)
    outbox.offer(b"dropped")
    outbox.finish(b"close", drain=False)
    batch = take(outbox)
    assert (batch.head, batch.data, batch.final) == (b"rame", [], b"close")


async def test_finish_with_drain_sends_pending_before_the_final_frame() -> None:
    outbox, _ = writer_only(5)
    outbox.offer(b"1")
    outbox.finish(b"close", drain=True)
    batch = take(outbox)
    assert (batch.data, batch.final, batch.last) == ([b"1"], b"close", True)


async def test_control_lane_keeps_only_the_latest_frames() -> None:
    outbox, _ = writer_only(1)
    for n in range(MAX_PENDING_CONTROL + 5):
        outbox.push_control(str(n).encode())
    batch = take(outbox)
    assert batch.control == [str(n).encode() for n in range(5, MAX_PENDING_CONTROL + 5)]


async def test_the_byte_bound_counts_frames_until_written() -> None:
    outbox, _ = direct(100, max_bytes=10)
    assert outbox.offer(b"12345") and outbox.offer(b"1234")
    assert not outbox.offer(b"12"), "9 + 2 bytes > 10"
    assert outbox.offer(b"1"), "exactly 10 fits"
    assert outbox.queued_bytes == 10
    assert not outbox.offer(b"1")
    data, count, nbytes = outbox.take_for_direct_write() or (b"", 0, 0)
    assert (data, count, nbytes) == (b"1234512341", 3, 10)
    assert not outbox.offer(b"1"), "still being written"
    outbox.sent(count, nbytes)
    assert outbox.queued_bytes == 0
    assert outbox.offer(b"1")


async def test_one_frame_larger_than_the_byte_bound_is_taken_into_an_empty_queue() -> None:
    outbox, _ = direct(100, max_bytes=10)
    assert outbox.offer(b"x" * 100)
    assert not outbox.offer(b"y")


async def test_a_byte_bound_full_queue_starts_the_slow_consumer_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox, _ = direct(100, max_bytes=10)
    outbox.offer(b"x" * 8)
    started = trio.current_time()
    assert await outbox.put(b"y" * 8, patience=3.0) is False
    assert trio.current_time() - started == pytest.approx(3.0)


async def test_dropping_pending_frames_frees_their_room() -> None:
    outbox, _ = writer_only(5, max_bytes=100)
    outbox.offer(b"a" * 10)
    take(outbox)  # in flight: stays counted
    outbox.offer(b"b" * 20)
    outbox.finish(b"close", drain=False)
    assert (len(outbox), outbox.queued_bytes) == (1, 10)

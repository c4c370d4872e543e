import pytest
import trio
import trio.testing

from broker.outbox import MAX_PENDING_CONTROL, Outbox, chunks


def test_chunks_bound_each_write_and_count_frames() -> None:
    frames = [b"a" * 40, b"b" * 70, b"c" * 10, b"d" * 200, b"e"]
    assert list(chunks(frames, limit=100)) == [
        (b"a" * 40 + b"b" * 70, 2),
        (b"c" * 10 + b"d" * 200, 2),
        (b"e", 1),
    ]
    assert list(chunks([], limit=100)) == []


async def test_writer_takes_everything_pending_in_order() -> None:
    outbox = Outbox(10)
    outbox.offer(b"1")
    outbox.push_control(b"ping")
    outbox.offer(b"2")
    batch = await outbox.next_batch()
    assert (batch.control, batch.data, batch.final, batch.last) == (
        [b"ping"],
        [b"1", b"2"],
        None,
        False,
    )


async def test_frames_being_written_count_until_sent() -> None:
    outbox = Outbox(2)
    assert outbox.offer(b"1") and outbox.offer(b"2")
    assert not outbox.offer(b"3")
    await outbox.next_batch()
    assert not outbox.offer(b"3"), "in flight, not yet written"
    outbox.sent(1)
    assert outbox.offer(b"3")


async def test_put_waits_for_room_then_gives_up_after_patience(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(1)
    outbox.offer(b"1")
    started = trio.current_time()
    assert await outbox.put(b"2", patience=5.0) is False
    assert trio.current_time() - started == pytest.approx(5.0)


async def test_patience_counts_from_when_the_queue_filled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(1)
    outbox.offer(b"1")
    await trio.sleep(3)
    started = trio.current_time()
    assert await outbox.put(b"2", patience=5.0) is False
    assert trio.current_time() - started == pytest.approx(2.0)


async def test_put_succeeds_once_the_writer_makes_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(1)
    outbox.offer(b"1")
    result = []

    async def put() -> None:
        result.append(await outbox.put(b"2", patience=5.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(put)
        await trio.sleep(1)
        batch = await outbox.next_batch()
        outbox.sent(len(batch.data))
    assert result == [True]
    assert (await outbox.next_batch()).data == [b"2"]


async def test_finish_without_drain_drops_pending_and_releases_waiters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(1)
    outbox.offer(b"1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.put, b"2", 100.0)
        await trio.sleep(1)
        outbox.finish(b"close", drain=False)
    assert trio.current_time() < 2
    batch = await outbox.next_batch()
    assert (batch.data, batch.final, batch.last) == ([], b"close", True)
    assert outbox.offer(b"late"), "dropped without blocking anyone"


async def test_finish_with_drain_sends_pending_before_the_final_frame() -> None:
    outbox = Outbox(5)
    outbox.offer(b"1")
    outbox.finish(b"close", drain=True)
    batch = await outbox.next_batch()
    assert (batch.data, batch.final, batch.last) == ([b"1"], b"close", True)


async def test_control_lane_keeps_only_the_latest_frames() -> None:
    outbox = Outbox(1)
    for n in range(MAX_PENDING_CONTROL + 5):
        outbox.push_control(str(n).encode())
    batch = await outbox.next_batch()
    assert batch.control == [str(n).encode() for n in range(5, MAX_PENDING_CONTROL + 5)]

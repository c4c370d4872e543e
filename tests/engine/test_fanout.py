"""The fan-out fast paths: direct writes by the flusher, their hand-over to a writer task
when a socket fills up, and write coalescing while it stays full."""

from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from broker import Broker
from broker.connections import connection as connection_module
from broker.connections import writing as writing_module
from broker.requests import dispatch
from broker.wire.frame_reader import Event, FrameReader
from tests.conftest import Connect, StartBroker
from tests.wsclient import Closed, WsClient


class Stalls:
    """Counts direct writes the socket did not fully take, and the writer's chunks."""

    def __init__(self) -> None:
        self.count = 0
        self.happened = trio.Event()
        self.chunk_sizes: list[int] = []  # data frames per chunk the writer sent


@pytest.fixture
def stalls(monkeypatch: pytest.MonkeyPatch) -> Stalls:
    # Spied on in connections.writing, which is never compiled (the outbox may be, and a
    # compiled class cannot be patched): a direct write the socket took only part of.
    seen = Stalls()
    write_now = writing_module.write_now
    chunks = writing_module.chunks

    def counted_write_now(sock: Any, data: bytes) -> int:
        written = write_now(sock, data)
        if written < len(data):
            seen.count += 1
            seen.happened.set()
        return written

    def counted_chunks(frames: list[bytes]) -> Iterator[tuple[bytes, int]]:
        for chunk, count in chunks(frames):
            seen.chunk_sizes.append(count)
            yield chunk, count

    monkeypatch.setattr(writing_module, "write_now", counted_write_now)
    monkeypatch.setattr(writing_module, "chunks", counted_chunks)
    return seen


def payload(n: int) -> str:
    # Sizes vary so that the socket fills up in the middle of a frame, not at its edge.
    return chr(ord("a") + n % 26) * (1000 + 7919 * n % 9000)


async def publish_until_stalled(publisher: WsClient, stalls: Stalls, limit: int) -> int:
    """Publish numbered messages until a direct write stalls, then as many again."""
    n = 0
    while not stalls.happened.is_set():
        assert n < limit, "the subscriber's socket never filled up"
        await publisher.send({"op": "publish", "topic": "t", "data": [n, payload(n)]})
        n += 1
        if n % 50 == 0:  # let the broker catch up, so the stall shows before the limit
            assert await publisher.request({"op": "ping", "id": n}) == {"op": "pong", "id": n}
    for _ in range(n):
        await publisher.send({"op": "publish", "topic": "t", "data": [n, payload(n)]})
        n += 1
    assert await publisher.request({"op": "ping", "id": "end"}) == {"op": "pong", "id": "end"}
    return n


async def test_a_stalled_direct_write_resumes_mid_frame_and_coalesces_what_queued_meanwhile(
    start_broker: StartBroker, connect: Connect, stalls: Stalls
) -> None:
    broker = await start_broker(
        limits={
            "max_queued_messages": 100_000,
            "max_queued_bytes": 1_000_000_000,
            "slow_consumer_timeout": 60.0,
        }
    )
    subscriber = await connect(broker, receive_buffer=4096)
    publisher = await connect(broker)
    await subscriber.request({"op": "subscribe", "topic": "t", "id": 0})

    sent = await publish_until_stalled(publisher, stalls, limit=5000)
    # A ping from the stalled client: its pong must not land inside a half-written frame.
    await subscriber.send_ping(b"are you there")

    received = []
    pong = False
    while len(received) < sent or not pong:
        frame = await subscriber.recv_frame()
        if frame.opcode.name == "PONG":
            assert frame.data == b"are you there"
            pong = True
        elif frame.opcode.name == "TEXT":
            received.append(frame.data)
    expected = [
        f'{{"op":"message","topic":"t","data":[{n},"{payload(n)}"]}}'.encode() for n in range(sent)
    ]
    assert received == expected, "every frame whole, once, in order"
    assert stalls.count >= 1
    assert max(stalls.chunk_sizes) > 1, "frames queued behind a full socket go out together"
    await assert_all_writers_ended(broker)


async def assert_all_writers_ended(broker: Broker) -> None:
    """Once everything is written, no connection keeps a writer task."""
    await trio.testing.wait_all_tasks_blocked()
    assert not [c for c in broker._connections if c.outbox.writer_running]


async def test_slow_consumer_with_a_half_written_frame_gets_it_whole_then_1008(
    start_broker: StartBroker, connect: Connect, stalls: Stalls
) -> None:
    broker = await start_broker(limits={"max_queued_messages": 4, "slow_consumer_timeout": 0.2})
    stalled = await connect(broker, receive_buffer=4096)
    reader = await connect(broker)
    publisher = await connect(broker)
    for client in (stalled, reader):
        await client.request({"op": "subscribe", "topic": "t", "id": 0})

    async def read_all() -> None:
        n = 0
        while (message := await reader.recv())["data"] != "end":
            assert message["data"][0] == n
            n += 1

    def cut_off() -> bool:
        return any(c.close_code == 1008 for c in broker._connections)

    count = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        # `reader` keeps up, `stalled` never reads: publish until `stalled` is cut off.
        while not cut_off():
            assert count < 5000, "never cut off"
            await publisher.send({"op": "publish", "topic": "t", "data": [count, payload(count)]})
            count += 1
            if count % 10 == 0:
                await publisher.request({"op": "ping", "id": count})
        await publisher.send({"op": "publish", "topic": "t", "data": "end"})
    assert stalls.count >= 1

    received = 0
    with pytest.raises(Closed) as caught:
        while True:
            message = await stalled.recv()
            assert message["data"] == [received, payload(received)]
            received += 1
    assert (caught.value.code, caught.value.reason) == (1008, "slow consumer")
    assert 0 < received < count


async def test_a_long_read_of_publishes_lets_the_flusher_write_before_it_is_all_handled(
    start_broker: StartBroker, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = await start_broker(limits={"max_queued_messages": 10_000, "max_incoming_rate": 0})
    # Each read's batch, seen through a wrapper of the connections' frame readers (a
    # compiled FrameReader cannot be patched or subclassed here).
    batches: list[tuple[int, int]] = []  # (handled before the batch, its events)
    handled = 0

    class RecordingReader:
        def __init__(self, *args: Any, **options: Any) -> None:
            self._reader = FrameReader(*args, **options)

        def receive(self, data: bytes) -> list[Event]:
            events = self._reader.receive(data)
            batches.append((handled, len(events)))
            return events

    monkeypatch.setattr(connection_module, "FrameReader", RecordingReader)
    subscriber = await connect(broker)
    publisher = await connect(broker)
    await subscriber.request({"op": "subscribe", "topic": "t", "id": 0})
    # Spies: requests handled so far, the size of each read's batch, and where the
    # subscriber's flushes fell.
    flushed_at: list[int] = []
    handle = dispatch.handle
    flush = connection_module.ClientConnection.flush

    async def counted_handle(*args: Any) -> None:
        nonlocal handled
        await handle(*args)
        handled += 1

    def recorded_flush(self: connection_module.ClientConnection) -> None:
        if self.client_id == subscriber_id:
            flushed_at.append(handled)
        flush(self)

    subscriber_id = next(c.client_id for c in broker._connections if c.subscriptions)
    monkeypatch.setattr(dispatch, "handle", counted_handle)
    monkeypatch.setattr(connection_module.ClientConnection, "flush", recorded_flush)

    count = 3000
    for n in range(count):
        publisher.protocol.send_text(b'{"op":"publish","topic":"t","data":%d}' % n)
    publisher.protocol.send_text(b'{"op":"ping","id":1}')
    await publisher.stream.send_all(b"".join(publisher.protocol.data_to_send()))  # one write
    assert await publisher.recv() == {"op": "pong", "id": 1}
    assert [(await subscriber.recv())["data"] for _ in range(count)] == list(range(count))

    start, size = max(batches, key=lambda batch: batch[1])
    assert size > 500, batches  # one read brought many publishes
    assert any(start < at < start + size for at in flushed_at), (start, size, flushed_at)

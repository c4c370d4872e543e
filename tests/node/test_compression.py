"""permessage-deflate end to end with websockets' implementation of it: negotiated only
when `[server] compression` is on and the offer can be honoured, messages compressed once
per publish whatever the number of subscribers, and inflation bounded."""

import json
from typing import Any

import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate

from broker.config.schema import Config
from broker.node import broker as node_broker
from broker.wire.deflate import Deflater, Library, fastest_library
from tests.conftest import Connect, StartBroker
from tests.wire.test_hostile_frames import TEXT, frame
from tests.wsclient import WsClient

COMPRESSION = {"compression": True}


def chat_message(words: int) -> dict[str, Any]:
    """Chat-like JSON, as compressible as a conversation's."""
    text = " ".join(f"word{n % 50}" for n in range(words))
    return {"user": "alice", "room": "lobby", "text": text, "sent_at": 1764800000}


def deflate_of(client: WsClient) -> PerMessageDeflate | None:
    (found,) = client.protocol.extensions or [None]
    assert found is None or isinstance(found, PerMessageDeflate)
    return found


async def test_a_client_that_offers_deflate_gets_it_and_its_deliveries_shrink(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(server=COMPRESSION)
    plain = await connect(broker)
    squeezed = await connect(broker, compression=True)
    assert deflate_of(plain) is None
    agreed = deflate_of(squeezed)
    assert agreed is not None
    # server_no_context_takeover and client_no_context_takeover, as the broker answers.
    assert agreed.remote_no_context_takeover and agreed.local_no_context_takeover
    for client in (plain, squeezed):
        await client.request({"op": "subscribe", "topic": "chat", "id": 1})
    publisher = await connect(broker)
    before = (plain.bytes_received, squeezed.bytes_received)
    for n in range(5):
        data = chat_message(200 + n)
        await publisher.request({"op": "publish", "topic": "chat", "data": data, "id": n})
        for client in (plain, squeezed):
            assert (await client.recv())["data"] == data
    plain_bytes = plain.bytes_received - before[0]
    squeezed_bytes = squeezed.bytes_received - before[1]
    assert squeezed_bytes * 3 < plain_bytes, (squeezed_bytes, plain_bytes)
    # What the compressing client publishes (websockets compresses it) arrives whole.
    data = chat_message(300)
    await squeezed.send({"op": "publish", "topic": "chat", "data": data, "id": 9})
    assert (await plain.recv())["data"] == data
    own = [await squeezed.recv() for _ in range(2)]  # the delivery and the ack
    assert next(m for m in own if m["op"] == "message")["data"] == data
    # Small messages go as they are, and are read as well.
    await publisher.request({"op": "publish", "topic": "chat", "data": "hi", "id": 10})
    assert (await squeezed.recv())["data"] == "hi"


async def test_one_publish_is_compressed_once_for_every_subscriber(
    start_broker: StartBroker, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted at the deflate library the broker is given: the Deflater may be compiled,
    # and a compiled class cannot be patched.
    compressed: list[int] = []
    library = fastest_library()

    def counting(level: int, window_bits: int) -> Any:
        compressed.append(-window_bits)
        return library.compressor(level, window_bits)

    def deflater(config: Config) -> Deflater:
        server = config.server
        return Deflater(
            server.compression_level, server.compression_min_size, Library("counted", counting)
        )

    monkeypatch.setattr(node_broker, "_deflater", deflater)
    broker = await start_broker(server=COMPRESSION)
    subscribers = [await connect(broker, compression=True) for _ in range(5)]
    for client in subscribers:
        await client.request({"op": "subscribe", "topic": "news", "id": 1})
    compressed.clear()  # the acks are too small to compress; nothing else came
    publisher = await connect(broker)
    data = chat_message(500)
    await publisher.request({"op": "publish", "topic": "news", "data": data, "id": 1})
    for client in subscribers:
        assert (await client.recv())["data"] == data
    assert compressed == [15]


async def test_a_message_that_inflates_beyond_the_limit_is_refused_with_1009(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(server=COMPRESSION, limits={"max_message_size": 1024 * 1024})
    client = await connect(broker, compression=True)
    import zlib

    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = b'{"op":"publish","topic":"t","data":"' + b"0" * (10 * 1024 * 1024) + b'"}'
    bomb = (deflater.compress(zeros) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(bomb) < 20_000
    await client.stream.send_all(frame(TEXT, bomb, rsv=4))
    assert await client.wait_closed() == (1009, "message too big")


async def test_compression_off_or_an_offer_it_cannot_honour_leaves_the_connection_plain(
    start_broker: StartBroker, connect: Connect
) -> None:
    off = await start_broker()
    assert deflate_of(await connect(off, compression=True)) is None
    on = await start_broker(server=COMPRESSION)
    narrow = {"Sec-WebSocket-Extensions": "permessage-deflate; server_max_window_bits=8"}
    client = await connect(on, headers=narrow)
    assert deflate_of(client) is None
    await client.request({"op": "subscribe", "topic": "t", "id": 1})
    publisher = await connect(on)
    data = chat_message(300)
    await publisher.request({"op": "publish", "topic": "t", "data": data, "id": 1})
    raw = await client.recv_frame()
    assert not raw.rsv1 and json.loads(raw.data)["data"] == data

"""Random frames at a running daemon for a bounded time; afterwards it must still answer.

The seed is printed with any failure: FUZZ_SEED=<seed> replays the same run.
"""

import os
import random
import signal
import struct
from pathlib import Path

import pytest
import trio

from bench.run import rss_bytes
from bench.soak import open_fds
from tests.daemon_process import Daemon
from tests.wire.test_hostile_frames import MASK, frame
from tests.wsclient import WsClient

pytestmark = pytest.mark.slow  # a fuzz run against the daemon

DURATION = 3.0
CLIENTS = 4

CONFIG = """
[server]
host = "127.0.0.1"
port = 0
handshake_timeout = 1.0
close_timeout = 0.5
heartbeat_interval = 0.5
heartbeat_timeout = 0.5
[limits]
max_message_size = 4096
max_connections_per_ip = 0
handshake_rate_per_ip = 0
[log]
level = "debug"
"""

REQUESTS = [
    b'{"op":"ping","id":1}',
    b'{"op":"subscribe","topic":"fuzz/#","id":2}',
    b'{"op":"publish","topic":"fuzz/a","data":[1,2,3]}',
    b'{"op":"unsubscribe","topic":"fuzz/#"}',
    b'{"op":"publish","topic":"$sys","data":1}',
    b'{"op":"nope"}',
    b"[[[[[[",
    b'{"op":"publish","topic":"a","topic":"b","data":1}',
]


def random_frame(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.4:  # well formed, sometimes fragmented
        payload = rng.choice(REQUESTS)
        if rng.random() < 0.3:
            cut = rng.randrange(len(payload))
            return frame(0x1, payload[:cut], fin=False) + frame(0x0, payload[cut:])
        return frame(0x1, payload)
    if kind < 0.8:  # a frame with random header bits and payload
        payload = rng.randbytes(rng.choice([0, 1, 2, 10, 125, 126, 200, 5000]))
        data = frame(
            rng.randrange(16),
            payload,
            fin=rng.random() < 0.7,
            rsv=rng.randrange(8) if rng.random() < 0.2 else 0,
            masked=rng.random() < 0.9,
            length=rng.choice([None, None, None, 0, 2**16, 2**40, 2**63]),
        )
        return data[: rng.randrange(len(data) + 1)] if rng.random() < 0.2 else data
    if kind < 0.9:  # a control frame
        return frame(rng.choice([0x8, 0x9, 0xA]), rng.randbytes(rng.randrange(130)))
    return rng.randbytes(rng.randrange(1, 300))  # noise


async def fuzz_one_connection(url: str, port: int, rng: random.Random) -> None:
    if rng.random() < 0.1:  # garbage instead of a handshake
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(rng.randbytes(rng.randrange(1, 2000)))
            with trio.move_on_after(0.2):
                while await stream.receive_some(4096):
                    pass
        return
    client = await WsClient.connect(url)
    try:
        for _ in range(rng.randrange(1, 20)):
            await client.stream.send_all(random_frame(rng))
        with trio.move_on_after(0.1):
            while True:
                await client.stream.receive_some(65536)  # whatever comes, raw
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(client.stream)


async def test_random_frames_leave_the_daemon_serving(tmp_path: Path) -> None:
    seed = int(os.environ.get("FUZZ_SEED", random.randrange(2**32)))
    config = tmp_path / "broker.toml"
    config.write_text(CONFIG)
    daemon = Daemon(config)
    try:
        port = daemon.wait_listening()
        pid = daemon.process.pid
        fds_before, rss_before = open_fds(pid), rss_bytes(pid)
        deadline = trio.current_time() + DURATION

        async def fuzzer(index: int) -> None:
            rng = random.Random(seed + index)
            while trio.current_time() < deadline:
                await fuzz_one_connection(daemon.url, port, rng)

        async with trio.open_nursery() as nursery:
            for index in range(CLIENTS):
                nursery.start_soon(fuzzer, index)

        assert daemon.process.poll() is None, f"daemon died (FUZZ_SEED={seed})"
        subscriber = await WsClient.connect(daemon.url)
        publisher = await WsClient.connect(daemon.url)
        for client in (subscriber, publisher):
            assert (await client.recv())["op"] == "welcome"
        assert await subscriber.request({"op": "subscribe", "topic": "after", "id": 1}) == {
            "op": "ack",
            "id": 1,
        }
        await publisher.send({"op": "publish", "topic": "after", "data": seed})
        assert await subscriber.recv() == {"op": "message", "topic": "after", "data": seed}
        await subscriber.send_ping(b"still there?")
        while (reply := await subscriber.recv_frame()).opcode.name != "PONG":
            pass
        assert reply.data == b"still there?"
        for client in (subscriber, publisher):
            await client.aclose()
        # Every socket the fuzzing opened is given back (within handshake_timeout and
        # close_timeout), and memory stays near where it started.
        with trio.move_on_after(5):
            while open_fds(pid) > fds_before:  # noqa: ASYNC110 (another process: no event)
                await trio.sleep(0.05)
        assert open_fds(pid) == fds_before, f"FUZZ_SEED={seed}: file descriptors leaked"
        assert rss_bytes(pid) < rss_before + 20 * 2**20, f"FUZZ_SEED={seed}: RSS grew"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
        problems = [line for line in daemon.log if "Traceback" in line or "internal" in line]
        assert not problems, f"FUZZ_SEED={seed}: {problems[:5]}"
    finally:
        daemon.kill()


def test_the_frame_builder_masks_like_a_client() -> None:
    assert frame(0x1, b"ab") == bytes([0x81, 0x82]) + MASK + bytes([0x61 ^ 0x37, 0x62 ^ 0xFA])
    assert frame(0x2, b"", length=2**16)[:4] == bytes([0x82, 0xFF, 0, 0])
    assert struct.unpack("!Q", frame(0x2, b"", length=2**40)[2:10]) == (2**40,)

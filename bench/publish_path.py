"""Python cost of one publish to one subscriber, by stage, without sockets.

    .venv/bin/python bench/publish_path.py [TREE ...]

Each TREE is a checkout whose ``broker`` package is measured (default: this one), in a
process of its own, so that two versions compare in one run. 10,000 topics with one
subscriber each (the "10k topics" row of bench/run.py); per publish: reading its frame,
parsing the request, the publish path (engine, router, outbox), and the whole request
as a connection handles it (`dispatch.handle` on a real `ClientConnection`). The write
system call, about 4.4 µs per delivery on loopback, comes on top. Then the whole
request again with the sample config's plugins (etc/trio-broker.toml: its acl), and
with that acl's hooks wrapped in ``async def``: what an async hook costs beyond a def.
"""

import inspect
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOPICS = 10_000
SAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "etc" / "trio-broker.toml"
ROUNDS = 3


def masked(payload: bytes) -> bytes:
    """A client's text frame (masked, as clients must send them)."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([0x81, 0x80 | size]) if size < 126 else bytes([0x81, 0xFE]) + size.to_bytes(2)
    return head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


async def measure() -> dict[str, float]:
    """Microseconds per publish for each stage, best of ROUNDS."""
    import trio
    import trio.testing

    from broker.config.schema import Config, LimitsConfig, load_config
    from broker.connections.connection import ClientConnection
    from broker.connections.flusher import Flusher
    from broker.connections.outbox import Outbox
    from broker.core.timers import Timers
    from broker.engine import publishing
    from broker.engine.memory import MemoryEngine
    from broker.plugin import Client, Identity, Plugin, Publication
    from broker.plugin_host.loader import build_pipeline
    from broker.plugin_host.pipeline import Pipeline
    from broker.requests import dispatch
    from broker.wire import protocol
    from broker.wire.frame_reader import FrameReader, Received

    flusher = Flusher()

    class Subscriber:
        def __init__(self) -> None:
            self.client = Client("s", Identity(), "127.0.0.1")
            self.outbox = Outbox(10**6, 10**12, lambda: None, lambda: flusher.schedule(self))

        def offer(self, frame: bytes) -> bool:
            return self.outbox.offer(frame)

        async def deliver(self, frame: bytes) -> None:
            self.outbox.offer(frame)

        def flush(self) -> None:
            taken = self.outbox.take_for_direct_write()
            if taken is not None:
                self.outbox.sent(taken[1], taken[2])

    config = Config(limits=LimitsConfig(max_incoming_rate=0))
    engine = MemoryEngine(config, Timers())
    for topic in range(TOPICS):
        engine.router.subscribe(f"bench/{topic}", Subscriber())
    pipeline = Pipeline([], 5.0)
    sample = build_pipeline(load_config(SAMPLE_CONFIG))
    (acl,) = sample.plugins

    class AsyncAcl(Plugin):
        """The sample config's acl, its hooks async."""

        # Awaiting what an older tree's acl (async itself) hands back.
        async def authorize_subscribe(self, client: Client, topic_filter: str) -> None:
            result = acl.authorize_subscribe(client, topic_filter)
            if inspect.isawaitable(result):
                await result

        async def authorize_publish(self, client: Client, publication: Publication) -> Any:
            result = acl.authorize_publish(client, publication)
            return await result if inspect.isawaitable(result) else result

    wrapped = Pipeline([AsyncAcl(None)], 5.0)
    pipelines = [pipeline]
    padding = "x" * 76
    texts = [
        f'{{"op":"publish","topic":"bench/{n}","data":"{n}|1234567.123|{padding}"}}'
        for n in range(TOPICS)
    ]
    frames = b"".join(masked(text.encode()) for text in texts)
    publisher = Client("p", Identity(), "127.0.0.1")
    best: dict[str, float] = {}

    def note(stage: str, started: float) -> None:
        micros = (time.perf_counter() - started) / TOPICS * 1e6
        best[stage] = min(best.get(stage, micros), micros)

    stream, _ = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        connection = ClientConnection(
            stream,
            client_id="p",
            remote="127.0.0.1",
            identity=Identity(),
            engine=engine,
            pipeline=lambda: pipelines[0],
            server=config.server,
            limits=config.limits,
            timers=Timers(),
            writers=nursery,
        )
        for _ in range(ROUNDS):
            started = time.perf_counter()
            reader = FrameReader(65_536)
            for offset in range(0, len(frames), 65_536):
                reader.receive(frames[offset : offset + 65_536])
            note("frame reading", started)
            started = time.perf_counter()
            requests = [protocol.parse_request(text) for text in texts]
            note("parsing", started)
            started = time.perf_counter()
            for request in requests:
                assert isinstance(request, protocol.Publish)
                await publishing.publish(
                    publisher,
                    request.topic,
                    request.data,
                    pipeline=pipeline,
                    engine=engine,
                    max_topic_length=256,
                )
            note("publish path", started)
            started = time.perf_counter()
            pending, flusher._pending = flusher._pending, {}
            for subscriber in pending:
                subscriber.flush()
            note("flush (no write)", started)
            events = [Received(text) for text in texts]
            started = time.perf_counter()
            for event in events:
                await dispatch.handle(connection, event, lambda code, reason: None)
            note("whole request", started)
            for subscriber in flusher._pending:
                subscriber.flush()
            flusher._pending.clear()
            for stage, plugins in [("sample config", sample), ("its acl async", wrapped)]:
                pipelines[0] = plugins
                started = time.perf_counter()
                for event in events:
                    await dispatch.handle(connection, event, lambda code, reason: None)
                note(f"whole request, {stage}", started)
                for subscriber in flusher._pending:
                    subscriber.flush()
                flusher._pending.clear()
            pipelines[0] = pipeline
        nursery.cancel_scope.cancel()
    return best


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--here":
        import trio

        stages = trio.run(measure)
        print(", ".join(f"{stage} {micros:.2f} µs" for stage, micros in stages.items()))
        return
    trees = sys.argv[1:] or [str(Path(__file__).resolve().parent.parent)]
    for tree in trees:
        result = subprocess.run(
            [sys.executable, __file__, "--here"],
            env={**os.environ, "PYTHONPATH": tree},
            capture_output=True,
            text=True,
            check=True,
        )
        print(f"{tree}: {result.stdout.strip()}")


if __name__ == "__main__":
    main()

"""Publishes to one Redis, sent in batches: one round trip carries all that waited.

A publisher that waited for its answer before sending the next would get one
message per round trip through; queued instead, commands from every connection go
out together in one pipeline, in the order they came (so one connection's messages
stay in order), while the previous batch is on its way. The queue is bounded:
beyond `MAX_QUEUED` commands, publishers wait for room.
"""

from collections import deque
from collections.abc import Callable
from typing import Any

import trio
from coredis.patterns.pipeline import Pipeline as RedisPipeline

from ..wire.protocol import ProtocolError
from . import wire as cluster_wire

MAX_QUEUED = 10_000
MAX_BATCH = 1_000

Build = Callable[[RedisPipeline[bytes]], object]


class Pending:
    """One queued command: its answer, or the error, once its batch came back.

    A plain publish is given as ``(channel, header, payload)`` instead of ``build``:
    consecutive ones to the same channel go out as one PUBLISH (`cluster_wire`).
    """

    __slots__ = ("_done", "build", "error", "on_failure", "publish", "result")

    def __init__(self, build: Build | None, publish: tuple[str, bytes, bytes] | None) -> None:
        self.build = build
        self.publish = publish
        self.result: Any = None
        self.error: ProtocolError | None = None
        self.on_failure: Callable[[ProtocolError], None] | None = None
        self._done = trio.Event()

    def finish(self, result: Any, error: ProtocolError | None) -> None:
        self.result, self.error = result, error
        self._done.set()
        if error is not None and self.on_failure is not None:
            self.on_failure(error)

    async def outcome(self) -> Any:
        await self._done.wait()
        if self.error is not None:
            raise self.error
        return self.result


class Batcher:
    def __init__(self) -> None:
        self._queue: deque[Pending] = deque()
        self._queued = trio.Event()
        self._room = trio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    async def submit(
        self, build: Build | None = None, publish: tuple[str, bytes, bytes] | None = None
    ) -> Pending:
        """Queue a command (``build`` adds it to the pipeline, or a ``publish``), waiting
        for room."""
        while len(self._queue) >= MAX_QUEUED:
            await self._room.wait()
        pending = Pending(build, publish)
        self._queue.append(pending)
        self._queued.set()
        return pending

    def fail_all(self, error: ProtocolError) -> None:
        """What is queued will not be sent (Redis went away)."""
        while self._queue:
            self._queue.popleft().finish(None, error)
        self._made_room()

    def _made_room(self) -> None:
        self._room.set()
        self._room = trio.Event()

    async def next_batch(self) -> list[Pending]:
        while not self._queue:
            self._queued = trio.Event()
            await self._queued.wait()
        batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
        self._made_room()
        return batch


def add_to_pipeline(batch: list[Pending], pipe: RedisPipeline[bytes]) -> list[list[Pending]]:
    """Add the batch's commands, in order; which pendings each command answers."""
    answered: list[list[Pending]] = []
    index = 0
    while index < len(batch):
        pending = batch[index]
        if pending.publish is None:
            assert pending.build is not None
            pending.build(pipe)
            answered.append([pending])
            index += 1
            continue
        channel, header, payload = pending.publish
        payloads = [payload]
        run = [pending]
        index += 1
        while index < len(batch):
            following = batch[index].publish
            if following is None or following[0] != channel:
                break
            payloads.append(following[2])
            run.append(batch[index])
            index += 1
        pipe.publish(channel, cluster_wire.join(header, payloads))
        answered.append(run)
    return answered

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
from coredis.patterns.pipeline import Pipeline

from .protocol import ProtocolError

MAX_QUEUED = 10_000
MAX_BATCH = 1_000

Build = Callable[[Pipeline[bytes]], object]


class Pending:
    """One queued command: its answer, or the error, once its batch came back."""

    __slots__ = ("_done", "build", "error", "on_failure", "result")

    def __init__(self, build: Build) -> None:
        self.build = build
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

    async def submit(self, build: Build) -> Pending:
        """Queue a command (``build`` adds it to the pipeline), waiting for room."""
        while len(self._queue) >= MAX_QUEUED:
            await self._room.wait()
        pending = Pending(build)
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

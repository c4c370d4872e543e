"""The control channel between the supervisor and a worker: JSON lines on a socketpair.

The worker says ``{"listening": true}`` once its listeners are up, then answers each
``{"snapshot": true}`` with ``{"snapshot": {...}}`` (`broker.core.stats.Snapshot`). A
worker whose channel reaches EOF has lost its supervisor and stops.
"""

import json
import os
from typing import Any

import attrs
import trio

# Read by `trio-broker serve`: it runs as worker INDEX on PORT, its channel on fd FD.
WORKER_ENV = "TRIO_BROKER_WORKER"
MAX_LINE = 16 * 2**20


@attrs.frozen
class WorkerRole:
    index: int
    port: int
    fd: int

    def encode(self) -> str:
        return f"{self.index}:{self.port}:{self.fd}"

    @classmethod
    def from_environment(cls) -> "WorkerRole | None":
        value = os.environ.get(WORKER_ENV)
        if not value:
            return None
        index, port, fd = (int(part) for part in value.split(":"))
        return cls(index, port, fd)


class Channel:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()

    async def send(self, message: dict[str, Any]) -> None:
        await self.stream.send_all(json.dumps(message).encode() + b"\n")

    async def receive(self) -> dict[str, Any] | None:
        """The next message; None at EOF."""
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > MAX_LINE:
                raise ValueError("control message too long")
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        message: dict[str, Any] = json.loads(line)
        return message

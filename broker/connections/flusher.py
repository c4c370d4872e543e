"""One task that writes, for every connection a publish left data for, what is pending.

A publish to a thousand idle subscribers would otherwise wake a thousand writer
tasks; here it costs one non-blocking write each, done after the publisher yields,
so everything queued meanwhile goes out together. A connection whose socket cannot
take it all hands the rest to its own writer task (see `broker.connections.outbox`).
"""

import logging
from typing import Protocol

import trio

log = logging.getLogger("broker.flusher")


class Flushable(Protocol):
    def flush(self) -> None: ...


class Flusher:
    def __init__(self) -> None:
        self._pending: dict[Flushable, None] = {}  # an ordered set
        self._wakeup = trio.lowlevel.ParkingLot()

    def schedule(self, connection: Flushable) -> None:
        if not self._pending:
            self._wakeup.unpark()
        self._pending[connection] = None

    async def run(self) -> None:
        while True:
            while not self._pending:
                await self._wakeup.park()
            pending, self._pending = self._pending, {}
            for connection in pending:
                try:
                    connection.flush()
                except Exception:  # a bug for one connection must not stop every write
                    log.exception("error flushing %r", connection)

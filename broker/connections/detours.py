"""The router's side of a connection: live deliveries, and the detour they take while a
recovery's replay goes out first (`catching_up`, `broker.core.snapshots`)."""

import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ..core.snapshots import Detour
from ..requests.session import CatchUp
from ..wire.protocol import ErrorCode, ProtocolError
from .state import ConnectionState


class Detours(ConnectionState):
    __slots__ = ()

    # The router's Subscriber interface.

    def offer(self, frame: bytes) -> bool:
        if self._detour is not None and self._detoured(frame):
            return True
        return self.outbox.offer(frame)

    async def deliver(self, frame: bytes) -> None:
        if self._detour is None or not self._detoured(frame):
            await self.send_frame(frame)

    def _detoured(self, frame: bytes) -> bool:
        """Whether a live delivery was put aside or dropped (`catching_up`); False: it goes
        to the outbox as usual."""
        detour = self._detour
        assert detour is not None
        waiting = detour.waiting
        if waiting is None:
            detour.forget(self.subscriptions)
            if detour.done:
                self._detour = None
                return False
        if detour.covers(frame):
            return True
        if waiting is None:
            return False
        if len(waiting) >= self.limits.max_queued_messages:
            self._slow_consumer()
            return True  # dropped: the connection is going away
        waiting.append(frame)
        return True

    @asynccontextmanager
    async def catching_up(self) -> AsyncIterator[CatchUp]:
        """Live deliveries wait aside while the block sends a replay, then follow it, but
        for those the block's snapshot covers (`CatchUp.snapshot`), which are dropped
        until it settles (`broker.core.snapshots`).

        The deliveries waiting aside are bounded like the outbox; a client that lets more
        pile up is a slow consumer. (They were once diverted by shadowing `offer` with an
        instance attribute: that turned each subscribed connection's attribute dict from
        a shared-key one into a full one, 1.5 KiB more per idle connection.)
        """
        detour = self._detour = self._detour or Detour()
        waiting = detour.waiting = collections.deque()
        catch_up = CatchUp()
        try:
            yield catch_up
        except ProtocolError:
            # The request fails, the connection goes on: what other subscriptions delivered
            # meanwhile still goes out.
            await self._send_waiting(detour, waiting)
            raise
        else:
            if catch_up.snapshot is not None:
                detour.add(catch_up.snapshot)
            await self._send_waiting(detour, waiting)
        finally:
            detour.waiting = None
            detour.forget(self.subscriptions)
            if detour.done:
                self._detour = None

    def changing_subscriptions(self) -> "Changing":
        return Changing(self)

    async def _send_waiting(self, detour: Detour, waiting: collections.deque[bytes]) -> None:
        while waiting:  # what arrives meanwhile joins the end of the line
            frame = waiting.popleft()
            if not detour.covers(frame):
                await self.send_frame(frame)  # straight to the outbox, not aside


class Changing:
    """One subscription change at a time on a connection: its own requests come one by
    one, but the control API's may come meanwhile, and a recovery's detour is one per
    connection. A slot and an Event while busy, not a Lock per connection: memory per
    idle connection is what a broker of many clients pays for."""

    __slots__ = ("_connection",)

    def __init__(self, connection: ConnectionState) -> None:
        self._connection = connection

    async def __aenter__(self) -> None:
        connection = self._connection
        while (busy := connection._changing) is not None:
            if busy is ENDED:
                raise ProtocolError(ErrorCode.UNAVAILABLE, "the connection has ended")
            await busy.wait()
        connection._changing = trio.Event()

    async def __aexit__(self, *exc_info: object) -> None:
        connection = self._connection
        done, connection._changing = connection._changing, None
        if done is not None:
            done.set()


# A connection's `_changing` once it ended: no subscription changes any more.
ENDED = trio.Event()


async def end_subscription_changes(connection: ConnectionState, timeout: float) -> None:
    """Wait (at most ``timeout`` seconds) for a change in progress, then refuse any other:
    the connection is about to let go of all it holds."""
    with trio.move_on_after(timeout):
        while (busy := connection._changing) is not None and busy is not ENDED:
            await busy.wait()
    connection._changing = ENDED

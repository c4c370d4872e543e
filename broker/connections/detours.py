"""The router's side of a connection: live deliveries, and the detour they take while a
recovery's replay goes out first (`catching_up`, `broker.core.snapshots`)."""

import collections

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

    def catching_up(self) -> "CatchingUp":
        """Live deliveries wait aside while the block sends a replay, then follow it, but
        for those the block's snapshot covers (`CatchUp.snapshot`), which are dropped
        until it settles (`broker.core.snapshots`).

        The deliveries waiting aside are bounded like the outbox; a client that lets more
        pile up is a slow consumer. (They were once diverted by shadowing `offer` with an
        instance attribute: that turned each subscribed connection's attribute dict from
        a shared-key one into a full one, 1.5 KiB more per idle connection.)
        """
        return CatchingUp(self)

    def changing_subscriptions(self) -> "Changing":
        return Changing(self)

    async def _send_waiting(self, detour: Detour, waiting: collections.deque[bytes]) -> None:
        while waiting:  # what arrives meanwhile joins the end of the line
            frame = waiting.popleft()
            if not detour.covers(frame):
                await self.send_frame(frame)  # straight to the outbox, not aside


class CatchingUp:
    """`Detours.catching_up`. A plain class, as `Changing`: an async generator's context
    manager costs its generator and two coroutines for every subscribe."""

    __slots__ = ("_catch_up", "_connection", "_detour", "_waiting")

    def __init__(self, connection: Detours) -> None:
        self._connection = connection

    async def __aenter__(self) -> CatchUp:
        connection = self._connection
        detour = self._detour = connection._detour = connection._detour or Detour()
        self._waiting = detour.waiting = collections.deque()
        self._catch_up = CatchUp()
        return self._catch_up

    async def __aexit__(self, error_type: type[BaseException] | None, *rest: object) -> None:
        connection, detour = self._connection, self._detour
        try:
            if error_type is None:
                if self._catch_up.snapshot is not None:
                    detour.add(self._catch_up.snapshot)
                await connection._send_waiting(detour, self._waiting)
            elif issubclass(error_type, ProtocolError):
                # The request fails, the connection goes on: what other subscriptions
                # delivered meanwhile still goes out.
                await connection._send_waiting(detour, self._waiting)
        finally:
            detour.waiting = None
            detour.forget(connection.subscriptions)
            if detour.done:
                connection._detour = None


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

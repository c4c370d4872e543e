"""Whether a connection's client is still there and still allowed: the heartbeat,
credential expiry and renewal, and the incoming rate limit."""

import contextlib
import logging
import time

import attrs
import trio

from ..core.heartbeat import Beat, Heartbeat
from ..core.token_bucket import TokenBucket
from ..plugin import Identity
from ..wire.close_codes import CloseCode
from ..wire.frames import close_frame, ping_frame
from ..wire.sse import HEARTBEAT
from .raw_socket import write_now
from .state import ConnectionState

log = logging.getLogger("broker.connection")


class Liveness(ConnectionState):
    __slots__ = ()

    def _start_timers(self) -> None:
        now = trio.current_time()
        if self.server.heartbeat_interval > 0:
            self._heartbeat = Heartbeat(
                self.server.heartbeat_interval, self.server.heartbeat_timeout, now
            )
            self._timer = self._timers.call_at(self._heartbeat.due, self._beat)
        self._schedule_expiry(now)

    def _schedule_expiry(self, now: float) -> None:
        expires_at = self.client.identity.expires_at
        if expires_at is not None:
            self._expiry = self._timers.call_at(
                now + max(0.0, expires_at - time.time()), self._expire
            )

    def _beat(self) -> None:
        heartbeat = self._heartbeat
        assert heartbeat is not None
        now = trio.current_time()
        beat = heartbeat.check(now, self._last_progress, self._held_by_backpressure)
        if beat is Beat.DEAD:
            log.info("client %s (%s): no pong, dropping it", self.client_id, self.remote)
            self._drop(CloseCode.INTERNAL_ERROR, "heartbeat timeout")
            return
        if beat is Beat.PING:
            if self.closing:
                return
            if self.wire_format.stream is not None:
                # An event stream's comment line keeps proxies from timing it out; nothing
                # answers it (a peer gone shows as a full queue: the slow-consumer limit).
                self.outbox.push_control(HEARTBEAT)
                heartbeat.pong(now)
            else:
                self.outbox.push_control(ping_frame(b"heartbeat"))
        self._timer = self._timers.call_at(heartbeat.due, self._beat)

    def _drop(self, code: int, reason: str) -> None:
        """End the connection now: nobody is there to complete a closing handshake with.

        The close frame goes out only if the socket takes it without waiting; a writer
        task, if one runs, holds a half-written frame, and the frame is not sent at all.
        """
        stream = self.wire_format.stream is not None
        if self._socket is not None and not self.outbox.writer_running and not self.closing:
            frame = b"" if stream else close_frame(code, reason)
            self._close_sent = True
            # Full or broken, it was only a courtesy.
            with contextlib.suppress(trio.BrokenResourceError):
                write_now(self._socket, self._tls.encrypt(frame) if self._tls else frame)
        self.close(code, reason, deadline=trio.current_time())

    def _expire(self) -> None:
        self._expiry = None
        if self.pipeline().renews and not self.closing:
            # In the broker's nursery, as a writer task: a timer cannot wait.
            self._writers.start_soon(self._renew_or_close)
            return
        log.info("client %s (%s): credentials expired", self.client_id, self.remote)
        self.close(CloseCode.TOKEN_EXPIRED, "token expired")

    async def _renew_or_close(self) -> None:
        """A plugin may renew the expiring identity (`Plugin.renew`); else 4001."""
        expires_at = await self.pipeline().renew(self.client)
        if self.closing:
            return
        if expires_at is None or expires_at <= time.time():
            log.info("client %s (%s): credentials expired", self.client_id, self.remote)
            self.close(CloseCode.TOKEN_EXPIRED, "token expired")
            return
        self.renew(attrs.evolve(self.client.identity, expires_at=expires_at))

    def renew(self, identity: Identity) -> None:
        self.client = attrs.evolve(self.client, identity=identity)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._schedule_expiry(trio.current_time())

    def _stop_timers(self) -> None:
        for timer in (self._timer, self._expiry):
            if timer is not None:
                timer.cancel()

    async def _throttle(self, incoming: TokenBucket, frames: int) -> None:
        """Wait until the client may send again; meanwhile TCP holds it back."""
        if not self._throttled:
            self._throttled = True
            self.stats.throttled_connections += 1
            log.warning(
                "client %s (%s): sends faster than [limits] max_incoming_rate (%g frames/s "
                "after a burst of %d): reading it more slowly; raise the limit if this is a "
                "backend publishing on purpose",
                self.client_id,
                self.remote,
                self.limits.max_incoming_rate,
                self.limits.incoming_burst,
            )
        # Not reading means its pongs wait unread too: not its fault.
        with self.held():
            await trio.sleep(incoming.wait_for(frames, trio.current_time()))

    def held(self) -> "Held":
        return Held(self)


class Held:
    """Meanwhile the heartbeat knows the client is held up (by backpressure), not gone.

    A plain class with a plain ``with``: it is entered for every publish, and a
    generator-based context manager costs a generator (and an async one its hooks) each
    time, an async ``with`` two coroutines.
    """

    __slots__ = ("_connection",)

    def __init__(self, connection: ConnectionState) -> None:
        self._connection = connection

    def __enter__(self) -> None:
        self._connection._held_by_backpressure = True

    def __exit__(self, *exc_info: object) -> None:
        self._connection._held_by_backpressure = False

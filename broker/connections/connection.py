"""One client's WebSocket session: reads requests, writes replies and deliveries.

An idle connection is one task, the reader, which handles requests in order.
Frames for the client go to its outbox and are written by the broker's flusher;
a writer task joins the reader in the connection's nursery only while there is
something the flusher cannot write without waiting (see `broker.connections.outbox`).
Heartbeats and credential expiry are timers on the broker's timer task.
Closing is a request: the writer sends the close frame after what it must
drain, the reader waits for the peer's answer, and a deadline on the whole
connection bounds both.
"""

import collections
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio

from ..config.schema import LimitsConfig, ServerConfig
from ..core.heartbeat import Beat, Heartbeat
from ..core.snapshots import Detour
from ..core.stats import Stats
from ..core.timers import Timer, Timers
from ..core.token_bucket import TokenBucket
from ..core.topics import has_wildcard
from ..engine.interface import Engine
from ..plugin import Client, Identity
from ..plugin_host.pipeline import Pipeline
from ..requests import dispatch
from ..requests.session import CatchUp
from ..wire.close_codes import CloseCode
from ..wire.frame_reader import Close, Event, FrameReader, Ping, Pong, Received, Violation
from ..wire.frames import close_frame, ping_frame, pong_frame, text_frame
from ..wire.protocol import ProtocolError
from .flusher import Flusher
from .outbox import Outbox, chunks
from .raw_socket import read_now, write_now
from .tls_stream import TlsStream

log = logging.getLogger("broker.connection")

RECEIVE_SIZE = 65_536
# Seconds of handling one read's requests after which the reader lets others run.
HANDLING_SLICE = 0.001
# And after at least this many requests: each yield costs a write per subscriber the
# requests left frames for, worth it once most have several.
SLICE_REQUESTS = 8


class ClientConnection:
    """One WebSocket client after its handshake: the `Session` its requests run on and the
    router's `Subscriber` that deliveries reach.

    `run` reads and handles its requests until the peer closes, breaks the protocol or
    goes silent (heartbeat), its credentials expire, or `close` is asked (shutdown, lame
    duck, a slow consumer): then it drains what must go out, sends the close frame and
    waits for the peer's, all within the connection's deadline.
    """

    # Slots: more than 30 attributes would not share their keys between instances, and
    # each connection would carry a full dict (about 1 KiB).
    __slots__ = (
        "_close_sent",
        "_deadline",
        "_detour",
        "_expiry",
        "_flusher",
        "_heartbeat",
        "_held_by_backpressure",
        "_incoming",
        "_last_progress",
        "_received",
        "_scope",
        "_socket",
        "_throttled",
        "_timer",
        "_timers",
        "_tls",
        "_writer_done",
        "_writer_scope",
        "_writer_stopped",
        "_writers",
        "client",
        "client_id",
        "close_code",
        "engine",
        "limits",
        "outbox",
        "pipeline",
        "remote",
        "server",
        "stats",
        "stream",
        "subscriptions",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        received: bytes = b"",
        *,
        client_id: str,
        remote: str,
        identity: Identity,
        remote_address: str | None = None,
        engine: Engine,
        pipeline: Callable[[], Pipeline],
        server: ServerConfig,
        limits: LimitsConfig,
        timers: Timers,
        flusher: Flusher | None = None,
        stats: Stats | None = None,
        writers: trio.Nursery,
    ) -> None:
        self.stream = stream
        self._received = received  # what came after the handshake request, unread yet
        self.client_id = client_id
        self.remote = remote
        # For plugins: the client's address, which a trusted proxy may have forwarded.
        self.client = Client(client_id, identity, remote_address or remote)
        self.engine = engine
        # Read at each operation: after a reload, the next one goes through the new plugins.
        self.pipeline = pipeline
        # A snapshot: a reload applies new limits to new connections only.
        self.server = server
        self.limits = limits
        self._timers = timers
        self.stats = stats if stats is not None else Stats()
        # Direct reads and writes need the socket itself (under TLS, below the TLS layer,
        # whose `encrypt` and `decrypt` then apply).
        self._tls = stream if isinstance(stream, TlsStream) else None
        transport = stream if self._tls is None else self._tls.transport
        self._socket = transport.socket if isinstance(transport, trio.SocketStream) else None
        self._flusher = flusher if self._socket is not None else None
        self.outbox = Outbox(
            limits.max_queued_messages,
            limits.max_queued_bytes,
            self._start_writer,
            self._request_flush if self._flusher is not None else None,
        )
        self.subscriptions: set[str] = set()
        # Around a recovery (`catching_up`): live deliveries waiting to follow a replay,
        # and the snapshots saying which ones the replay held already.
        self._detour: Detour | None = None
        self.close_code: int | None = None
        self._close_sent = False
        # The connection's cancel scope, while `run` runs: `close` sets its deadline.
        self._scope: trio.CancelScope | None = None
        # A writer task, when one runs, lives in the broker's nursery (`writers`), not in a
        # nursery of the connection's own: an idle connection would hold that nursery
        # (0.4 KiB) for nothing. `run` stops it before it returns.
        self._writers = writers
        self._writer_scope: trio.CancelScope | None = None
        self._writer_stopped: trio.Event | None = None
        self._deadline = math.inf  # for a `close` before `run`
        self._writer_done: trio.Event | None = None  # made by `close`
        self._heartbeat: Heartbeat | None = None
        self._timer: Timer | None = None  # the heartbeat's
        self._expiry: Timer | None = None
        self._held_by_backpressure = False
        self._throttled = False  # logged the first time only
        self._incoming: TokenBucket | None = None
        if limits.max_incoming_rate:
            self._incoming = TokenBucket(
                limits.max_incoming_rate, limits.incoming_burst, trio.current_time()
            )
        # When data last moved: read from the peer, or taken by a socket that was full.
        self._last_progress = -math.inf

    def __repr__(self) -> str:
        return f"<ClientConnection {self.client_id} from {self.remote}>"

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

    # Life cycle.

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def close(
        self, code: int, reason: str, *, drain: bool = False, deadline: float | None = None
    ) -> None:
        """Start the closing handshake; the connection ends by ``deadline`` at the latest."""
        if deadline is None:
            deadline = trio.current_time() + self.server.close_timeout
        self._deadline = min(self._deadline, deadline)
        for scope in (self._scope, self._writer_scope):
            if scope is not None:
                scope.deadline = self._deadline
        if self.closing:
            return
        self.close_code = code
        self._writer_done = trio.Event()
        final = None if self._close_sent else close_frame(code, reason)
        self._close_sent = True
        self.outbox.finish(final, drain=drain)

    async def run(self) -> None:
        pipeline = self.pipeline()
        try:
            with trio.CancelScope(deadline=self._deadline) as scope:
                self._scope = scope
                try:
                    if self.outbox.writer_running:  # asked for before the scope was there
                        self._spawn_writer()
                    await pipeline.on_connect(self.client)
                    self._start_timers()
                    await self._read_loop()
                    if self._writer_done is not None:
                        await self._writer_done.wait()
                finally:
                    # From now on a writer asked for (by the flusher) is not started.
                    self._scope = None
                    await self._stop_writer()
        finally:
            for timer in (self._timer, self._expiry):
                if timer is not None:
                    timer.cancel()
            for topic_filter in self.subscriptions:
                self.engine.unsubscribe(topic_filter, self)
            # Releases publishers waiting for room in this outbox.
            self.outbox.finish(None, drain=False)
            with trio.CancelScope(shield=True):
                # Everyone hears of a client leaving, unless they all leave (a shutdown).
                announce = self.close_code != CloseCode.GOING_AWAY
                for topic in self.subscriptions:
                    if not has_wildcard(topic):
                        await self.engine.leave(topic, self.client, announce=announce)
                await pipeline.on_disconnect(self.client)

    def _request_flush(self) -> None:
        assert self._flusher is not None
        self._flusher.schedule(self)

    def _start_writer(self) -> None:
        # Before `run` opens its scope, `run` starts the writer itself.
        if self._scope is not None:
            self._spawn_writer()

    def _spawn_writer(self) -> None:
        self._writer_stopped = trio.Event()
        self._writers.start_soon(self._writer)

    async def _writer(self) -> None:
        """The writer task: `_write_loop` within the connection's deadline; if the socket
        breaks, the reader is cancelled too (the connection is over)."""
        assert self._writer_stopped is not None
        try:
            with trio.CancelScope(deadline=self._deadline) as self._writer_scope:
                await self._write_loop()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            log.debug("client %s (%s): write failed: %r", self.client_id, self.remote, error)
            self._cancel_reader()
        except Exception:
            log.exception("client %s (%s): error writing", self.client_id, self.remote)
            self._cancel_reader()
        finally:
            self._writer_scope = None
            self._writer_stopped.set()

    def _cancel_reader(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _stop_writer(self) -> None:
        """Cancel a running writer and wait until it ended: the socket closes after."""
        if self._writer_scope is not None:
            self._writer_scope.cancel()
        if self._writer_stopped is not None:
            with trio.CancelScope(shield=True):
                await self._writer_stopped.wait()

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
            self.outbox.push_control(ping_frame(b"heartbeat"))
        self._timer = self._timers.call_at(heartbeat.due, self._beat)

    def _drop(self, code: int, reason: str) -> None:
        """End the connection now: nobody is there to complete a closing handshake with.

        The close frame goes out only if the socket takes it without waiting; a writer
        task, if one runs, holds a half-written frame, and the frame is not sent at all.
        """
        if self._socket is not None and not self.outbox.writer_running and not self.closing:
            frame = close_frame(code, reason)
            self._close_sent = True
            # Full or broken, it was only a courtesy.
            with contextlib.suppress(trio.BrokenResourceError):
                write_now(self._socket, self._tls.encrypt(frame) if self._tls else frame)
        self.close(code, reason, deadline=trio.current_time())

    def _expire(self) -> None:
        log.info("client %s (%s): credentials expired", self.client_id, self.remote)
        self.close(CloseCode.TOKEN_EXPIRED, "token expired")

    def flush(self) -> None:
        """Write what is pending without waiting (called by the broker's flusher)."""
        taken = self.outbox.take_for_direct_write()
        if taken is None:
            return
        data, count, nbytes = taken
        assert self._socket is not None
        if self._tls is not None:
            try:
                data = self._tls.encrypt(data)
            except trio.BrokenResourceError as error:
                log.debug("client %s (%s): %s", self.client_id, self.remote, error)
                self.close(CloseCode.INTERNAL_ERROR, "TLS failure", deadline=trio.current_time())
                return
        # Would block, or broken: the writer task finds out which.
        written = write_now(self._socket, data)
        # Not progress for the heartbeat: a socket with room takes a write whether or not
        # anyone is still at the other end. The writer's writes, which wait until the
        # peer drains a full socket, are.
        if written == len(data):
            self.outbox.sent(count, nbytes)
        else:
            self.outbox.direct_write_stalled(data[written:], count, nbytes)

    async def _write_loop(self) -> None:
        # Under TLS, the writer writes the socket below it, as the flusher does: ``head``
        # (the rest of a direct write) is already encrypted.
        send = self.stream.send_all if self._tls is None else self._tls.transport.send_all
        encrypt = self._tls.encrypt if self._tls is not None else bytes
        while True:
            batch = self.outbox.take_batch()
            if batch is None:
                return
            if batch.head:
                await send(batch.head)
                self.outbox.sent(batch.head_count, batch.head_bytes)
                self._last_progress = trio.current_time()
            if batch.control:
                # An empty control frame only asks that the TLS layer's own output be sent.
                control = encrypt(b"".join(batch.control))
                if control:
                    await send(control)
            for chunk, count in chunks(batch.data):
                await send(encrypt(chunk))
                self.outbox.sent(count, len(chunk))
                self._last_progress = trio.current_time()
            if batch.final is not None:
                await send(encrypt(batch.final))
            if batch.last:
                assert self._writer_done is not None
                self._writer_done.set()
                return

    async def _read_loop(self) -> None:
        """Handle what the peer sends until its close frame or EOF."""
        reader = FrameReader(self.limits.max_message_size)
        socket = self._socket
        tls = self._tls
        data: bytes | None = self._received + (tls.take_buffered() if tls is not None else b"")
        self._received = b""
        while True:
            if data and await self._handle_events(reader.receive(data)):
                return
            if tls is not None and tls.peer_closed:
                return
            if socket is None:
                data = bytes(await self.stream.receive_some(RECEIVE_SIZE))
            else:
                # What SocketStream.receive_some does, without its three coroutine
                # frames, which every idle connection would hold while it waits here.
                await trio.lowlevel.checkpoint_if_cancelled()
                data = read_now(socket, RECEIVE_SIZE)
                if data is None:
                    await trio.lowlevel.wait_readable(socket)
                    continue
                await trio.lowlevel.cancel_shielded_checkpoint()
            if not data:
                return
            self._last_progress = trio.current_time()
            if tls is not None:
                data = tls.decrypt(data)
                if tls.has_output:
                    self.outbox.push_control(b"")  # gets it sent (`_write_loop`)

    async def _handle_events(self, events: list[Event]) -> bool:
        """Act on what the peer's frames said; True once its close arrived (or it broke
        the protocol).

        A function of its own so that nothing of the last request stays referenced
        while the connection waits for the next.
        """
        incoming = self._incoming
        yield_at = time.perf_counter() + HANDLING_SLICE
        handled = 0
        for event in events:
            if incoming is not None:
                frames = event.frames if type(event) is Received else 1
                if not incoming.can_take(frames, trio.current_time()):
                    await self._throttle(incoming, frames)
                incoming.take(frames)
            if type(event) is Received:
                if not self.closing:
                    await dispatch.handle(self, event, self._close_after_refusal)
                    handled += 1
                    if handled >= SLICE_REQUESTS and time.perf_counter() >= yield_at:
                        # What the requests so far queued gets written (by the flusher)
                        # while the rest are handled: the peers start reading it sooner.
                        await trio.lowlevel.checkpoint()
                        yield_at = time.perf_counter() + HANDLING_SLICE
                        handled = 0
            elif type(event) is Ping:
                if not self.closing:
                    self.outbox.push_control(pong_frame(event.payload))
            elif type(event) is Pong:
                if self._heartbeat is not None:
                    self._heartbeat.pong(trio.current_time())
            else:
                assert isinstance(event, Close | Violation)
                # A close is answered with its own code (unless this end closed first).
                self.close(event.code, event.reason)
                # After a violation that left the framing intact, read on (the reader
                # drops what comes) for the peer's answer to this close.
                if isinstance(event, Close) or not event.framing_intact:
                    return True
        return False

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

    # Requests: each op is a module of `broker.requests`; this is the `Session` they use.

    async def send(self, payload: bytes) -> None:
        await self.send_frame(text_frame(payload))

    async def send_frame(self, frame: bytes) -> None:
        if not await self.outbox.put(frame, self.limits.slow_consumer_timeout):
            self._slow_consumer()

    def _slow_consumer(self) -> None:
        if not self.closing:
            log.warning("client %s (%s): slow consumer, closing", self.client_id, self.remote)
            self.stats.slow_consumer_disconnects += 1
            self.close(CloseCode.POLICY_VIOLATION, "slow consumer")

    def held(self) -> "_Held":
        return _Held(self)

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

    async def _send_waiting(self, detour: Detour, waiting: collections.deque[bytes]) -> None:
        while waiting:  # what arrives meanwhile joins the end of the line
            frame = waiting.popleft()
            if not detour.covers(frame):
                await self.send_frame(frame)  # straight to the outbox, not aside

    def _close_after_refusal(self, code: int, reason: str) -> None:
        # Drained, so that the error explaining the close arrives first.
        self.close(code, reason, drain=True)

    def renew(self, identity: Identity) -> None:
        self.client = attrs.evolve(self.client, identity=identity)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._schedule_expiry(trio.current_time())


class _Held:
    """Meanwhile the heartbeat knows the client is held up (by backpressure), not gone.

    A plain class with a plain ``with``: it is entered for every publish, and a
    generator-based context manager costs a generator (and an async one its hooks) each
    time, an async ``with`` two coroutines.
    """

    __slots__ = ("_connection",)

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection

    def __enter__(self) -> None:
        self._connection._held_by_backpressure = True

    def __exit__(self, *exc_info: object) -> None:
        self._connection._held_by_backpressure = False

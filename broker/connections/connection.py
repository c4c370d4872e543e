"""One client's WebSocket session: reads requests, writes replies and deliveries.

An idle connection is one task, the reader, which handles requests in order.
Frames for the client go to its outbox and are written by the broker's flusher;
a writer task joins the reader in the connection's nursery only while there is
something the flusher cannot write without waiting (see `broker.connections.outbox`).
Heartbeats and credential expiry are timers on the broker's timer task.
Closing is a request: the writer sends the close frame after what it must
drain, the reader waits for the peer's answer, and a deadline on the whole
connection bounds both.

The class is assembled from one module per job (`state`, `writing`, `liveness`,
`detours`); this one reads and runs.
"""

import math
import time
from collections.abc import Callable

import trio

from ..config.schema import LimitsConfig, ServerConfig
from ..core.stats import Stats
from ..core.timers import Timers
from ..core.token_bucket import TokenBucket
from ..core.topics import has_wildcard
from ..engine.interface import Engine
from ..plugin import Client, Identity
from ..plugin_host.pipeline import Pipeline
from ..requests import dispatch, server_side
from ..wire.close_codes import CloseCode
from ..wire.encodings import JSON_FORMAT, WireFormat
from ..wire.frame_reader import Close, Event, FrameReader, Ping, Pong, Received, Violation
from ..wire.frames import pong_frame
from .detours import Detours, end_subscription_changes
from .flusher import Flusher
from .liveness import Liveness
from .outbox import Outbox
from .raw_socket import read_now
from .tls_stream import TlsStream
from .writing import Writing

RECEIVE_SIZE = 65_536
# Seconds of handling one read's requests after which the reader lets others run.
HANDLING_SLICE = 0.001
# And after at least this many requests: each yield costs a write per subscriber the
# requests left frames for, worth it once most have several.
SLICE_REQUESTS = 8


class ClientConnection(Detours, Liveness, Writing):
    """One WebSocket client after its handshake: the `Session` its requests run on and the
    router's `Subscriber` that deliveries reach.

    `run` reads and handles its requests until the peer closes, breaks the protocol or
    goes silent (heartbeat), its credentials expire, or `close` is asked (shutdown, lame
    duck, a slow consumer): then it drains what must go out, sends the close frame and
    waits for the peer's, all within the connection's deadline.
    """

    __slots__ = ()

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
        wire_format: WireFormat = JSON_FORMAT,
    ) -> None:
        # What each attribute is for: `ConnectionState`.
        self.stream = stream
        self._received = received
        self.client_id = client_id
        self.remote = remote
        # For plugins: the client's address, which a trusted proxy may have forwarded.
        self.client = Client(client_id, identity, remote_address or remote)
        self.engine = engine
        self.pipeline = pipeline
        self.server = server
        self.limits = limits
        self._timers = timers
        self.stats = stats if stats is not None else Stats()
        self._tls = stream if isinstance(stream, TlsStream) else None
        transport = stream if self._tls is None else self._tls.transport
        self._socket = transport.socket if isinstance(transport, trio.SocketStream) else None
        self._flusher = flusher if self._socket is not None else None
        self.outbox = Outbox(
            limits.max_queued_messages,
            limits.max_queued_bytes,
            self._start_writer,
            self._request_flush if self._flusher is not None else None,
            wire_format.outgoing,
        )
        self.wire_format = wire_format
        self.subscriptions = set()
        self._detour = None
        self._changing = None
        self.close_code = None
        self._close_sent = False
        self._scope = None
        self._writers = writers
        self._writer_scope = None
        self._writer_stopped = None
        self._deadline = math.inf  # for a `close` before `run`
        self._writer_done = None
        self._heartbeat = None
        self._timer = None
        self._expiry = None
        self._held_by_backpressure = False
        self._throttled = False
        self._incoming = None
        if limits.max_incoming_rate:
            self._incoming = TokenBucket(
                limits.max_incoming_rate, limits.incoming_burst, trio.current_time()
            )
        self._last_progress = -math.inf

    def __repr__(self) -> str:
        return f"<ClientConnection {self.client_id} from {self.remote}>"

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
                    if self.client.identity.channels:
                        await server_side.subscribe_channels(self, self.client.identity.channels)
                    if (stream := self.wire_format.stream) is not None:
                        # An event stream's filters: authorized at its request already.
                        for topic_filter in stream.filters:
                            await server_side.subscribe_for(self, topic_filter, stream.since)
                    await self._read_loop()
                    if self._writer_done is not None:
                        await self._writer_done.wait()
                finally:
                    # From now on a writer asked for (by the flusher) is not started.
                    self._scope = None
                    await self._stop_writer()
        finally:
            self._stop_timers()
            with trio.CancelScope(shield=True):
                # The control API's change in progress finishes first, and none follows.
                await end_subscription_changes(self, self.server.close_timeout)
            events, user = self.engine.events, self.client.identity.user
            for topic_filter in self.subscriptions:
                events.subscription("unsubscribe", self.client_id, user, topic_filter)
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

    async def _read_loop(self) -> None:
        """Handle what the peer sends until its close frame or EOF."""
        reader = FrameReader(self.limits.max_message_size, deflate=self.wire_format.deflate)
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

    def _close_after_refusal(self, code: int, reason: str) -> None:
        # Drained, so that the error explaining the close arrives first.
        self.close(code, reason, drain=True)

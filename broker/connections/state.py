"""What every part of a client connection holds, and the life cycle they all use.

`ClientConnection` is one object per client, split by job into modules: this state
and closing; `writing` (the flusher's direct writes and the writer task); `liveness`
(heartbeat, credential expiry, the incoming rate); `detours` (deliveries around a
recovery); `connection` (reading requests, the whole run). The parts are mixins over
this class: slots live here only, so an idle connection costs what one class would.
"""

import logging
from collections.abc import Callable

import trio

from ..config.schema import LimitsConfig, ServerConfig
from ..core.heartbeat import Heartbeat
from ..core.snapshots import Detour
from ..core.stats import Stats
from ..core.timers import Timer, Timers
from ..core.token_bucket import TokenBucket
from ..engine.interface import Engine
from ..plugin import Client
from ..plugin_host.pipeline import Pipeline
from ..wire.close_codes import CloseCode
from ..wire.encodings import WireFormat
from ..wire.frames import close_frame, text_frame
from .flusher import Flusher
from .outbox import Outbox
from .tls_stream import TlsStream

log = logging.getLogger("broker.connection")


class ConnectionState:
    # Slots: more than 30 attributes would not share their keys between instances, and
    # each connection would carry a full dict (about 1 KiB). The mixins add none.
    __slots__ = (
        "_changing",
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
        "wire_format",
    )

    stream: trio.abc.Stream
    _received: bytes  # what came after the handshake request, unread yet
    client_id: str
    remote: str
    client: Client
    engine: Engine
    # Read at each operation: after a reload, the next one goes through the new plugins.
    pipeline: Callable[[], Pipeline]
    # A snapshot: a reload applies new limits to new connections only.
    server: ServerConfig
    limits: LimitsConfig
    _timers: Timers
    stats: Stats
    # Direct reads and writes need the socket itself (under TLS, below the TLS layer,
    # whose `encrypt` and `decrypt` then apply).
    _tls: TlsStream | None
    _socket: trio.socket.SocketType | None
    _flusher: Flusher | None
    outbox: Outbox
    subscriptions: set[str]
    wire_format: WireFormat  # JSON or MessagePack, compressed or not
    # Around a recovery (`catching_up`): live deliveries waiting to follow a replay,
    # and the snapshots saying which ones the replay held already.
    _detour: Detour | None
    # Set while a subscription changes (the client's request, or the backend's through the
    # control API): the next change waits for it (`Detours.changing_subscriptions`).
    _changing: trio.Event | None
    close_code: int | None
    _close_sent: bool
    # The connection's cancel scope, while `run` runs: `close` sets its deadline.
    _scope: trio.CancelScope | None
    # A writer task, when one runs, lives in the broker's nursery (`_writers`), not in a
    # nursery of the connection's own: an idle connection would hold that nursery
    # (0.4 KiB) for nothing. `run` stops it before it returns.
    _writers: trio.Nursery
    _writer_scope: trio.CancelScope | None
    _writer_stopped: trio.Event | None
    _deadline: float
    _writer_done: trio.Event | None  # made by `close`
    _heartbeat: Heartbeat | None
    _timer: Timer | None  # the heartbeat's
    _expiry: Timer | None
    _held_by_backpressure: bool
    _throttled: bool  # logged the first time only
    _incoming: TokenBucket | None
    # When data last moved: read from the peer, or taken by a socket that was full.
    _last_progress: float

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
        # An event stream just ends: it has no close frame.
        stream = self.wire_format.stream is not None
        final = None if self._close_sent or stream else close_frame(code, reason)
        self._close_sent = True
        self.outbox.finish(final, drain=drain)

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

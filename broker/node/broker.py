"""The broker server: listens, runs the handshake, owns every connection task."""

import errno
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import attrs
import trio

from ..admin.api_keys import load_api_keys
from ..admin.listener import AdminListener
from ..cluster.engine import RedisEngine
from ..config.schema import Config
from ..connections.connection import ClientConnection
from ..connections.early import peer, receive_request, refuse_early
from ..connections.flusher import Flusher
from ..connections.raw_socket import send_all_soon
from ..connections.tls_stream import TlsStream
from ..core.client_ids import ClientIds
from ..core.stats import BUSIEST, Snapshot, Stats
from ..core.timers import Timers
from ..core.topics import TopicError, check_filter
from ..engine.interface import Engine
from ..engine.memory import MemoryEngine
from ..handshake import refusals
from ..handshake import upgrade as handshake
from ..handshake.admission import AddressLimits, address_key
from ..handshake.forwarding import IPAddress, TrustedProxies, client_address, parse_address
from ..handshake.upgrade import HandshakeFailed, Refusal
from ..plugin import Client, HandshakeRequest, Identity, Refuse
from ..plugin_host.handshake_view import plugin_view
from ..plugin_host.loader import build_pipeline
from ..plugin_host.pipeline import Pipeline, PluginFailure
from ..version import SERVER_NAME
from ..wire import deflate, encodings, protocol, sse
from ..wire.close_codes import CloseCode
from ..wire.frames import text_frame
from ..wire.protocol import ProtocolError
from . import tls
from .accepting import accept_connections
from .commands import NodeCommands
from .reuse_port import reuse_port_listeners
from .webhooks import DRAIN_SECONDS, WebhookSender, webhook_secret

log = logging.getLogger("broker.server")


class ListenError(OSError):
    """The configured address cannot be listened on (in use, not local, no permission)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        message = f"cannot listen on {host}:{port}: {cause.strerror or cause}"
        if cause.errno == errno.EADDRINUSE:
            message += " (another process, perhaps another trio-broker, has it: stop it or set "
            message += "[server] port)"
        super().__init__(cause.errno, message)


@attrs.frozen
class _Accepted:
    identity: Identity
    client_id: str
    response: bytes  # the 101 and the welcome, to send in one write
    received: bytes  # the client's first frames, sent with its request
    remote: str  # for logs
    remote_address: str  # for plugins: the client's, as a trusted proxy forwarded it
    address: str | None  # the key it was admitted under, when a trusted proxy forwarded it
    wire_format: encodings.WireFormat = encodings.JSON_FORMAT


def _deflater(config: Config) -> deflate.Deflater:
    return deflate.Deflater(config.server.compression_level, config.server.compression_min_size)


async def _listen(host: str, port: int, *, reuse_port: bool = False) -> list[trio.SocketListener]:
    try:
        if reuse_port:
            return await reuse_port_listeners(host, port)
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as error:
        raise ListenError(host, port, error) from error


class Workers(Protocol):
    async def node_snapshot(self, own: Snapshot) -> Snapshot:
        """``own`` (the supervisor's) with every worker's numbers added."""


def _tls_contexts(config: Config) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """The WebSocket listener's and the admin listener's (files read now)."""
    server, admin = config.server.tls, config.admin.tls
    return (
        None if server is None else tls.server_context(server),
        None if admin is None else tls.server_context(admin, key="admin.tls"),
    )


class Broker:
    """A running broker. Start it with ``await nursery.start(broker.serve)``.

    ``serve`` returns after `stop` once every client was closed with 1001, or
    when ``shutdown_timeout`` ran out.
    """

    def __init__(
        self,
        config: Config,
        pipeline: Pipeline | None = None,
        *,
        config_file: str | None = None,
        websocket: bool = True,
        reuse_port: bool = False,
    ) -> None:
        """``pipeline`` defaults to the plugins of ``config`` (ConfigError if invalid).

        ``websocket`` False: the admin listener only (the supervisor of workers);
        ``reuse_port``: the WebSocket port is shared with other processes (a worker).
        """
        self.config = config
        self.config_file = config_file
        self._websocket = websocket
        self._reuse_port = reuse_port
        self.workers: Workers | None = None  # set by a supervisor: its node_snapshot
        self.shared_port: int | None = None  # set by a supervisor: its workers' port
        self.stats = Stats()
        self.pipeline = pipeline or build_pipeline(config)
        self.pipeline.stats = self.stats
        self._tls, self._admin_tls = _tls_contexts(config)
        self.api_keys = load_api_keys(config.admin)
        self.admin_listeners: list[trio.SocketListener] = []
        self._admin = AdminListener(self, self._admin_tls)
        self._lame_duck_requested = trio.Event()
        self._lame_duck = False
        self.flusher = Flusher()
        self.timers = Timers()
        self._deflater = _deflater(config)
        self._msgpack_frames = encodings.MsgpackFrames()
        self._sse_frames = sse.SseFrames()
        self._wire_formats: dict[tuple[bool, int | None], encodings.WireFormat] = {}
        self._client_ids = ClientIds()
        self.engine: Engine = (
            RedisEngine(config, self.stats, lambda: self.pipeline)
            if config.cluster.engine == "redis"
            else MemoryEngine(config, self.timers, self.stats)
        )
        self.engine.serve_commands(NodeCommands(self.engine, lambda: self._connections).handle)
        self._webhooks = WebhookSender(self.engine.events, self.stats)
        self._webhooks.configure(config, webhook_secret(config))
        # One for every connection: they ask it for the pipeline at each operation.
        self._current_pipeline = lambda: self.pipeline
        self.listeners: list[trio.SocketListener] = []
        self._connections: set[ClientConnection] = set()
        self._streams = 0  # of them, event streams (Server-Sent Events)
        self._slots_taken = 0
        self._handshakes: set[trio.CancelScope] = set()
        self._stop_requested = trio.Event()
        self._stopping = False
        self._addresses = AddressLimits(*config.limits.per_address)
        self._proxies = TrustedProxies(config.server.trusted_proxies)
        self._warned_of_missing_proxy_header = False
        self._outer: trio.Nursery | None = None  # while serving

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [listener.socket.getsockname()[:2] for listener in self.listeners]

    @property
    def admin_addresses(self) -> list[tuple[str, int]]:
        return [listener.socket.getsockname()[:2] for listener in self.admin_listeners]

    @property
    def admin_port(self) -> int:
        return self.admin_addresses[0][1]

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    @property
    def websocket_port(self) -> int:
        """Where clients connect: this process's listener, or its workers' shared port."""
        return self.shared_port or self.port

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def reconfigure(self, config: Config, pipeline: Pipeline | None = None) -> None:
        """Apply a new config: new handshakes and new connections see it at once.

        Existing connections keep their identity and limits; their next operations go
        through the new pipeline (by default, built from ``config``).
        """
        new_pipeline = pipeline or build_pipeline(config)
        # Files are read again: renewed certificates, changed keys. All of it before
        # anything changes: a failure (ConfigError) leaves the broker as it was.
        tls_contexts = _tls_contexts(config)
        api_keys = load_api_keys(config.admin)
        secret = webhook_secret(config)
        self._tls, self._admin_tls = tls_contexts
        self.api_keys = api_keys
        new_pipeline.stats = self.stats
        old_pipeline, self.pipeline = self.pipeline, new_pipeline
        if old_pipeline is not new_pipeline and self._outer is not None:
            self._outer.start_soon(self._retire, old_pipeline)
        self.config = config
        self.engine.configure(config)
        self._webhooks.configure(config, secret)
        self._addresses.configure(*config.limits.per_address)
        self._admin.configure(config, self._admin_tls)
        self._proxies = TrustedProxies(config.server.trusted_proxies)
        self._deflater = _deflater(config)  # connections made before keep theirs
        self._wire_formats = {}

    @property
    def deflate_library(self) -> str | None:
        """What compresses for permessage-deflate (zlib, ISA-L), or None when it is off."""
        return self._deflater.library.name if self.config.server.compression else None

    def _wire_format(
        self, msgpack: bool, agreement: deflate.Agreement | None
    ) -> encodings.WireFormat:
        """What a connection speaks: one shared instance per combination."""
        window = None if agreement is None else agreement.window_bits
        found = self._wire_formats.get((msgpack, window))
        if found is None:
            outgoing: Callable[[bytes], bytes] | None = None
            if msgpack:
                outgoing = self._msgpack_frames.frame
            if window is not None:
                compress = self._deflater.for_window(window)
                outgoing = compress if outgoing is None else encodings.chained(outgoing, compress)
            found = encodings.WireFormat(msgpack, window is not None, outgoing)
            self._wire_formats[(msgpack, window)] = found
        return found

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def unready_reason(self) -> str | None:
        """Why load balancers should send no new clients here (None: they may)."""
        if self._stopping:
            return "shutting down"
        if self._lame_duck:
            return "lame duck"
        return self.engine.unready_reason

    def snapshot(self) -> Snapshot:
        """This process's numbers, for the admin listener."""
        retained_messages, retained_bytes = self.engine.retained
        return Snapshot(
            stats=self.stats,
            connections=self.connection_count,
            subscriptions=self.engine.subscription_count,
            topics=self.engine.filter_count(),
            retained_messages=retained_messages,
            retained_bytes=retained_bytes,
            links=self.engine.links(),
            unready_reason=self.unready_reason,
            busiest=self.engine.busiest(BUSIEST),
            streams=self._streams,
        )

    async def node_snapshot(self) -> Snapshot:
        """The node's numbers: this process's, and its workers' if it has any."""
        if self.workers is None:
            return self.snapshot()
        return await self.workers.node_snapshot(self.snapshot())

    def enter_lame_duck(self) -> None:
        """Stop accepting, close clients spread over ``lame_duck_duration``, then stop."""
        self._lame_duck_requested.set()

    def stop(self) -> None:
        """Stop accepting and close every client with 1001 (see `serve`)."""
        self._stop_requested.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        server, admin = self.config.server, self.config.admin
        if self._websocket:
            self.listeners = await _listen(server.host, server.port, reuse_port=self._reuse_port)
        if admin.enabled:
            try:
                self.admin_listeners = await _listen(admin.host, admin.port)
            except ListenError:
                for listener in self.listeners:
                    await listener.aclose()
                raise
        try:
            async with trio.open_nursery() as outer:
                self._outer = outer  # connections' writer tasks live here (see ClientConnection)
                await outer.start(self.engine.run)
                outer.start_soon(self.flusher.run)
                outer.start_soon(self.timers.run)
                outer.start_soon(self._webhooks.run)
                if self.admin_listeners:
                    # Serves through the shutdown (health, metrics) until the last client left.
                    outer.start_soon(self._admin.serve, self.admin_listeners)
                async with trio.open_nursery() as nursery:
                    accepting = trio.CancelScope()
                    if self.listeners:
                        await nursery.start(self._accept, accepting, nursery)
                    outer.start_soon(self._lame_duck_when_asked, accepting)
                    task_status.started()
                    await self._stop_requested.wait()
                    self._stopping = True
                    accepting.cancel()
                    deadline = trio.current_time() + self.config.server.shutdown_timeout
                    for scope in self._handshakes:
                        scope.cancel()
                    for connection in self._connections:
                        connection.close(
                            CloseCode.GOING_AWAY, "server shutdown", drain=True, deadline=deadline
                        )
                    nursery.cancel_scope.deadline = deadline
                # Every connection is gone: nothing left to flush or time.
                self._webhooks.stopping()
                outer.cancel_scope.cancel()
        finally:
            self._outer = None
            with trio.CancelScope(shield=True):
                # The last events (disconnects, vacated filters) get one try.
                with trio.move_on_after(DRAIN_SECONDS):
                    await self._webhooks.drain()
                await self._webhooks.aclose()
                await self.pipeline.aclose()  # each plugin within plugin_timeout

    async def _retire(self, pipeline: Pipeline) -> None:
        """Close a pipeline a reload replaced, once the hooks it was running had their time
        (a shutdown meanwhile closes it at once)."""
        try:
            await trio.sleep(self.config.server.plugin_timeout)
        finally:
            with trio.CancelScope(shield=True):
                await pipeline.aclose()

    async def _lame_duck_when_asked(self, accepting: trio.CancelScope) -> None:
        await self._lame_duck_requested.wait()
        if self._stopping:
            return
        self._lame_duck = True
        accepting.cancel()  # the listeners close: load balancers send clients elsewhere
        duration = self.config.server.lame_duck_duration
        leaving = list(self._connections)
        log.info("lame duck: closing %d clients over %g s", len(leaving), duration)
        # Evenly spread, so that clients reconnecting elsewhere do not come all at once.
        started = trio.current_time()
        for index, connection in enumerate(leaving):
            await trio.sleep_until(started + duration * index / len(leaving))
            connection.close(CloseCode.GOING_AWAY, "lame duck", drain=True)
        self.stop()

    def _addresses_refusal(self, limits: AddressLimits, address: str) -> Refusal | None:
        """Admit ``address`` (release it later) or say why not."""
        reason = limits.admit(address, trio.current_time())
        return None if reason is None else refusals.limit_refusal(reason)

    async def _accept(
        self,
        scope: trio.CancelScope,
        nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with scope:
            # Closes the listeners when cancelled.
            await accept_connections(
                self.listeners, self._handle_stream, nursery, task_status=task_status
            )

    def _refusal(self, path: str, config: Config, *, stream: bool = False) -> Refusal | None:
        return refusals.endpoint_refusal(
            path,
            handshake.STREAM_PATH if stream else config.server.path,
            stopping=self._stopping,
            taken=self._slots_taken,
            max_connections=config.limits.max_connections,
        )

    async def _authorize_stream(
        self, identity: Identity, view: HandshakeRequest, config: Config
    ) -> encodings.WireFormat | Refusal:
        """An event stream's filters, each authorized as a subscribe would be: the stream's
        own wire format (which says what to subscribe to once it is accepted), or why not."""
        limits = config.limits
        try:
            asked = sse.stream_request(
                view.query, view.header("last-event-id"), limits.max_subscriptions
            )
        except sse.BadStream as bad:
            return Refusal(400, str(bad))
        client = Client(view.client_id, identity, view.remote_address)
        for topic_filter in asked.filters:
            try:
                check_filter(topic_filter, limits.max_topic_length)
                await self.pipeline.authorize_subscribe(client, topic_filter)
            except TopicError as error:
                return Refusal(400, f"topic {topic_filter[:100]!r}: {error}")
            except Refuse as refusal:
                reason = f"subscribing to {topic_filter[:100]!r}: {refusal.message}"
                return Refusal(refusal.status, reason)
            except PluginFailure:
                return Refusal(500, "authorization failed")
        return encodings.WireFormat(outgoing=self._sse_frames.frame, stream=asked)

    async def _authenticate(self, request: HandshakeRequest) -> Identity | Refusal:
        try:
            return await self.pipeline.authenticate(request)
        except Refuse as refusal:
            return Refusal(refusal.status, refusal.message)
        except PluginFailure:
            return Refusal(500, "authentication failed")

    async def _handshake(
        self, stream: trio.abc.Stream, config: Config, remote: str, proxy: IPAddress | None
    ) -> _Accepted | None:
        """The client once it is accepted (and holds a slot).

        Nothing of the handshake is kept: its state (an HTTP parser and its
        buffers) would otherwise stay for the whole life of the connection. From a
        trusted ``proxy``, the client's address comes from the request, and the
        per-address limits are checked here, on that address.
        """
        try:
            received = await receive_request(stream)
        except HandshakeFailed as failure:
            log.debug("bad handshake from %s: %s", remote, failure.refusal.reason)
            await self._refuse(stream, failure.refusal)
            return None
        if received is None:
            return None
        request = received.request
        view = plugin_view(request, remote, self._client_ids.next())
        address = None
        if proxy is not None:
            client = self._forwarded_client(view, config, proxy, remote)
            view = attrs.evolve(view, remote_address=client)
            remote = f"{client} via {remote}"
            address = address_key(client)
            refused = self._addresses_refusal(self._addresses, address)
            if refused is not None:
                log.info("refused %s: %d %s", remote, refused.status, refused.reason)
                await self._refuse(stream, refused)
                return None
        accepted = None
        try:
            agreement = deflate.negotiate(request.extensions) if config.server.compression else None
            msgpack = encodings.choose_subprotocol(request.subprotocols) == encodings.MSGPACK
            wire_format = self._wire_format(msgpack, agreement)
            decided = await self._decide(
                stream, request, view, config, remote, agreement, wire_format
            )
            if decided is not None:
                identity, client_id, response, wire_format = decided
                accepted = _Accepted(
                    identity,
                    client_id,
                    response,
                    received.after,
                    remote,
                    view.remote_address,
                    address,
                    wire_format,
                )
            return accepted
        finally:
            if accepted is None and address is not None:
                self._addresses.release(address)

    async def _admit_user(
        self, identity: Identity, client_id: str, config: Config
    ) -> Identity | Refusal:
        """The identity, counted among its user's connections, or why not."""
        limit = config.limits.max_connections_per_user
        if not limit or identity.user is None:
            return identity
        try:
            admitted = await self.engine.admit_user(identity.user, client_id, limit)
        except ProtocolError as error:
            return Refusal(503, f"cannot count the user's connections: {error.message}")
        if admitted:
            return identity
        return Refusal(
            429,
            f"user {identity.user[:100]!r} has {limit} connections already "
            "([limits] max_connections_per_user)",
            refusals.RETRY_AFTER,
        )

    def _forwarded_client(
        self, view: HandshakeRequest, config: Config, proxy: IPAddress, remote: str
    ) -> str:
        header = config.server.proxy_header
        values = [value for name, value in view.headers if name == header.lower()]
        if not values and not self._warned_of_missing_proxy_header:
            self._warned_of_missing_proxy_header = True
            log.warning(
                "trusted proxy %s sent no %s header: the clients behind it count as the "
                "proxy's own address (have the proxy set it, see README)",
                remote,
                header,
            )
        return str(client_address(proxy, header, values, self._proxies))

    async def _decide(
        self,
        stream: trio.abc.Stream,
        request: handshake.UpgradeRequest,
        view: HandshakeRequest,
        config: Config,
        remote: str,
        agreement: deflate.Agreement | None,
        wire_format: encodings.WireFormat,
    ) -> tuple[Identity, str, bytes, encodings.WireFormat] | None:
        """Refuse or accept the request; if accepted (a slot taken), the identity, the
        client id and the response to send: the 101 and the welcome."""
        outcome = (
            self._refusal(view.path, config, stream=request.stream)
            or refusals.origin_refusal(
                view.origin, view.header("host") or "", config.server.allowed_origins
            )
            or await self._authenticate(view)
        )
        if isinstance(outcome, Identity) and request.stream:
            authorized = await self._authorize_stream(outcome, view, config)
            if isinstance(authorized, Refusal):
                outcome = authorized
            else:
                wire_format = authorized
        if isinstance(outcome, Identity):
            outcome = await self._admit_user(outcome, view.client_id, config)
        # Checked again: other handshakes may have taken the last slots meanwhile.
        again = self._refusal(view.path, config, stream=request.stream)
        if isinstance(outcome, Identity) and again:
            if outcome.user is not None:
                self.engine.release_user(outcome.user, view.client_id)
            outcome = again
        if isinstance(outcome, Refusal):
            log.info("refused %s: %d %s", remote, outcome.status, outcome.reason)
            await self._refuse(stream, outcome)
            return None
        self._slots_taken += 1
        client_id = view.client_id
        welcome = protocol.encode_welcome(client_id, SERVER_NAME, outcome.expires_at)
        if request.stream:
            response = sse.response_head(view.origin)
            return outcome, client_id, response, wire_format
        extensions = None if agreement is None else agreement.header()
        response = handshake.accept_response(request, extensions)
        response += wire_format.first(text_frame(welcome))
        return outcome, client_id, response, wire_format

    async def _handshake_in_time(
        self, stream: trio.abc.Stream, config: Config, remote: str, proxy: IPAddress | None
    ) -> _Accepted | None:
        with trio.move_on_after(config.server.handshake_timeout) as scope:
            self._handshakes.add(scope)
            try:
                return await self._handshake(stream, config, remote, proxy)
            finally:
                self._handshakes.discard(scope)
        log.debug("handshake from %s did not complete in time", remote)
        return None

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        # One function from accept to close: every coroutine frame in this chain is
        # held by every idle connection for as long as it lives.
        host, remote = peer(stream)
        client: trio.abc.Stream = stream
        if self._tls is not None:
            # The TLS handshake runs on the first read, within handshake_timeout.
            client = TlsStream(stream, self._tls)
        # A trusted proxy's clients are counted by the address its request names.
        proxy = parse_address(host) if self._proxies else None
        if not self._proxies.trusts(proxy):
            proxy = None
        address = None if proxy else address_key(host)
        if address is not None:
            refused = self._addresses_refusal(self._addresses, address)
            if refused is not None:
                self.stats.handshake_refusals[refused.status] += 1
                try:
                    timeout = self.config.server.handshake_timeout
                    await refuse_early(client, remote, refused, timeout)
                finally:  # the stream is this handler's to close (`accepting`)
                    await trio.aclose_forcefully(client)
                return
        try:
            accepted = await self._handshake_in_time(client, self.config, remote, proxy)
            if accepted is None:
                return
            address = address or accepted.address
            remote = accepted.remote
            config = self.config
            assert self._outer is not None  # handshakes end before serve does
            connection = ClientConnection(
                client,
                accepted.received,
                client_id=accepted.client_id,
                remote=remote,
                remote_address=accepted.remote_address,
                identity=accepted.identity,
                engine=self.engine,
                pipeline=self._current_pipeline,
                server=config.server,
                limits=config.limits,
                timers=self.timers,
                flusher=self.flusher,
                stats=self.stats,
                writers=self._outer,
                wire_format=accepted.wire_format,
            )
            # Counted before the client hears it is welcome.
            self._connections.add(connection)
            event_stream = int(connection.wire_format.stream is not None)
            self._streams += event_stream
            self.engine.events.connected(
                connection.client_id,
                connection.client.identity.user,
                connection.client.remote_address,
            )
            log.debug("client %s connected from %s", connection.client_id, remote)
            try:
                await send_all_soon(client, accepted.response, config.server.handshake_timeout)
                del accepted  # this frame lives as long as the connection: nothing spare in it
                if self._stopping:
                    connection.close(CloseCode.GOING_AWAY, "server shutdown")
                await connection.run()
            finally:
                self._connections.discard(connection)
                self._streams -= event_stream
                self._slots_taken -= 1
                if (user := connection.client.identity.user) is not None:
                    self.engine.release_user(user, connection.client_id)
                self.engine.events.disconnected(
                    connection.client_id, connection.client.identity.user, connection.close_code
                )
                log.debug(
                    "client %s (%s) disconnected, close code %s",
                    connection.client_id,
                    remote,
                    connection.close_code,
                )
        except* (trio.BrokenResourceError, trio.ClosedResourceError) as group:
            log.debug("connection from %s broke: %r", remote, group.exceptions)
        except* Exception:
            log.exception("internal error on the connection from %s", remote)
        finally:
            if address is not None:
                self._addresses.release(address)
            await trio.aclose_forcefully(client)

    async def _refuse(self, stream: trio.abc.SendStream, refusal: Refusal) -> None:
        self.stats.handshake_refusals[refusal.status] += 1
        await stream.send_all(handshake.http_error(refusal))


@asynccontextmanager
async def open_broker(config: Config) -> AsyncIterator[Broker]:
    """Run a broker for the duration of the block; leaving it shuts the broker down."""
    broker = Broker(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.serve)
        try:
            yield broker
        finally:
            broker.stop()

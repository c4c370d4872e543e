"""The client: requests with promised replies, a bounded stream of deliveries, reconnection.

One task (in the ``connect`` block's task group) reads the connection: replies resolve the
request waiting for them, deliveries go to a bounded queue the application reads with
`Client.messages`. A full queue stops the reading (TCP then holds the broker back, and a
broker closes a consumer that stays that slow), so memory stays bounded.

After a dropped connection the client reconnects with exponential backoff and jitter,
subscribes again to every filter it holds, from the last position it saw on each, and puts a
`RecoveryFailed` in the stream where the broker could not replay everything missed.
"""

import itertools
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..core.topics import matches
from ..wire import protocol
from ..wire.close_codes import CloseCode
from . import codecs, events
from .errors import BrokerError, ClientError, ConnectionLost, HandshakeRefused
from .events import Event, Message, RecoveryFailed
from .websocket import WebSocket

log = logging.getLogger("broker.client")

DEFAULT_URL = "ws://127.0.0.1:8080/ws"
SEEN = 10_000
# A refresh goes out this many seconds before expiry, or at three quarters of a shorter
# lifetime.
REFRESH_MARGIN = 30.0

TokenSource = Callable[[], Awaitable[str]]


def refresh_delay(expires_at: float, now: float) -> float:
    """Seconds from ``now`` until credentials expiring at ``expires_at`` are renewed."""
    left = expires_at - now
    return max(0.0, left - min(REFRESH_MARGIN, left / 4))


@attrs.frozen
class Subscribed:
    pos: str | None  # the position now (filters covering topics with history)
    recovered: bool | None  # with ``since``: whether everything after it was replayed


@attrs.frozen
class HistoryAfter:
    """One page of `Client.history_after`."""

    messages: list[Message]  # the oldest after the position, oldest first
    recovered: bool  # False: messages after the position are gone for good
    more: bool  # True: ask again from ``messages[-1].pos`` for the next page
    pos: str | None  # the position now


class _Waiter:
    __slots__ = ("done", "error", "reply")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.reply: dict[str, Any] | None = None
        self.error: ClientError | None = None

    async def result(self) -> dict[str, Any]:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        if self.reply.get("op") == "error":
            raise BrokerError(self.reply.get("code", "?"), self.reply.get("message", ""))
        return self.reply


class Client:
    """Made by `connect`; use it inside the ``async with`` block."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        get_token: TokenSource | None,
        headers: Mapping[str, str],
        reconnect: bool,
        max_queued: int,
        ssl_context: ssl.SSLContext | None,
        request_timeout: float,
        backoff: tuple[float, float],
        encoding: str = "json",
    ) -> None:
        self.url = url
        self._codec = codecs.codec(encoding)
        self.token = token
        self.expires_at: float | None = None  # Unix seconds, as the broker said
        self.client_id: str | None = None
        self._get_token = get_token
        self._need_token = token is None and get_token is not None
        self._headers = dict(headers)
        self._reconnect = reconnect
        self._ssl_context = ssl_context
        self._request_timeout = request_timeout
        self._backoff = backoff
        self._ids = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._positions: dict[str, str | None] = {}  # filters held: the last position seen
        # Filters the server subscribed this client to: whether it did so again on the
        # current connection (connect-time channels are; the control API's are not).
        self._by_server: dict[str, bool] = {}
        self._seen: dict[str, None] = {}  # the latest positions delivered, oldest first
        self._ws: WebSocket | None = None
        self._ws_lost = anyio.Event()  # set once the reader took in that _ws is gone
        self._connected = anyio.Event()
        self._ended: ClientError | None = None
        self._send: MemoryObjectSendStream[Event]
        self._receive: MemoryObjectReceiveStream[Event]
        self._send, self._receive = anyio.create_memory_object_stream[Event](max_queued)

    # The connection.

    async def _open(self) -> WebSocket:
        if self._get_token is not None and self._need_token:
            self.token = await self._get_token()
            self._need_token = False
        headers = [("Authorization", f"Bearer {self.token}")] if self.token else []
        headers += list(self._headers.items())
        ws = await WebSocket.connect(self.url, headers, self._ssl_context, self._codec.subprotocol)
        try:
            with anyio.fail_after(self._request_timeout):
                (welcome, *rest) = await ws.receive()
        except BaseException:
            await ws.aclose()
            raise
        welcome_fields = self._codec.decode(welcome) or {}
        self._by_server = dict.fromkeys(self._by_server, False)
        self.client_id = welcome_fields.get("client_id")
        self.expires_at = welcome_fields.get("expires_at")
        self._ws, self._ws_lost = ws, anyio.Event()
        self._connected.set()
        for text in rest:
            await self._handle(text)
        return ws

    async def _run(self, ws: WebSocket) -> None:
        reconnected = False
        while True:
            async with anyio.create_task_group() as group:
                if reconnected:
                    group.start_soon(self._subscribe_again)
                group.start_soon(self._keep_credentials)
                lost = await self._read(ws)
                group.cancel_scope.cancel()
            self._lost(lost)
            await ws.aclose()
            expired = lost.code == CloseCode.TOKEN_EXPIRED
            # Without get_token, reconnecting with expired credentials is hopeless; and the
            # application's backend may say not to come back (4003; 4002 says do).
            banned = lost.code == CloseCode.DISCONNECTED_DO_NOT_RECONNECT
            if not self._reconnect or banned or (expired and self._get_token is None):
                self._end(lost)
                return
            self._need_token = expired
            try:
                ws = await self._connect_again()
            except ClientError as error:
                self._end(error)
                return
            reconnected = True

    async def _read(self, ws: WebSocket) -> ConnectionLost:
        try:
            while True:
                for text in await ws.receive():
                    await self._handle(text)
        except ConnectionLost as lost:
            return lost

    def _lost(self, lost: ConnectionLost) -> None:
        self._ws_lost.set()
        self._ws = None
        self._connected = anyio.Event()
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.error = lost
            waiter.done.set()
        log.info("connection to %s lost: %s", self.url, lost)

    def _end(self, error: ClientError) -> None:
        """No more connections: the stream ends (with ``error``, once read to its end)."""
        self._ended = error
        self._connected.set()  # requests waiting for a connection find out
        self._send.close()

    async def _connect_again(self) -> WebSocket:
        delay, ceiling = self._backoff
        while True:
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            try:
                return await self._open()
            except HandshakeRefused as refused:
                renewable = refused.status == 401 and self._get_token is not None
                if refused.permanent and not renewable:
                    raise
                self._need_token = renewable
                log.info("reconnecting to %s: %s", self.url, refused)
            except (OSError, ConnectionLost, TimeoutError) as error:
                log.info("reconnecting to %s: %s", self.url, error)
            except Exception as error:  # get_token's: the application's own code
                log.warning("reconnecting to %s: get_token failed: %r", self.url, error)
            delay = min(delay * 2, ceiling)

    async def _keep_credentials(self) -> None:
        """With get_token: refresh the connection's credentials before they expire."""
        if self._get_token is None:
            return
        while self.expires_at is not None:
            await anyio.sleep(refresh_delay(self.expires_at, time.time()))
            try:
                await self.refresh(await self._get_token())
            except Exception as error:  # get_token's included: the application's own code
                # The broker closes the connection at expiry (4001); a new one gets a token.
                log.warning("refreshing the credentials for %s: %r", self.url, error)
                return

    async def _subscribe_again(self) -> None:
        try:
            # Its answer comes after the subscriptions the server makes at connect.
            await self._request(protocol.Ping())
        except (ConnectionLost, TimeoutError) as error:
            log.info("subscribing again: %s", error)
            return
        for topic_filter, pos in list(self._positions.items()):
            if self._by_server.get(topic_filter):
                continue  # the server made it again
            self._by_server.pop(topic_filter, None)  # now the client's own
            try:
                reply = await self._request(protocol.Subscribe(topic_filter, since=pos))
            except (ConnectionLost, TimeoutError) as error:
                log.info("subscribing again to %r: %s", topic_filter, error)
                return  # the next connection tries again
            except BrokerError as error:
                # Not allowed any more (new credentials, new rules): the filter is gone.
                log.warning("subscribing again to %r: %s", topic_filter, error)
                self._positions.pop(topic_filter, None)
                await self._send.send(RecoveryFailed(topic_filter))
                continue
            if pos is not None and reply.get("recovered") is False:
                await self._send.send(RecoveryFailed(topic_filter))
            if self._positions.get(topic_filter) is None and "pos" in reply:
                self._positions[topic_filter] = reply["pos"]

    async def _handle(self, text: str | bytes) -> None:
        reply = self._codec.decode(text)
        if reply is None:
            return
        op = reply.get("op")
        if op == "message":
            message = events.message(reply)
            if message.pos is not None:
                # Filters that overlap each replay a message after a reconnection.
                if message.pos in self._seen:
                    return
                self._seen[message.pos] = None
                if len(self._seen) > SEEN:
                    del self._seen[next(iter(self._seen))]
                for topic_filter in self._positions:
                    if matches(topic_filter, message.topic):
                        self._positions[topic_filter] = message.pos
            await self._send.send(message)
        elif op in ("join", "leave"):
            await self._send.send(events.membership(reply))
        elif op in ("subscribed", "unsubscribed"):
            event = events.server_subscription(reply)
            if event.op == "subscribed":
                self._by_server[event.topic] = True
                self._positions[event.topic] = event.pos or self._positions.get(event.topic)
            else:
                self._by_server.pop(event.topic, None)
                self._positions.pop(event.topic, None)
            await self._send.send(event)
        elif isinstance(reply.get("id"), int) and reply["id"] in self._waiters:
            waiter = self._waiters.pop(reply["id"])
            waiter.reply = reply
            waiter.done.set()
        elif op == "error":
            # A request without an id failed (a publish a cluster took before it was done).
            log.warning("error from %s: %s %s", self.url, reply.get("code"), reply.get("message"))

    # Requests.

    async def _start(self, request: protocol.Request) -> _Waiter:
        """Send ``request`` now, in order with the others; its reply comes to the waiter."""
        with anyio.fail_after(self._request_timeout):
            while self._ws is None:
                if self._ended is not None:
                    raise self._ended
                await self._connected.wait()
        ws, ws_lost = self._ws, self._ws_lost
        request_id = next(self._ids)
        waiter = self._waiters[request_id] = _Waiter()
        try:
            await ws.send(self._codec.encode(attrs.evolve(request, id=request_id)))
        except ConnectionLost as lost:
            self._waiters.pop(request_id, None)
            # Once the reader took it in, a request made again waits for the next
            # connection rather than failing on this one again.
            with anyio.move_on_after(self._request_timeout):
                await ws_lost.wait()
            raise lost from None
        return waiter

    async def _request(self, request: protocol.Request) -> dict[str, Any]:
        waiter = await self._start(request)
        with anyio.fail_after(self._request_timeout):
            return await waiter.result()

    async def _idempotent(self, request: protocol.Request) -> dict[str, Any]:
        """A request that may be made twice: one the connection dropped under is made
        again on the next connection (while the client reconnects)."""
        while True:
            try:
                return await self._request(request)
            except ConnectionLost:
                if not self._reconnect:
                    raise

    async def subscribe(self, topic_filter: str, *, since: str | None = None) -> Subscribed:
        """Deliver messages on topics matching ``topic_filter`` (from after ``since``, a
        position, first those retained); held across reconnections.

        A replay comes through `messages` before the ack: when it may hold more than
        ``max_queued`` messages, read them in another task meanwhile."""
        reply = await self._idempotent(protocol.Subscribe(topic_filter, since=since))
        self._positions[topic_filter] = reply.get("pos", since)
        return Subscribed(reply.get("pos"), reply.get("recovered"))

    async def unsubscribe(self, topic_filter: str) -> None:
        self._positions.pop(topic_filter, None)
        await self._idempotent(protocol.Unsubscribe(topic_filter))

    async def publish(self, topic: str, data: Any) -> None:
        """Publish; returns once the broker acked it, raises BrokerError if it refused."""
        await (await self.start_publish(topic, data)).result()

    async def start_publish(self, topic: str, data: Any) -> "PendingAck":
        """Send a publish now and return without waiting for its ack: for pipelining many
        (they go out in the order of these calls); await `PendingAck.result` for each."""
        return PendingAck(await self._start(protocol.Publish(topic, data)))

    async def history(self, topic_filter: str, limit: int | None = None) -> list[Message]:
        reply = await self._idempotent(protocol.History(topic_filter, limit))
        return [events.message(fields) for fields in reply["messages"]]

    async def history_after(
        self, topic_filter: str, since: str, limit: int | None = None
    ) -> HistoryAfter:
        """The messages published after the position ``since``, a page at a time
        (docs/protocol.md: history with ``since``)."""
        reply = await self._idempotent(protocol.History(topic_filter, limit, since=since))
        messages = [events.message(fields) for fields in reply["messages"]]
        return HistoryAfter(messages, reply["recovered"], reply["more"], reply.get("pos"))

    async def presence(self, topic: str) -> list[dict[str, Any]]:
        """The clients subscribed to exactly ``topic``: ``{"client_id", "user"}`` each."""
        reply = await self._idempotent(protocol.Presence(topic))
        clients: list[dict[str, Any]] = reply["clients"]
        return clients

    async def refresh(self, token: str) -> float | None:
        """New credentials for this connection (and the next ones); when they expire."""
        reply = await self._request(protocol.Refresh(token))
        self.token = token
        self.expires_at = reply.get("expires_at")
        return self.expires_at

    async def ping(self) -> None:
        await self._idempotent(protocol.Ping())

    async def receive(self) -> Event:
        """The next delivery (or `Membership`, `RecoveryFailed` event). Raises
        StopAsyncIteration once the client is closed, or why it ended on its own (no
        reconnecting, or the broker refused it)."""
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self._ended is not None and not isinstance(self._ended, _Closed):
                raise self._ended from None
            raise StopAsyncIteration from None

    def messages(self) -> "_Events":
        """``async for event in client.messages()``: `receive` until the end."""
        return _Events(self)

    async def _close(self) -> None:
        self._reconnect = False
        ws, self._ws = self._ws, None
        if self._ended is None:
            self._end(_Closed("the client was closed"))
        if ws is not None:
            await ws.aclose()


class _Events:
    # An iterator, not an async generator: leaving the loop early needs no clean-up.
    def __init__(self, client: Client) -> None:
        self._client = client

    def __aiter__(self) -> "_Events":
        return self

    async def __anext__(self) -> Event:
        return await self._client.receive()


class PendingAck:
    def __init__(self, waiter: _Waiter) -> None:
        self._waiter = waiter

    async def result(self) -> None:
        await self._waiter.result()


class _Closed(ConnectionLost):
    """The application left the ``connect`` block."""


@asynccontextmanager
async def connect(
    url: str = DEFAULT_URL,
    *,
    token: str | None = None,
    get_token: TokenSource | None = None,
    headers: Mapping[str, str] | None = None,
    reconnect: bool = True,
    max_queued: int = 1000,
    ssl_context: ssl.SSLContext | None = None,
    request_timeout: float = 10.0,
    backoff: tuple[float, float] = (0.1, 10.0),
    encoding: str = "json",
) -> AsyncIterator[Client]:
    """Connect to the broker at ``url`` for the duration of the block.

    The first connection must succeed (HandshakeRefused, OSError or ConnectionLost
    otherwise); later ones are retried with exponential backoff between ``backoff`` seconds
    (with jitter), unless ``reconnect`` is False. ``max_queued`` deliveries wait for
    `Client.messages` at most.

    ``get_token`` (an async function returning a new token, asked before the first
    connection when ``token`` is None) keeps credentials that expire valid: they are
    refreshed on the open connection before they expire, and renewed before reconnecting
    when the broker closed with 4001 or refused the handshake with 401. Without it, an
    expired token ends the client (the stream raises `ConnectionLost` with code 4001).

    ``encoding`` "msgpack" speaks the trio-broker.msgpack subprotocol (MessagePack in
    binary frames; needs the msgpack package) instead of JSON.
    """
    client = Client(
        url,
        token=token,
        get_token=get_token,
        headers=headers or {},
        reconnect=reconnect,
        max_queued=max_queued,
        ssl_context=ssl_context,
        request_timeout=request_timeout,
        backoff=backoff,
        encoding=encoding,
    )
    ws = await client._open()
    raised: BaseException | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(client._run, ws)
        try:
            yield client
        except BaseException as error:
            # Raised again below, as itself: not wrapped in the task group's ExceptionGroup.
            raised = error
        finally:
            group.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await client._close()
    if raised is not None:
        raise raised

"""One Redis of the Redis engine: its commands, and the node's subscriptions there.

Commands go through coredis' pool, each bounded by ``redis_timeout``; a Redis that
cannot answer makes the request fail with ``unavailable`` (the client may retry).

Subscriptions: one pub/sub connection per shard, kept by `run` for the life of the
node. Local subscribers say what they want (`want`, counted per subscription) and
when they stop (`unwant`); one task, the reconciler, alone sends SUBSCRIBE and
UNSUBSCRIBE, so that the two never race. `want` returns once Redis confirmed every
channel and pattern: from then on nothing published there can pass the node by.
When the connection breaks, the node reconnects with backoff, and the new connection
subscribes to everything wanted at that moment; what was published in between is
lost for live delivery (clients with history recover it).
"""

import contextlib
import itertools
import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import coredis
import trio
from coredis.patterns.pubsub import PubSub
from coredis.response.types import PubSubMessage
from coredis.retry import NoRetryPolicy

from ..config import redis_urls
from ..config.schema import redact_url
from ..wire.protocol import ProtocolError
from .batches import Batcher, Build, Pending, add_to_pipeline
from .failures import FAILURES, describe, is_read_only, unavailable
from .names import Interest, InterestCounts
from .sentinel import SentinelLink

log = logging.getLogger("broker.redis")

T = TypeVar("T")

FIRST_BACKOFF = 0.1
MAX_BURST = 1000
MAX_BACKOFF = 5.0

OnMessage = Callable[[bytes, bytes], Awaitable[None]]


class Shard:
    def __init__(
        self,
        index: int,
        url: str,
        *,
        password: str | None,
        sentinel_password: str | None,
        timeout: float,
        max_backlog: int,
        marker_channel: str,
    ) -> None:
        self.index = index
        self.timeout = timeout
        self.max_backlog = max_backlog
        self._sentinel: SentinelLink | None = None
        if redis_urls.is_sentinel(url):
            self._sentinel = SentinelLink(
                redis_urls.parse_sentinel(url),
                password=password,
                sentinel_password=sentinel_password,
                timeout=timeout,
            )
            self.url = str(self._sentinel.url)
            self.client: coredis.Redis[bytes] = self._sentinel.client
        else:
            self.url = redact_url(url)
            options: dict[str, Any] = {"stream_timeout": timeout, "connect_timeout": timeout}
            if password is not None:
                options["password"] = password
            self.client = coredis.Redis.from_url(url, **options)
        # Set when the sentinels switched our master: reconnect now, not after the backoff.
        self._switched = trio.Event()
        self.counts = InterestCounts()
        self.down_reason: str | None = "not connected yet"
        self.outages = 0
        self._said_unreachable = False
        self._channels: set[str] = set()  # confirmed by Redis on the current connection
        self._patterns: set[str] = set()
        self._wanted_changed = trio.Event()
        self._progress = trio.Event()  # set and replaced when confirmed or up/down change
        self._batcher = Batcher()
        # This node's own channel, subscribed in every session beside what clients want:
        # markers that commands publish behind the messages before them (`expect_marker`).
        self.marker_channel = marker_channel
        self._marker_channel = marker_channel.encode()
        self._markers: dict[bytes, Callable[[], None]] = {}
        self._marker_numbers = itertools.count()

    @property
    def up(self) -> bool:
        return self.down_reason is None

    def __repr__(self) -> str:
        return f"<Shard {self.index} {self.url}>"

    # Commands.

    async def call(self, command: Callable[[], Awaitable[T]]) -> T:
        """Run one command, or raise ProtocolError ``unavailable``."""
        if self.down_reason is not None:
            raise unavailable(self.down_reason)
        try:
            with trio.fail_after(self.timeout):
                return await command()
        except trio.TooSlowError:
            raise unavailable(f"no answer in {self.timeout:g} s") from None
        except FAILURES as error:
            raise self._failed(error) from None

    async def submit(
        self, build: Build | None = None, publish: tuple[str, bytes, bytes] | None = None
    ) -> Pending:
        """Queue a command for the next batch (`broker.cluster.batches`); ``unavailable``
        at once while Redis is down."""
        if self.down_reason is not None:
            raise unavailable(self.down_reason)
        return await self._batcher.submit(build, publish)

    async def _send_batches(self) -> None:
        while True:
            batch = await self._batcher.next_batch()
            try:
                with trio.fail_after(self.timeout):
                    async with self.client.pipeline(
                        transaction=False, raise_on_error=False, timeout=self.timeout
                    ) as pipe:
                        answered = add_to_pipeline(batch, pipe)
                results = pipe.results or ()
            except trio.TooSlowError:
                failure = unavailable(f"no answer in {self.timeout:g} s")
                for pending in batch:
                    pending.finish(None, failure)
                continue
            except FAILURES as error:
                failure = self._failed(error)
                for pending in batch:
                    pending.finish(None, failure)
                continue
            for run, result in zip(answered, results, strict=True):
                for pending in run:
                    if isinstance(result, BaseException):
                        pending.finish(None, self._failed(result))
                    else:
                        pending.finish(result, None)

    # Failovers (Sentinel).

    def _master_switched(self, address: str) -> None:
        """The sentinels made ``address`` the master: drop every connection (one still
        open to the old master would write to a replica, or wait on a dead one)."""
        log.warning("redis shard %d (%s): the master is now %s", self.index, self.url, address)
        self._reconnect()

    def _reconnect(self) -> None:
        self.client.connection_pool.disconnect()  # the pub/sub connection too: it ends
        self._switched.set()

    def _failed(self, error: BaseException) -> ProtocolError:
        """A command's failure, as the request sees it; a write refused by a replica means
        a failover happened: find the master again."""
        if is_read_only(error) and self._sentinel is not None:
            self._reconnect()
        return unavailable(describe(error))

    # Markers.

    def expect_marker(self, arrived: Callable[[], None]) -> bytes:
        """A token for a command to publish on `marker_channel`; ``arrived`` is called
        when it comes back on the pub/sub connection, behind every message that Redis
        sent this node before the command ran. Never called if the pub/sub session ends
        first: what that session had not delivered is gone, but the marker may have
        been published before the next session subscribed."""
        token = str(next(self._marker_numbers)).encode()
        self._markers[token] = arrived
        return token

    def forget_marker(self, token: bytes) -> None:
        """The command failed: its marker may never come."""
        self._markers.pop(token, None)

    # Subscriptions.

    async def want(self, interest: Interest) -> None:
        """Count ``interest`` in and wait until Redis confirmed it (else ``unavailable``)."""
        self.counts.add(interest)
        self._wanted_changed.set()
        try:
            with trio.fail_after(self.timeout):
                while not self._confirmed(interest):
                    if self.down_reason is not None:
                        raise unavailable(self.down_reason)
                    await self._progress.wait()
        except trio.TooSlowError:
            self.unwant(interest)
            raise unavailable(f"no subscription in {self.timeout:g} s") from None
        except BaseException:
            self.unwant(interest)
            raise

    def unwant(self, interest: Interest) -> None:
        if self.counts.remove(interest) != Interest():
            self._wanted_changed.set()

    def _confirmed(self, interest: Interest) -> bool:
        return self._channels.issuperset(interest.channels) and self._patterns.issuperset(
            interest.patterns
        )

    def _made_progress(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def _reconcile(self, pubsub: "_PubSub") -> None:
        while True:
            await self._wanted_changed.wait()
            self._wanted_changed = trio.Event()
            wanted_channels = set(self.counts.channels)
            wanted_patterns = set(self.counts.patterns)
            # Forgotten before they are sent: a `want` meanwhile waits for the next round.
            gone_channels = self._channels - wanted_channels
            gone_patterns = self._patterns - wanted_patterns
            self._channels -= gone_channels
            self._patterns -= gone_patterns
            if gone_channels:
                await pubsub.unsubscribe(*gone_channels)
            if gone_patterns:
                await pubsub.punsubscribe(*gone_patterns)
            new_channels = wanted_channels - self._channels
            new_patterns = wanted_patterns - self._patterns
            if new_channels:
                await pubsub.subscribe(*new_channels)
                self._channels |= new_channels
            if new_patterns:
                await pubsub.psubscribe(*new_patterns)
                self._patterns |= new_patterns
            self._made_progress()

    # The connection.

    async def run(
        self,
        on_message: OnMessage,
        on_up: Callable[["Shard"], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep the pub/sub connection up (with backoff) until cancelled; started once
        the first attempt to connect succeeded or failed."""
        started = False

        def first_outcome() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        try:
            async with contextlib.AsyncExitStack() as stack:
                if self._sentinel is not None:
                    await stack.enter_async_context(self._sentinel.sentinel)
                await stack.enter_async_context(self.client)
                nursery = await stack.enter_async_context(trio.open_nursery())
                nursery.start_soon(self._send_batches)
                if self._sentinel is not None:
                    nursery.start_soon(self._sentinel.watch, self._master_switched)
                await self._keep_connected(on_message, on_up, first_outcome)
        finally:
            self.down_reason = "the broker is stopping"
            self._made_progress()

    async def _keep_connected(
        self,
        on_message: OnMessage,
        on_up: Callable[["Shard"], None],
        first_outcome: Callable[[], None],
    ) -> None:
        backoff = FIRST_BACKOFF
        while True:
            started = trio.current_time()
            try:
                await self._session(on_message, on_up, first_outcome)
            except* (FellBehind, *FAILURES) as group:
                reason = self._explained(describe(group))
            except* trio.TooSlowError:
                reason = f"no answer in {self.timeout:g} s"
            if trio.current_time() - started > MAX_BACKOFF:
                backoff = FIRST_BACKOFF  # it was up for a while: try again soon
            self._went_down(reason)
            first_outcome()
            with trio.move_on_after(backoff * random.uniform(0.5, 1.0)):
                await self._switched.wait()  # a failover: the new master is there now
            self._switched = trio.Event()
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _session(
        self,
        on_message: OnMessage,
        on_up: Callable[["Shard"], None],
        first_outcome: Callable[[], None],
    ) -> None:
        channels, patterns = set(self.counts.channels), set(self.counts.patterns)
        pubsub = _PubSub(
            self.client.connection_pool,
            ignore_subscribe_messages=True,
            retry_policy=NoRetryPolicy(),
            channels=[*channels, self.marker_channel],
            patterns=list(patterns),
            subscription_timeout=self.timeout,
            unsubscription_timeout=self.timeout,
        )
        # The deadline bounds connecting and subscribing only.
        with trio.CancelScope(deadline=trio.current_time() + self.timeout) as connecting:
            async with pubsub:
                connecting.deadline = math.inf
                self._channels, self._patterns = channels, patterns
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._reconcile, pubsub)
                        self._wanted_changed.set()  # what changed while it connected
                        self._came_up()
                        on_up(self)
                        first_outcome()
                        await self._read(pubsub, on_message)
                finally:
                    self._channels, self._patterns = set(), set()
                    self._markers.clear()
        if connecting.cancelled_caught:
            raise TimeoutError(f"no connection in {self.timeout:g} s")

    async def _read(self, pubsub: "_PubSub", on_message: OnMessage) -> None:
        last = None
        while True:
            burst = await _burst(pubsub)
            # coredis queues what Redis sends without bound: past the limit, start again
            # from now rather than grow (the session ends; the node resubscribes).
            backlog = len(burst) + pubsub.backlog()
            if backlog > self.max_backlog:
                raise FellBehind(
                    f"this node fell {backlog} messages behind ([cluster] max_backlog = "
                    f"{self.max_backlog}): its subscribers want more than it delivers"
                )
            for message in burst:
                if message is None or message["type"] not in ("message", "pmessage"):
                    continue
                data = message["data"]
                channel = message["channel"]
                if channel == self._marker_channel:
                    assert isinstance(data, bytes)
                    arrived = self._markers.pop(data, None)
                    if arrived is not None:
                        arrived()
                    continue
                # One publish matching several of our subscriptions arrives once for each,
                # one right after the other on this connection.
                if data == last:
                    continue
                last = data
                assert isinstance(channel, bytes) and isinstance(data, bytes)
                await on_message(channel, data)

    def _came_up(self) -> None:
        if self._said_unreachable:
            log.warning("redis shard %d (%s) is back", self.index, self.url)
        self._said_unreachable = False
        self.down_reason = None
        self._made_progress()

    def _explained(self, reason: str) -> str:
        """Redis' own words, and what to do when they are about a missing password."""
        if "auth" not in reason.lower():
            return reason
        keys = "redis_password_file"
        if self._sentinel is not None:
            keys += " for Redis, redis_sentinel_password_file for the sentinels"
        return f"{reason} (a password is missing or wrong: [cluster] {keys})"

    def _went_down(self, reason: str) -> None:
        if self.down_reason is None:
            self.outages += 1
            log.warning("redis shard %d (%s) is unavailable: %s", self.index, self.url, reason)
        elif not self._said_unreachable:
            log.warning("redis shard %d (%s) cannot be reached: %s", self.index, self.url, reason)
        self._said_unreachable = True
        self.down_reason = reason
        self._batcher.fail_all(unavailable(reason))
        self._made_progress()


async def _burst(pubsub: "_PubSub") -> list[PubSubMessage | None]:
    """The next message and those right behind it, delivered together: each delivery
    then writes a subscriber's share of the whole burst at once (the flusher runs
    after), not one write per message. coredis hands received messages over one per
    checkpoint, so take them while each checkpoint brings more."""
    burst = [await pubsub.get_message()]
    while len(burst) < MAX_BURST:
        try:
            burst.append(pubsub.get_message_nowait())
        except anyio.WouldBlock:
            await trio.lowlevel.checkpoint()
            try:
                burst.append(pubsub.get_message_nowait())
            except anyio.WouldBlock:
                break
    return burst


class FellBehind(Exception):
    """More messages from Redis wait for this node than ``[cluster] max_backlog``."""


class _PubSub(PubSub[bytes]):
    def get_message_nowait(self) -> PubSubMessage | None:
        """A message received already (anyio.WouldBlock if none): `get_message` without
        its checkpoint. coredis' receive stream is private; tests/cluster/test_cluster.py fails
        if this stops working."""
        return self._receive_stream.receive_nowait()

    def backlog(self) -> int:
        """Messages received from Redis and not taken yet: in coredis' two queues (the
        connection's, then this object's; private too, see above)."""
        waiting = self._receive_stream.statistics().current_buffer_used
        connection = self.connection
        if connection is not None:
            waiting += connection._push_message_buffer_in.statistics().current_buffer_used
        return waiting

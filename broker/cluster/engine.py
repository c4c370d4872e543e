"""The engine of a cluster: nodes (and workers) share topics, history and presence in Redis.

A publish is one round trip to the topic's shard: a plain PUBLISH, or on a topic with
history one Lua script that gives the next offset, appends to the topic's stream and
publishes, atomically (`broker.cluster.scripts`). Every node, the publishing one too,
delivers what it receives through its subscriptions, which follow its local
subscribers' filters (`broker.cluster.shard`): so every node delivers a shard's
messages in one order, that of their offsets, and a client's last position means
"everything before it" wherever it reconnects. The publisher waits for Redis, not
for subscribers: a node whose subscriber is full waits for it (up to its
slow-consumer timeout) while reading that shard.

Positions are ``EPOCH:OFFSET`` as with the memory engine, the epoch that of the shard
the topic lives on. A subscribe with ``since`` first makes sure the node's Redis
subscription is confirmed, then reads the retained messages up to the offset of that
moment; live deliveries that the replay already holds, still on their way through the
node's pub/sub connection, are dropped when they arrive (`broker.core.snapshots`).
"""

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import trio
from coredis.patterns.pipeline import Pipeline as RedisPipeline

from ..config.schema import Config, ConfigError
from ..core.presence import PresenceTable
from ..core.snapshots import Snapshot
from ..core.stats import Link, Stats
from ..core.topics import has_wildcard, matches
from ..engine.interface import Recovery
from ..engine.local import LocalPart
from ..engine.publishing import publication_of
from ..engine.router import Subscriber
from ..plugin import Client, Publication
from ..plugin_host.pipeline import Pipeline
from ..wire import protocol
from ..wire.frames import text_frame
from ..wire.positions import Position, new_epoch, parse_position
from ..wire.protocol import ProtocolError
from . import scripts as redis_scripts
from . import wire as cluster_wire
from .names import Interest, Names
from .shard import Shard

log = logging.getLogger("broker.redis")

PRESENCE_RENEWALS_PER_TTL = 3


def read_password(key: str, path: str | None) -> str | None:
    """The first line of the file that ``[cluster] key`` names."""
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()[0]
    except (OSError, UnicodeDecodeError, IndexError) as error:
        reason = getattr(error, "strerror", None) or "empty or unreadable"
        raise ConfigError("<config>", [f"cluster.{key}: {path!r}: {reason}"]) from None


def _pairs(items: list[Any], start: int, count: int) -> list[tuple[int, bytes]]:
    return [(int(items[start + 2 * i]), items[start + 2 * i + 1]) for i in range(count)]


def _as_message(payload: bytes) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(payload)
    del message["op"]
    return message


class RedisEngine(LocalPart):
    """The `Engine` of a cluster: every node on the same Redis (or shards) is one broker.

    ``run`` keeps a `Shard` per Redis connected; requests that need Redis while it is
    away raise ProtocolError ``unavailable``. ``pipeline`` gives the current plugins, for
    the delivery filters of messages from other nodes.
    """

    def __init__(self, config: Config, stats: Stats, pipeline: Callable[[], Pipeline]) -> None:
        cluster = config.cluster
        super().__init__(config)
        self.stats = stats
        self._pipeline = pipeline
        self.node = secrets.token_hex(4)
        self._headers = cluster_wire.Headers(self.node)
        password = read_password("redis_password_file", cluster.redis_password_file)
        sentinel_password = read_password(
            "redis_sentinel_password_file", cluster.redis_sentinel_password_file
        )
        urls = cluster.redis_urls
        self.names = Names(cluster.prefix, len(urls))
        self.shards = [
            Shard(
                index,
                url,
                password=password,
                sentinel_password=sentinel_password,
                timeout=cluster.redis_timeout,
                max_backlog=cluster.max_backlog,
                marker_channel=self.names.marker_channel(self.node),
            )
            for index, url in enumerate(urls)
        ]
        self._presence_ttl_ms = int(cluster.presence_ttl * 1000)
        self._local_presence = PresenceTable()  # this node's clients: renewed in Redis
        self._rejoin: set[int] = set()  # shards that came back: present everyone again
        self._rejoin_wanted = trio.Event()
        self._scripts = {
            name: [shard.client.register_script(text) for shard in self.shards]
            for name, text in redis_scripts.SCRIPTS.items()
        }

    @property
    def unready_reason(self) -> str | None:
        for shard in self.shards:
            if shard.down_reason is not None:
                return f"redis shard {shard.index} ({shard.url}) unavailable: {shard.down_reason}"
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for shard in self.shards:
                await nursery.start(shard.run, self._received, self._came_up)
            nursery.start_soon(self._keep_presence)
            task_status.started()

    def _script(self, name: str, shard: Shard) -> Callable[..., Awaitable[Any]]:
        return self._scripts[name][shard.index]

    # What other nodes publish.

    async def _received(self, channel: bytes, data: bytes) -> None:
        received = cluster_wire.parse(data)
        if received is None:
            return
        if received.kind == cluster_wire.DELIVERED and received.node == self._headers.node:
            return  # ours: delivered here when published
        topic = self.names.topic_of(channel)
        for payload in cluster_wire.payloads(received):
            if received.kind == cluster_wire.EVENT:
                self.router.offer_all(topic, text_frame(payload))
            else:
                await self._deliver(topic, payload)

    async def _deliver(self, topic: str, payload: bytes) -> None:
        """Another node's publish (or, on a topic with history, any node's)."""
        frame = text_frame(payload)
        accepts = None
        pipeline = self._pipeline()
        if pipeline.filters_deliveries:
            publication = publication_of(payload)

            async def accepts(subscriber: Subscriber) -> bool:
                return await pipeline.filter_delivery(subscriber.client, publication)

        reached = await self.router.publish(topic, frame, accepts)
        self.stats.fanned_out(reached, len(frame))

    # Fan-out and history.

    async def subscribe(
        self, topic_filter: str, subscriber: Subscriber, since: str | None
    ) -> Recovery:
        self.router.subscribe(topic_filter, subscriber)
        wanted: list[tuple[Shard, Interest]] = []
        try:
            for index, interest in self.names.interest(topic_filter).items():
                shard = self.shards[index]
                await shard.want(interest)
                wanted.append((shard, interest))
            if not self.rules.history_possible(topic_filter):
                return Recovery([], since is None, None)
            return await self._recover(topic_filter, since)
        except BaseException:
            self.router.unsubscribe(topic_filter, subscriber)
            for shard, interest in wanted:
                shard.unwant(interest)
            raise

    def unsubscribe(self, topic_filter: str, subscriber: Subscriber) -> None:
        self.router.unsubscribe(topic_filter, subscriber)
        for index, interest in self.names.interest(topic_filter).items():
            self.shards[index].unwant(interest)

    def _shards_of(self, topic_filter: str) -> list[Shard]:
        if has_wildcard(topic_filter):
            return self.shards
        return [self.shards[self.names.shard_of(topic_filter)]]

    async def _topics(self, shard: Shard, topic_filter: str) -> list[str]:
        """The topics with history on ``shard`` that ``topic_filter`` matches."""
        if not has_wildcard(topic_filter):
            return [topic_filter]
        # Expired ones too (Redis' clock is not ours): their streams are simply gone.
        names = await shard.call(lambda: shard.client.zrange(self.names.topics, 0, -1))
        return [topic for name in names if matches(topic_filter, topic := name.decode())]

    async def _recover(self, topic_filter: str, since: str | None) -> Recovery:
        asked = None
        if since is not None:
            # A position it cannot read recovers nothing: everything retained, not recovered.
            asked = parse_position(since) or Position("", 0)
        found: list[tuple[int, bytes]] = []
        recovered = since is not None
        snapshot = Snapshot(topic_filter)
        position = None
        for shard in self._shards_of(topic_filter):
            marker = shard.expect_marker(snapshot.expect_marker())
            try:
                epoch, offset, pairs, complete = await self._recover_shard(
                    shard, topic_filter, asked, marker
                )
            except BaseException:
                shard.forget_marker(marker)
                raise
            snapshot.read_up_to(epoch, offset)
            position = position or f"{epoch}:{offset}"
            found.extend(pairs)
            recovered = recovered and complete
        found.sort()
        frames = [text_frame(payload) for _, payload in found]
        return Recovery(frames, since is None or recovered, position, snapshot)

    async def _recover_shard(
        self, shard: Shard, topic_filter: str, asked: Position | None, marker: bytes
    ) -> tuple[str, int, list[tuple[int, bytes]], bool]:
        """The shard's epoch and offset now, the retained messages after ``asked``
        (all of them if it is not a position of this shard), and whether that is all.
        The command that reads the offset publishes ``marker`` (`broker.core.snapshots`)."""
        recover = self._script("RECOVER", shard)
        keys = [*self.names.positions]

        async def run(after: int, upto: str, marker: bytes = b"") -> list[Any]:
            args = [new_epoch(), after, upto, shard.marker_channel, marker]
            return await shard.call(lambda: recover(keys=keys, args=args))

        head = None
        if asked is None or has_wildcard(topic_filter):
            # The position first: every message after it comes live, every one up to
            # it is in the streams read next (whose list may grow meanwhile).
            head = await run(0, "+", marker)
            if asked is None:
                return head[0].decode(), int(head[1]), [], False
        assert asked is not None
        upto = "+" if head is None else head[1].decode()
        topics = await self._topics(shard, topic_filter)
        keys += [self.names.stream(topic) for topic in topics]
        result = await run(asked.offset, upto, marker if head is None else b"")
        epoch, now_ms = result[0].decode(), int(result[2])
        offset = int(result[1]) if head is None else int(upto)
        if epoch != asked.epoch or asked.offset > offset:
            # Not a position of this history: everything retained, not recovered.
            if asked.offset:
                result = await run(0, upto)
            everything = [pair for _, _, pairs in _streams(result) for pair in pairs]
            return epoch, offset, everything, False
        found: list[tuple[int, bytes]] = []
        complete = True
        for topic, (exists, stream_complete, pairs) in zip(topics, _streams(result), strict=True):
            found.extend(pairs)
            if not exists:
                stream_complete = self._gone_stream_complete(topic, asked.offset, now_ms)
            complete = complete and stream_complete
        if has_wildcard(topic_filter):
            # A topic whose stream expired as a whole is not among `topics`.
            ttl = self.rules.shortest_ttl(topic_filter)
            complete = complete and now_ms - asked.offset // 1000 < ttl * 1000
        return epoch, offset, found, complete

    def _gone_stream_complete(self, topic: str, after: int, now_ms: int) -> bool:
        """A topic without a stream: nothing was lost unless the position is older than
        its TTL (the stream may have expired, taking messages after it along)."""
        options = self.rules.lookup(topic)
        ttl = options.history_ttl if options is not None else 0
        return not ttl or now_ms - after // 1000 < ttl * 1000

    async def publish(
        self,
        publication: Publication,
        accepts: Callable[[Subscriber], Awaitable[bool]] | None,
        on_failure: Callable[[ProtocolError], None] | None = None,
    ) -> int | None:
        """Queued for the topic's shard (`broker.cluster.batches`); with ``on_failure``,
        returns without waiting for Redis' answer. On a topic without history this
        node delivers to its own subscribers at once, as the memory engine does (with
        backpressure), and skips the copy Redis sends back. On a topic with history
        every node, this one too, delivers what Redis sends: so a shard's messages
        reach every node in one order, that of their offsets, and a client's last
        position means "everything before it" wherever it reconnects."""
        topic = publication.topic
        shard = self.shards[self.names.shard_of(topic)]
        channel = self.names.channel(topic)
        options = self.rules.lookup(topic)
        local = None
        if options is None or not options.history_size:
            payload = protocol.encode_message(topic, publication.data, publication.meta)
            local = text_frame(payload)
            header = self._headers.next(cluster_wire.DELIVERED)
            pending = await shard.submit(publish=(channel, header, payload))
        else:
            head, tail = protocol.encode_message_around_pos(
                topic, publication.data, publication.meta
            )
            script = self._scripts["PUBLISH"][shard.index]
            keys = [*self.names.positions, self.names.stream(topic), self.names.topics]
            args: list[str | bytes | int] = [
                new_epoch(),
                channel,
                self._headers.next(cluster_wire.MESSAGE),
                head,
                tail,
                options.history_size,
                int(options.history_ttl * 1000),
                topic,
            ]

            def build(pipe: RedisPipeline[bytes]) -> object:
                return script(keys=keys, args=args, client=pipe)

            pending = await shard.submit(build)
        self.stats.published += 1
        if local is not None:
            reached = await self.router.publish(topic, local, accepts)
            self.stats.fanned_out(reached, len(local))
        if on_failure is not None:
            pending.on_failure = on_failure
            return None
        result = await pending.outcome()
        return int(result if isinstance(result, int) else result[2])

    async def history(
        self, topic_filter: str, limit: int, max_bytes: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        if not self.rules.history_possible(topic_filter):
            return [], None
        found: list[tuple[int, bytes]] = []
        position = None
        for shard in self._shards_of(topic_filter):
            shard_position, pairs = await self._newest(shard, topic_filter, limit)
            position = position or shard_position
            found.extend(pairs)
        found.sort()
        found = found[-limit:]
        # One reply is one message in the client's queue: it holds what the queue would.
        size, first = 0, len(found)
        while first and size + len(text_frame(found[first - 1][1])) <= max_bytes:
            first -= 1
            size += len(text_frame(found[first][1]))
        return [_as_message(payload) for _, payload in found[first:]], position

    async def _newest(
        self, shard: Shard, topic_filter: str, limit: int
    ) -> tuple[str, list[tuple[int, bytes]]]:
        topics = await self._topics(shard, topic_filter)
        newest = self._script("NEWEST", shard)
        keys = [*self.names.positions]
        keys += [self.names.stream(topic) for topic in topics]
        result = await shard.call(lambda: newest(keys=keys, args=[new_epoch(), limit]))
        found: list[tuple[int, bytes]] = []
        index = 2
        for _ in topics:
            count = int(result[index])
            found.extend(_pairs(result, index + 1, count))
            index += 1 + 2 * count
        return f"{result[0].decode()}:{int(result[1])}", found

    # Presence.

    async def presence(self, topic: str) -> list[dict[str, Any]]:
        shard = self.shards[self.names.shard_of(topic)]
        members = self._script("MEMBERS", shard)
        keys = [self.names.presence_expiry(topic), self.names.presence(topic)]
        flat = await shard.call(lambda: members(keys=keys, args=[]))
        return [
            {"client_id": flat[i].decode(), "user": json.loads(flat[i + 1])}
            for i in range(0, len(flat), 2)
        ]

    async def _membership(self, op: str, topic: str, client: Client, announce: bool = True) -> None:
        options = self.rules.lookup(topic)
        if options is None or not (options.presence or options.join_leave):
            return
        user = client.identity.user
        event = b""
        if options.join_leave and announce:
            event = protocol.encode_membership(op, topic, client.client_id, user)
        shard = self.shards[self.names.shard_of(topic)]
        channel = self.names.channel(topic)
        wire = self._headers.next(cluster_wire.EVENT) + event if event else b""
        try:
            if options.presence:
                if op == "join":
                    self._local_presence.join(topic, client.client_id, user)
                    await self._present(shard, topic, client.client_id, user, wire)
                else:
                    self._local_presence.leave(topic, client.client_id)
                    leave = self._script("LEAVE", shard)
                    keys = [self.names.presence_expiry(topic), self.names.presence(topic)]
                    await shard.call(
                        lambda: leave(keys=keys, args=[client.client_id, channel, wire])
                    )
            elif event:
                await shard.call(lambda: shard.client.publish(channel, wire))
        except protocol.ProtocolError as error:
            # Never fails the request: presence heals when Redis is back, events are lost.
            log.info("%s of %s on %r not shared: %s", op, client.client_id, topic, error.message)
            return

    async def _present(
        self, shard: Shard, topic: str, client_id: str, user: str | None, wire: bytes
    ) -> None:
        join = self._script("JOIN", shard)
        keys = [self.names.presence_expiry(topic), self.names.presence(topic)]
        args = [client_id, json.dumps(user), self._presence_ttl_ms, self.names.channel(topic), wire]
        await shard.call(lambda: join(keys=keys, args=args))

    def _came_up(self, shard: Shard) -> None:
        if shard.outages:  # it was down: Redis may have lost what we told it
            self._rejoin.add(shard.index)
            self._rejoin_wanted.set()

    async def _keep_presence(self) -> None:
        """Renew this node's presence entries, so that a dead node's expire; after an
        outage, present every local client again."""
        interval = self._presence_ttl_ms / 1000 / PRESENCE_RENEWALS_PER_TTL
        while True:
            with trio.move_on_after(interval):
                await self._rejoin_wanted.wait()
            self._rejoin_wanted = trio.Event()
            rejoin, self._rejoin = self._rejoin, set()
            for topic, members in self._local_presence.topics():
                shard = self.shards[self.names.shard_of(topic)]
                try:
                    if shard.index in rejoin:
                        for client_id, user in list(members.items()):
                            await self._present(shard, topic, client_id, user, b"")
                    else:
                        await self._renew(shard, topic, members)
                except protocol.ProtocolError as error:
                    log.debug("presence of %r not renewed: %s", topic, error.message)

    async def _renew(self, shard: Shard, topic: str, members: Iterable[str]) -> None:
        renew = self._script("RENEW", shard)
        keys = [self.names.presence_expiry(topic), self.names.presence(topic)]
        args = [self._presence_ttl_ms, *members]
        await shard.call(lambda: renew(keys=keys, args=args))

    # Statistics.

    @property
    def retained(self) -> tuple[int, int]:
        return 0, 0  # kept in Redis: its INFO says how much

    def links(self) -> list[Link]:
        return [Link(str(shard.index), shard.up, shard.outages) for shard in self.shards]


def _streams(result: list[Any]) -> Iterator[tuple[bool, bool, list[tuple[int, bytes]]]]:
    """RECOVER's answer per stream: whether it exists, whether it is complete, and its
    (offset, payload) pairs."""
    index = 3
    while index < len(result):
        exists, complete, count = (int(value) for value in result[index : index + 3])
        yield bool(exists), bool(complete), _pairs(result, index + 3, count)
        index += 3 + 2 * count

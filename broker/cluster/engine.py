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

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from coredis.patterns.pipeline import Pipeline as RedisPipeline

from ..config.schema import Config
from ..config.secret_files import first_line
from ..core.snapshots import Snapshot
from ..core.stats import Link, Stats
from ..core.topics import has_wildcard, matches
from ..engine.history_page import HistoryPage, newest_page, page_after
from ..engine.interface import Answers, Recovery
from ..engine.local import LocalPart
from ..engine.publishing import publication_of
from ..engine.router import Subscriber
from ..plugin import Client, Publication
from ..plugin_host.pipeline import Pipeline
from ..wire import protocol
from ..wire.frames import text_frame
from ..wire.positions import Position, new_epoch, parse_position
from ..wire.protocol import ErrorCode, ProtocolError
from . import commands, replies
from . import scripts as redis_scripts
from . import wire as cluster_wire
from .names import Interest, Names
from .occupancy import ClusterOccupancy
from .presence import ClusterPresence
from .shard import Shard
from .user_limits import ClusterUserLimits

log = logging.getLogger("broker.redis")


class _Gathering:
    """The answers to one broadcast, complete once as many as Redis delivered it to."""

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        self.complete = trio.Event()
        self._expected: int | None = None

    def add(self, answer: dict[str, Any]) -> None:
        self.answers.append(answer)
        self._check()

    def expect(self, count: int) -> None:
        self._expected = count
        self._check()

    def _check(self) -> None:
        if self._expected is not None and len(self.answers) >= self._expected:
            self.complete.set()


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
        self._headers = cluster_wire.Headers(self.node)
        password = first_line("cluster.redis_password_file", cluster.redis_password_file)
        sentinel_password = first_line(
            "cluster.redis_sentinel_password_file", cluster.redis_sentinel_password_file
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
        self._scripts = {
            name: [shard.client.register_script(text) for shard in self.shards]
            for name, text in redis_scripts.SCRIPTS.items()
        }
        self._presence = ClusterPresence(
            self.shards, self.names, self._script, self._headers, cluster.presence_ttl
        )
        self._timeout = cluster.redis_timeout
        self._commands_channel = self.names.commands.encode()
        self._answers_channel = self.names.answers(self.node).encode()
        self._gatherings: dict[str, _Gathering] = {}
        self._listening = trio.Event()
        self._user_limits = ClusterUserLimits(
            self.shards, self.names, self._script, cluster.presence_ttl
        )
        self._occupancy = ClusterOccupancy(
            self.shards,
            self.names,
            self._script,
            self.node,
            cluster.presence_ttl,
            self.events,
            self.router.filters,
        )

    @property
    def unready_reason(self) -> str | None:
        for shard in self.shards:
            if shard.down_reason is not None:
                return f"redis shard {shard.index} ({shard.url}) unavailable: {shard.down_reason}"
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery  # the control commands this node answers run here
            for shard in self.shards:
                await nursery.start(shard.run, self._received, self._presence.came_up)
            nursery.start_soon(self._presence.keep)
            nursery.start_soon(self._occupancy.run)
            nursery.start_soon(self._user_limits.run)
            nursery.start_soon(self._listen_for_commands)
            task_status.started()

    def _script(self, name: str, shard: Shard) -> Callable[..., Awaitable[Any]]:
        return self._scripts[name][shard.index]

    # The control API's commands (cluster/commands.py), on the first shard.

    async def _listen_for_commands(self) -> None:
        interest = Interest(channels=(self.names.commands, self.names.answers(self.node)))
        while True:
            try:
                await self.shards[0].want(interest)
                break
            except ProtocolError:  # Redis is not there yet: the shard reconnects
                await trio.sleep(1)
        self._listening.set()

    async def _answer(self, command: commands.Command) -> None:
        try:
            answer = await self.run_command(command.command)
        except Exception:
            log.exception("control command %.200r failed", command.command)
            answer = {"error": "internal error"}
        shard = self.shards[0]
        channel = self.names.answers(command.sender)
        wire = commands.encode_answer(commands.Answer(command.request_id, self.node, answer))
        try:
            await shard.call(lambda: shard.client.publish(channel, wire))
        except ProtocolError as error:
            log.info("control command answer lost: %s", error.message)

    async def admit_user(self, user: str, client_id: str, limit: int) -> bool:
        return await self._user_limits.admit(user, client_id, limit)

    def release_user(self, user: str, client_id: str) -> None:
        self._user_limits.release(user, client_id)

    async def broadcast(self, command: dict[str, Any]) -> Answers:
        """Every node subscribed to the commands' channel answers: PUBLISH says how many
        got it, and the answers of those that took longer than ``redis_timeout`` are left
        out."""
        request_id = secrets.token_hex(8)
        gathering = self._gatherings[request_id] = _Gathering()
        try:
            with trio.move_on_after(self._timeout):
                await self._listening.wait()
            if not self._listening.is_set():
                raise ProtocolError(ErrorCode.UNAVAILABLE, "not listening for answers yet")
            shard = self.shards[0]
            wire = commands.encode_command(commands.Command(request_id, self.node, command))
            receivers = await shard.call(lambda: shard.client.publish(self.names.commands, wire))
            gathering.expect(int(receivers))
            with trio.move_on_after(self._timeout):
                await gathering.complete.wait()
            answers = list(gathering.answers)
            return Answers(answers, max(0, int(receivers) - len(answers)))
        finally:
            del self._gatherings[request_id]

    # What other nodes publish.

    async def _received(self, channel: bytes, data: bytes) -> None:
        if channel == self._commands_channel:
            if (command := commands.parse_command(data)) is not None:
                self._nursery.start_soon(self._answer, command)
            return
        if channel == self._answers_channel:
            answer = commands.parse_answer(data)
            gathering = None if answer is None else self._gatherings.get(answer.request_id)
            if answer is not None and gathering is not None:
                gathering.add({**answer.answer, "node": answer.node})
            return
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
        first = self.router.subscribe(topic_filter, subscriber)
        wanted: list[tuple[Shard, Interest]] = []
        try:
            for index, interest in self.names.interest(topic_filter).items():
                shard = self.shards[index]
                await shard.want(interest)
                wanted.append((shard, interest))
            if not self.rules.history_possible(topic_filter):
                recovery = Recovery([], since is None, None)
            else:
                recovery = await self._recover(topic_filter, since)
        except BaseException:
            self.router.unsubscribe(topic_filter, subscriber)
            for shard, interest in wanted:
                shard.unwant(interest)
            raise
        if first:
            self._occupancy.occupy_soon(topic_filter)
        return recovery

    def unsubscribe(self, topic_filter: str, subscriber: Subscriber) -> None:
        if self.router.unsubscribe(topic_filter, subscriber):
            self._occupancy.vacate_soon(topic_filter)
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
        snapshot = Snapshot(topic_filter)
        found, recovered, position = await self._after(topic_filter, since, snapshot)
        frames = [text_frame(payload) for _, payload in found]
        return Recovery(frames, since is None or recovered, position, snapshot)

    async def _after(
        self, topic_filter: str, since: str | None, snapshot: Snapshot | None
    ) -> tuple[list[tuple[int, bytes]], bool, str | None]:
        """The retained messages after ``since`` (none without it), oldest first; whether
        they are all there were; the position now. With a ``snapshot``, it learns which
        live deliveries they cover."""
        asked = None
        if since is not None:
            # A position it cannot read recovers nothing: everything retained, not recovered.
            asked = parse_position(since) or Position("", 0)
        found: list[tuple[int, bytes]] = []
        recovered = since is not None
        position = None
        for shard in self._shards_of(topic_filter):
            marker = b"" if snapshot is None else shard.expect_marker(snapshot.expect_marker())
            try:
                epoch, offset, pairs, complete = await self._recover_shard(
                    shard, topic_filter, asked, marker
                )
            except BaseException:
                shard.forget_marker(marker)
                raise
            if snapshot is not None:
                snapshot.read_up_to(epoch, offset)
            position = position or f"{epoch}:{offset}"
            found.extend(pairs)
            recovered = recovered and complete
        found.sort()
        return found, recovered, position

    async def _recover_shard(
        self, shard: Shard, topic_filter: str, asked: Position | None, marker: bytes
    ) -> tuple[str, int, list[tuple[int, bytes]], bool]:
        """The shard's epoch and offset now, the retained messages after ``asked``
        (all of them if it is not a position of this shard), and whether that is all.
        The command that reads the offset publishes ``marker`` (`broker.core.snapshots`)."""
        recover = self._script("RECOVER", shard)
        keys = [*self.names.positions]

        async def run(after: int, upto: str, marker: bytes = b"") -> replies.Recovered:
            args = [new_epoch(), after, upto, shard.marker_channel, marker]
            return replies.Recovered.parse(await shard.call(lambda: recover(keys=keys, args=args)))

        head = None
        if asked is None or has_wildcard(topic_filter):
            # The position first: every message after it comes live, every one up to
            # it is in the streams read next (whose list may grow meanwhile).
            head = await run(0, "+", marker)
            if asked is None:
                return head.epoch, head.offset, [], False
        assert asked is not None
        upto = "+" if head is None else str(head.offset)
        topics = await self._topics(shard, topic_filter)
        keys += [self.names.stream(topic) for topic in topics]
        result = await run(asked.offset, upto, marker if head is None else b"")
        epoch, now_ms = result.epoch, result.now_ms
        offset = result.offset if head is None else int(upto)
        if epoch != asked.epoch or asked.offset > offset:
            # Not a position of this history: everything retained, not recovered.
            if asked.offset:
                result = await run(0, upto)
            everything = [pair for stream in result.streams for pair in stream.pairs]
            return epoch, offset, everything, False
        found: replies.Pairs = []
        complete = True
        for topic, stream in zip(topics, result.streams, strict=True):
            found.extend(stream.pairs)
            if stream.exists:
                complete = complete and stream.complete
            else:
                complete = complete and self._gone_stream_complete(topic, asked.offset, now_ms)
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
        self, topic_filter: str, limit: int, max_bytes: int, since: str | None = None
    ) -> HistoryPage:
        if not self.rules.history_possible(topic_filter):
            return HistoryPage([], None) if since is None else HistoryPage([], None, False, False)
        if since is not None:
            found, complete, position = await self._after(topic_filter, since, None)
            frames = [text_frame(payload) for _, payload in found]
            return page_after(frames, limit, max_bytes, position, complete)
        newest: list[tuple[int, bytes]] = []
        position = None
        for shard in self._shards_of(topic_filter):
            shard_position, pairs = await self._newest(shard, topic_filter, limit)
            position = position or shard_position
            newest.extend(pairs)
        newest.sort()
        frames = [text_frame(payload) for _, payload in (newest[-limit:] if limit else [])]
        return newest_page(frames, limit, max_bytes, position)

    async def _newest(
        self, shard: Shard, topic_filter: str, limit: int
    ) -> tuple[str, list[tuple[int, bytes]]]:
        topics = await self._topics(shard, topic_filter)
        newest = self._script("NEWEST", shard)
        keys = [*self.names.positions]
        keys += [self.names.stream(topic) for topic in topics]
        reply = await shard.call(lambda: newest(keys=keys, args=[new_epoch(), limit]))
        result = replies.Newest.parse(reply, len(topics))
        return result.position, result.pairs

    # Presence.

    async def presence(self, topic: str) -> list[dict[str, Any]]:
        return await self._presence.members(topic)

    async def _membership(self, op: str, topic: str, client: Client, announce: bool = True) -> None:
        options = self.rules.lookup(topic)
        if options is None or not (options.presence or options.join_leave):
            return
        await self._presence.change(
            op, topic, client, presence=options.presence, announce=options.join_leave and announce
        )

    # Statistics.

    @property
    def retained(self) -> tuple[int, int]:
        return 0, 0  # kept in Redis: its INFO says how much

    def links(self) -> list[Link]:
        return [Link(str(shard.index), shard.up, shard.outages) for shard in self.shards]

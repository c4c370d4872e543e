"""The engine of a single broker: everything in this process's memory."""

import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..config.schema import Config
from ..core.history import HistoryStore
from ..core.presence import PresenceTable
from ..core.stats import Link, Stats
from ..core.timers import Timer, Timers
from ..plugin import Client, Publication
from ..wire import protocol
from ..wire.frames import text_frame
from ..wire.positions import format_position, new_epoch, parse_position
from ..wire.protocol import ProtocolError
from .history_page import HistoryPage, newest_page, page_after
from .interface import Answers, Recovery
from .local import LocalPart
from .router import Subscriber


class MemoryEngine(LocalPart):
    """The `Engine` of a broker alone: everything in this process, nothing ever waits on
    I/O, and subscribing with recovery is one step without a yield (no `Snapshot`).

    History TTLs expire on ``timers``; ``stats`` counts publishes and deliveries.
    """

    def __init__(self, config: Config, timers: Timers, stats: Stats | None = None) -> None:
        super().__init__(config)
        self.stats = stats if stats is not None else Stats()
        self.epoch = new_epoch()
        self.store = HistoryStore(config.limits.max_history_bytes)
        self._presence = PresenceTable()
        self._user_connections: dict[str, set[str]] = {}  # admitted ones, by user
        self._timers = timers
        self._expiry: Timer | None = None

    def configure(self, config: Config) -> None:
        super().configure(config)
        self.store.max_bytes = config.limits.max_history_bytes

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # nothing in the background

    @property
    def unready_reason(self) -> str | None:
        return None

    def _position(self, offset: int) -> str:
        return format_position(self.epoch, offset)

    # Fan-out and history.

    async def subscribe(
        self, topic_filter: str, subscriber: Subscriber, since: str | None
    ) -> Recovery:
        # No await until the snapshot is taken: nothing can fall between it and the live
        # stream, which starts with the next offset.
        if self.router.subscribe(topic_filter, subscriber):
            self.events.filter("occupied", topic_filter)
        if not self.rules.history_possible(topic_filter):
            return Recovery([], since is None, None)
        now_at = self.store.offset
        position = self._position(now_at)
        if since is None:
            return Recovery([], True, position)
        asked = parse_position(since)
        now = trio.current_time()
        if asked is None or asked.epoch != self.epoch or asked.offset > now_at:
            retained, _ = self.store.after(topic_filter, 0, now)
            return Recovery([r.frame for r in retained], False, position)
        retained, complete = self.store.after(topic_filter, asked.offset, now)
        return Recovery([r.frame for r in retained], complete, position)

    async def admit_user(self, user: str, client_id: str, limit: int) -> bool:
        held = self._user_connections.setdefault(user, set())
        if len(held) >= limit:
            return False
        held.add(client_id)
        return True

    def release_user(self, user: str, client_id: str) -> None:
        held = self._user_connections.get(user)
        if held is not None:
            held.discard(client_id)
            if not held:
                del self._user_connections[user]

    async def broadcast(self, command: dict[str, Any]) -> Answers:
        """One node: this one."""
        return Answers([{"node": self.node, **await self.run_command(command)}])

    def unsubscribe(self, topic_filter: str, subscriber: Subscriber) -> None:
        if self.router.unsubscribe(topic_filter, subscriber):
            self.events.filter("vacated", topic_filter)

    async def publish(
        self,
        publication: Publication,
        accepts: Callable[[Subscriber], Awaitable[bool]] | None,
        on_failure: Callable[[ProtocolError], None] | None = None,
    ) -> int:
        topic = publication.topic
        options = self.rules.lookup(topic)
        if options is None or not options.history_size:
            frame = text_frame(protocol.encode_message(topic, publication.data, publication.meta))
            return await self._fan_out(topic, frame, accepts)
        offset = self.store.next_offset()
        payload = protocol.encode_message(
            topic, publication.data, publication.meta, self._position(offset)
        )
        frame = text_frame(payload)
        # Kept before it is fanned out: a subscriber recovering meanwhile finds it there.
        self.store.append(
            topic, offset, frame, options.history_size, options.history_ttl, trio.current_time()
        )
        self._schedule_expiry()
        return await self._fan_out(topic, frame, accepts)

    async def _fan_out(
        self, topic: str, frame: bytes, accepts: Callable[[Subscriber], Awaitable[bool]] | None
    ) -> int:
        reached = await self.router.publish(topic, frame, accepts)
        self.stats.delivered(reached, len(frame))
        return reached

    def _schedule_expiry(self) -> None:
        due = self.store.next_expiry
        if due == math.inf or (self._expiry is not None and self._expiry.when <= due):
            return
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = self._timers.call_at(due, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self.store.expire(trio.current_time())
        self._schedule_expiry()

    async def history(
        self, topic_filter: str, limit: int, max_bytes: int, since: str | None = None
    ) -> HistoryPage:
        if not self.rules.history_possible(topic_filter):
            return HistoryPage([], None) if since is None else HistoryPage([], None, False, False)
        now = trio.current_time()
        position = self._position(self.store.offset)
        if since is None:
            retained = self.store.newest(topic_filter, limit, now)
            return newest_page([r.frame for r in retained], limit, max_bytes, position)
        asked = parse_position(since)
        if asked is None or asked.epoch != self.epoch or asked.offset > self.store.offset:
            # Not a position of this history: from the oldest retained, not recovered.
            retained, complete = self.store.after(topic_filter, 0, now)[0], False
        else:
            retained, complete = self.store.after(topic_filter, asked.offset, now)
        return page_after([r.frame for r in retained], limit, max_bytes, position, complete)

    # Presence.

    async def presence(self, topic: str) -> list[dict[str, Any]]:
        return self._presence.members(topic)

    async def _membership(self, op: str, topic: str, client: Client, announce: bool = True) -> None:
        options = self.rules.lookup(topic)
        if options is None:
            return
        user = client.identity.user
        if options.presence:
            changed = (
                self._presence.join(topic, client.client_id, user)
                if op == "join"
                else self._presence.leave(topic, client.client_id)
            )
            if not changed:
                return
        if options.join_leave and announce:
            frame = text_frame(protocol.encode_membership(op, topic, client.client_id, user))
            self.router.offer_all(topic, frame)

    # Statistics.

    @property
    def retained(self) -> tuple[int, int]:
        return len(self.store), self.store.bytes

    def links(self) -> list[Link]:
        return []

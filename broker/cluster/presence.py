"""Presence and join/leave events across the nodes of a cluster.

Presence lives in Redis: a hash (client id to user) and an expiry set per topic, changed
by the JOIN, LEAVE and RENEW scripts, which also publish the join or leave event on the
topic's channel. Each node renews its own clients' entries every ``presence_ttl / 3``
seconds, so the clients of a node that died vanish within ``presence_ttl``; after a
shard's outage the node presents every client again (Redis may have lost them).
"""

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from ..core.presence import PresenceTable
from ..plugin import Client
from ..wire import protocol
from . import replies
from . import wire as cluster_wire
from .names import Names
from .shard import Shard

log = logging.getLogger("broker.redis")

RENEWALS_PER_TTL = 3

Script = Callable[[str, Shard], Callable[..., Awaitable[Any]]]


class ClusterPresence:
    def __init__(
        self,
        shards: list[Shard],
        names: Names,
        script: Script,
        headers: cluster_wire.Headers,
        ttl: float,
    ) -> None:
        self._shards = shards
        self._names = names
        self._script = script
        self._headers = headers
        self._ttl_ms = int(ttl * 1000)
        self._local = PresenceTable()  # this node's clients: renewed in Redis
        self._rejoin: set[int] = set()  # shards that came back: present everyone again
        self._rejoin_wanted = trio.Event()

    def _shard(self, topic: str) -> Shard:
        return self._shards[self._names.shard_of(topic)]

    def _keys(self, topic: str) -> list[str]:
        return [self._names.presence_expiry(topic), self._names.presence(topic)]

    async def members(self, topic: str) -> list[dict[str, Any]]:
        shard = self._shard(topic)
        script, keys = self._script("MEMBERS", shard), self._keys(topic)
        return replies.members(await shard.call(lambda: script(keys=keys, args=[])))

    async def change(
        self, op: str, topic: str, client: Client, *, presence: bool, announce: bool
    ) -> None:
        """``client`` joined or left ``topic``: its presence entry (with ``presence``) and
        the event (with ``announce``). Never fails the request: presence heals when Redis
        is back, and an event that could not be published is lost."""
        user = client.identity.user
        event = protocol.encode_membership(op, topic, client.client_id, user) if announce else b""
        shard = self._shard(topic)
        channel = self._names.channel(topic)
        wire = self._headers.next(cluster_wire.EVENT) + event if event else b""
        try:
            if presence and op == "join":
                self._local.join(topic, client.client_id, user)
                await self._present(shard, topic, client.client_id, user, wire)
            elif presence:
                self._local.leave(topic, client.client_id)
                leave, keys = self._script("LEAVE", shard), self._keys(topic)
                await shard.call(lambda: leave(keys=keys, args=[client.client_id, channel, wire]))
            elif event:
                await shard.call(lambda: shard.client.publish(channel, wire))
        except protocol.ProtocolError as error:
            log.info("%s of %s on %r not shared: %s", op, client.client_id, topic, error.message)

    async def _present(
        self, shard: Shard, topic: str, client_id: str, user: str | None, wire: bytes
    ) -> None:
        join, keys = self._script("JOIN", shard), self._keys(topic)
        args = [client_id, json.dumps(user), self._ttl_ms, self._names.channel(topic), wire]
        await shard.call(lambda: join(keys=keys, args=args))

    def came_up(self, shard: Shard) -> None:
        if shard.outages:  # it was down: Redis may have lost what we told it
            self._rejoin.add(shard.index)
            self._rejoin_wanted.set()

    async def keep(self) -> None:
        """Until cancelled: renew this node's entries, so that a dead node's expire; after
        an outage, present every local client again."""
        interval = self._ttl_ms / 1000 / RENEWALS_PER_TTL
        while True:
            with trio.move_on_after(interval):
                await self._rejoin_wanted.wait()
            self._rejoin_wanted = trio.Event()
            rejoin, self._rejoin = self._rejoin, set()
            for topic, members in self._local.topics():
                shard = self._shard(topic)
                try:
                    if shard.index in rejoin:
                        for client_id, user in list(members.items()):
                            await self._present(shard, topic, client_id, user, b"")
                    else:
                        await self._renew(shard, topic, members)
                except protocol.ProtocolError as error:
                    log.debug("presence of %r not renewed: %s", topic, error.message)

    async def _renew(self, shard: Shard, topic: str, members: Iterable[str]) -> None:
        renew, keys = self._script("RENEW", shard), self._keys(topic)
        args = [self._ttl_ms, *members]
        await shard.call(lambda: renew(keys=keys, args=args))

"""[limits] max_connections_per_user across the nodes of a cluster.

Each admitted connection of a user is an entry in Redis (``PREFIX:u:USER``), added by the
ADMIT_USER script only while the user has fewer than the limit, so two nodes admitting
at once cannot both pass it. Each node renews its entries every ``presence_ttl / 3``
seconds and removes them when the connections end; the entries of a node that died
expire within ``presence_ttl``: until then they still count (the user may be refused
although connected nowhere, never admitted past the limit).
"""

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..wire.protocol import ProtocolError
from .names import Names
from .shard import Shard

log = logging.getLogger("broker.redis")

RENEWALS_PER_TTL = 3
MAX_PENDING = 10_000  # releases waiting for Redis

Script = Callable[[str, Shard], Callable[..., Awaitable[Any]]]


class ClusterUserLimits:
    def __init__(self, shards: list[Shard], names: Names, script: Script, ttl: float) -> None:
        self._shards = shards
        self._names = names
        self._script = script
        self._ttl_ms = int(ttl * 1000)
        self._local: dict[str, set[str]] = {}  # user: this node's admitted client ids
        self._send, self._receive = trio.open_memory_channel[tuple[str, str]](MAX_PENDING)

    def _shard(self, user: str) -> Shard:
        return self._shards[self._names.shard_of(user)]

    async def admit(self, user: str, client_id: str, limit: int) -> bool:
        shard = self._shard(user)
        admit, keys = self._script("ADMIT_USER", shard), [self._names.user_connections(user)]
        args = [client_id, limit, self._ttl_ms]
        if not int(await shard.call(lambda: admit(keys=keys, args=args))):
            return False
        self._local.setdefault(user, set()).add(client_id)
        return True

    def release(self, user: str, client_id: str) -> None:
        held = self._local.get(user)
        if held is None or client_id not in held:
            return
        held.discard(client_id)
        if not held:
            del self._local[user]
        # Full: not renewed any more, the entry expires within presence_ttl.
        with contextlib.suppress(trio.WouldBlock):
            self._send.send_nowait((user, client_id))

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._renew)
            async for user, client_id in self._receive:
                shard = self._shard(user)
                key = self._names.user_connections(user)
                try:
                    await shard.call(lambda: shard.client.zrem(key, [client_id]))  # noqa: B023
                except ProtocolError as error:
                    log.debug("connection of %r not released: %s", user, error.message)

    async def _renew(self) -> None:
        while True:
            await trio.sleep(self._ttl_ms / 1000 / RENEWALS_PER_TTL)
            for user, client_ids in list(self._local.items()):
                shard = self._shard(user)
                renew = self._script("RENEW_USER", shard)
                keys = [self._names.user_connections(user)]
                args = [self._ttl_ms, *client_ids]
                try:
                    await shard.call(lambda: renew(keys=keys, args=args))  # noqa: B023
                except ProtocolError as error:
                    log.debug("connections of %r not renewed: %s", user, error.message)

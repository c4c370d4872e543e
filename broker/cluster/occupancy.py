"""Webhooks' ``occupied`` and ``vacated`` across the nodes of a cluster: once per
transition, whichever node sees it.

Each node claims, in Redis, the filters its local subscribers hold (on the shard the
filter's name hashes to), and renews its claims every ``presence_ttl / 3`` seconds. The
OCCUPY and VACATE scripts say atomically whether a claim made or ended a filter's
occupation, so exactly one node reports each transition. A node that dies without
vacating stops renewing: within ``presence_ttl`` a SWEEP on any node finds its filters'
claims expired and reports those nobody else holds as vacated.

One task applies every change in order (claims, renewals, sweeps), so that a renewal
never revives a filter just vacated. A change that cannot reach Redis, or that finds the
queue full, is not retried: the renewals and the sweep heal it (an ``occupied`` comes
with the next renewal, a ``vacated`` once the claim expires).
"""

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from ..core.webhooks import Events
from ..wire.protocol import ProtocolError
from .names import Names
from .shard import Shard

log = logging.getLogger("broker.redis")

RENEWALS_PER_TTL = 3
MAX_PENDING = 10_000  # changes waiting for Redis
CLAIMS_PER_CALL = 500  # filters per OCCUPY when renewing
SWEPT_PER_CALL = 1000

Script = Callable[[str, Shard], Callable[..., Awaitable[Any]]]
RENEW = ("renew", "")


class ClusterOccupancy:
    def __init__(
        self,
        shards: list[Shard],
        names: Names,
        script: Script,
        node: str,
        ttl: float,
        events: Events,
        held: Callable[[], Iterable[str]],
    ) -> None:
        self._shards = shards
        self._names = names
        self._script = script
        self._node = node
        self._ttl_ms = int(ttl * 1000)
        self._events = events
        self._held = held  # the filters this node's subscribers hold now
        self._send, self._receive = trio.open_memory_channel[tuple[str, str]](MAX_PENDING)
        self._warned_full = False

    @property
    def wanted(self) -> bool:
        return bool({"occupied", "vacated"} & self._events.wanted)

    def occupy_soon(self, topic_filter: str) -> None:
        """The first local subscriber of ``topic_filter`` came."""
        self._queue("occupy", topic_filter)

    def vacate_soon(self, topic_filter: str) -> None:
        """The last local subscriber of ``topic_filter`` left."""
        self._queue("vacate", topic_filter)

    def _queue(self, change: str, topic_filter: str) -> None:
        if not self.wanted:
            return
        try:
            self._send.send_nowait((change, topic_filter))
        except trio.WouldBlock:
            if not self._warned_full:
                self._warned_full = True
                log.warning(
                    "occupancy: %d changes wait for Redis; later ones are left to the "
                    "renewals and the sweep (occupied and vacated come late)",
                    MAX_PENDING,
                )

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tick)
            async for change, topic_filter in self._receive:
                try:
                    await self._apply(change, topic_filter)
                except ProtocolError as error:  # Redis unavailable: healed later
                    log.debug("occupancy: %s %r: %s", change, topic_filter, error.message)

    async def _tick(self) -> None:
        while True:
            await trio.sleep(self._ttl_ms / 1000 / RENEWALS_PER_TTL)
            if self.wanted:
                await self._send.send(RENEW)

    async def _apply(self, change: str, topic_filter: str) -> None:
        if change == "occupy":
            await self._occupy([topic_filter])
        elif change == "vacate":
            await self._vacate(topic_filter)
        else:
            await self._occupy(list(self._held()))
            for shard in self._shards:
                await self._sweep(shard)

    def _shard_of(self, topic_filter: str) -> Shard:
        return self._shards[self._names.shard_of(topic_filter)]

    async def _occupy(self, filters: list[str]) -> None:
        by_shard: dict[int, list[str]] = {}
        for topic_filter in filters:
            by_shard.setdefault(self._names.shard_of(topic_filter), []).append(topic_filter)
        for index, on_shard in by_shard.items():
            shard = self._shards[index]
            for start in range(0, len(on_shard), CLAIMS_PER_CALL):
                chunk = on_shard[start : start + CLAIMS_PER_CALL]
                results = await self._claim(shard, chunk)
                for topic_filter, result in zip(chunk, results, strict=True):
                    if int(result) == 2:  # its nodes had all died unannounced
                        self._events.filter("vacated", topic_filter)
                    if int(result) >= 1:
                        self._events.filter("occupied", topic_filter)

    async def _claim(self, shard: Shard, filters: list[str]) -> list[Any]:
        occupy = self._script("OCCUPY", shard)
        keys = [self._names.occupied, *map(self._names.occupants, filters)]
        args = [self._node, self._ttl_ms, *filters]
        results: list[Any] = await shard.call(lambda: occupy(keys=keys, args=args))
        return results

    async def _vacate(self, topic_filter: str) -> None:
        shard = self._shard_of(topic_filter)
        vacate = self._script("VACATE", shard)
        keys = [self._names.occupied, self._names.occupants(topic_filter)]
        args = [self._node, topic_filter]
        if int(await shard.call(lambda: vacate(keys=keys, args=args))):
            self._events.filter("vacated", topic_filter)

    async def _sweep(self, shard: Shard) -> None:
        sweep = self._script("SWEEP", shard)
        keys = [self._names.occupied]
        args = [self._names.occupants_prefix, SWEPT_PER_CALL]
        for topic_filter in await shard.call(lambda: sweep(keys=keys, args=args)):
            name = topic_filter.decode() if isinstance(topic_filter, bytes) else topic_filter
            self._events.filter("vacated", name)

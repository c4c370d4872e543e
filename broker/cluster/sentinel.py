"""A Redis found through Sentinel: its client, and the failovers to follow.

coredis asks the sentinels for the master's address whenever it opens a connection (and
checks with ROLE that it is talking to a master). What it does not do is hear that a
failover happened: connections open to a master that was demoted stay open (its writes
then fail with READONLY), and a node waiting out its reconnection backoff would wait on.
`SentinelLink.watch` listens to the sentinels' ``+switch-master`` channel, one sentinel
at a time, and tells the shard when the master it uses changed (`broker.cluster.shard`).
"""

import logging
import math
import random
from collections.abc import Callable
from typing import Any

import coredis
import trio
from coredis.connection import TCPLocation
from coredis.retry import NoRetryPolicy

from ..config.redis_urls import SentinelUrl
from .failures import FAILURES, describe

log = logging.getLogger("broker.redis")

SWITCH_CHANNEL = "+switch-master"
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0


def parse_switch(data: bytes) -> tuple[str, str] | None:
    """``+switch-master``'s ``NAME OLD_IP OLD_PORT NEW_IP NEW_PORT``: the master's name and
    its new address (``IP:PORT``); None for anything else."""
    fields = data.decode(errors="replace").split(" ")
    if len(fields) != 5 or not fields[4].isdigit():
        return None
    return fields[0], f"{fields[3]}:{fields[4]}"


class SentinelLink:
    def __init__(
        self,
        url: SentinelUrl,
        *,
        password: str | None,
        sentinel_password: str | None,
        timeout: float,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._backoff = FIRST_BACKOFF
        timeouts: dict[str, Any] = {"connect_timeout": timeout, "stream_timeout": timeout}
        for_sentinels = dict(timeouts)
        if sentinel_password is not None:
            for_sentinels["password"] = sentinel_password
        for_master = dict(timeouts, db=url.db)
        if password is not None:
            for_master["password"] = password
        self.sentinel: coredis.Sentinel[bytes] = coredis.Sentinel(
            [TCPLocation(host, port) for host, port in url.sentinels],
            sentinel_kwargs=for_sentinels,
            **for_master,
        )
        self.client: coredis.Redis[bytes] = self.sentinel.primary_for(url.master)

    async def watch(self, switched: Callable[[str], None]) -> None:
        """Until cancelled: call ``switched`` with the new address of our master whenever
        the sentinels announce a failover. Listens to the first sentinel that answers,
        the next one when it goes away."""
        while True:
            for sentinel in self.sentinel.sentinels:
                try:
                    await self._listen(sentinel, switched)
                except* FAILURES as group:  # coredis raises from inside its task groups
                    log.debug("sentinel %s: %s", sentinel, describe(group))
            await trio.sleep(self._backoff * random.uniform(0.5, 1.0))
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    async def _listen(
        self, sentinel: coredis.Redis[bytes], switched: Callable[[str], None]
    ) -> None:
        with trio.CancelScope(deadline=trio.current_time() + self.timeout) as subscribing:
            pubsub = sentinel.pubsub(
                channels=[SWITCH_CHANNEL],
                ignore_subscribe_messages=True,
                retry_policy=NoRetryPolicy(),
                subscription_timeout=self.timeout,
            )
            async with pubsub:
                subscribing.deadline = math.inf
                self._backoff = FIRST_BACKOFF  # it listened: when it goes, try again soon
                while True:
                    message = await pubsub.get_message()
                    if message is None or message["type"] != "message":
                        continue
                    data = message["data"]
                    switch = parse_switch(data) if isinstance(data, bytes) else None
                    if switch is not None and switch[0] == self.url.master:
                        switched(switch[1])
        if subscribing.cancelled_caught:
            raise TimeoutError(f"no subscription in {self.timeout:g} s")

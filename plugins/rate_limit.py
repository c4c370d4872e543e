"""rate_limit: token buckets on publishes, per connection and per user.

Each publish takes one token from the message bucket (refilled at
``messages_per_second``, holding at most ``burst``) and, with
``bytes_per_second``, the size of its JSON ``data`` from the byte bucket (holding at
most ``bytes_burst``, by default one second's worth). A publish finding a bucket
short is refused with ``rate_limited``; after ``close_after`` refusals in a row the
client is closed with 1008. Users' buckets are shared by all their connections
and forgotten when the last one ends.
"""

import json
from collections import Counter

import attrs
import trio

from broker.plugin import Client, ErrorCode, Plugin, Publication, Refuse


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity``; the caller supplies the time."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = now

    def can_take(self, amount: float, now: float) -> bool:
        self._refill(now)
        return self.tokens >= amount

    def take(self, amount: float) -> None:
        self.tokens -= amount


@attrs.frozen
class _Buckets:
    messages: TokenBucket
    bytes: TokenBucket | None


_positive = attrs.validators.gt(0)
_positive_or_none = attrs.validators.optional(_positive)


class RateLimit(Plugin):
    @attrs.frozen
    class Options:
        messages_per_second: float = attrs.field(validator=_positive)
        burst: int = attrs.field(default=10, validator=attrs.validators.ge(1))
        bytes_per_second: float | None = attrs.field(default=None, validator=_positive_or_none)
        bytes_burst: float | None = attrs.field(default=None, validator=_positive_or_none)
        per_connection: bool = True
        per_user: bool = True
        close_after: int = attrs.field(default=100, validator=attrs.validators.ge(1))

    options: Options

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self._connections: dict[str, _Buckets] = {}
        self._users: dict[str, _Buckets] = {}
        self._user_connections: Counter[str] = Counter()
        self._refusals: Counter[str] = Counter()

    def _new_buckets(self, now: float) -> _Buckets:
        options = self.options
        byte_bucket = None
        rate = options.bytes_per_second
        if rate is not None:
            byte_bucket = TokenBucket(rate, options.bytes_burst or rate, now)
        return _Buckets(TokenBucket(options.messages_per_second, options.burst, now), byte_bucket)

    def _buckets_for(self, client: Client, now: float) -> list[_Buckets]:
        found = []
        if self.options.per_connection:
            if client.client_id not in self._connections:
                self._connections[client.client_id] = self._new_buckets(now)
            found.append(self._connections[client.client_id])
        user = client.identity.user
        if self.options.per_user and user is not None:
            if user not in self._users:
                self._users[user] = self._new_buckets(now)
            found.append(self._users[user])
        return found

    async def on_connect(self, client: Client) -> None:
        if client.identity.user is not None:
            self._user_connections[client.identity.user] += 1

    async def on_disconnect(self, client: Client) -> None:
        self._connections.pop(client.client_id, None)
        self._refusals.pop(client.client_id, None)
        user = client.identity.user
        if user is not None:
            self._user_connections[user] -= 1
            if self._user_connections[user] <= 0:
                del self._user_connections[user]
                self._users.pop(user, None)

    async def authorize_publish(self, client: Client, publication: Publication) -> Publication:
        now = trio.current_time()
        buckets = self._buckets_for(client, now)
        size = 0
        if self.options.bytes_per_second is not None:
            size = len(json.dumps(publication.data, ensure_ascii=False).encode("utf-8", "replace"))
        allowed = all(
            b.messages.can_take(1, now) and (b.bytes is None or b.bytes.can_take(size, now))
            for b in buckets
        )
        if not allowed:
            self._refusals[client.client_id] += 1
            if self._refusals[client.client_id] >= self.options.close_after:
                raise Refuse("rate limit exceeded", code=ErrorCode.RATE_LIMITED, close_code=1008)
            raise Refuse("rate limit exceeded", code=ErrorCode.RATE_LIMITED)
        self._refusals.pop(client.client_id, None)
        for b in buckets:
            b.messages.take(1)
            if b.bytes is not None:
                b.bytes.take(size)
        return publication

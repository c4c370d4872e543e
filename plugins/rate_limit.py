"""rate_limit: token buckets on publishes, per connection and per user.

Each publish takes one token from the message bucket (refilled at
``messages_per_second``, holding at most ``burst``) and, with
``bytes_per_second``, the size of its JSON ``data`` from the byte bucket (holding at
most ``bytes_burst``, by default one second's worth). A publish finding a bucket
short is refused with ``rate_limited``; after ``close_after`` refusals in a row the
client is closed with 1008. Users' buckets are shared by all their connections.

Buckets unused for as long as they take to refill completely hold no information
(they are full) and are forgotten: memory follows the clients publishing now, and
nothing depends on connect and disconnect notifications, which across a reload
go to the previous instance of the plugin.
"""

import json

import attrs
import trio

from broker.plugin import Client, ErrorCode, Plugin, Publication, Refuse, TokenBucket


@attrs.define
class _Entry:
    messages: TokenBucket
    bytes: TokenBucket | None
    last_used: float
    refusals: int = 0

    def allows(self, size: int, now: float) -> bool:
        self.last_used = now
        return self.messages.can_take(1, now) and (
            self.bytes is None or self.bytes.can_take(size, now)
        )

    def take(self, size: int) -> None:
        self.messages.take(1)
        if self.bytes is not None:
            self.bytes.take(size)


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
        if not (options.per_connection or options.per_user):
            raise ValueError("per_connection and per_user are both false: nothing is limited")
        if options.bytes_burst is not None and options.bytes_per_second is None:
            raise ValueError("bytes_burst needs bytes_per_second")
        self._connections: dict[str, _Entry] = {}
        self._users: dict[str, _Entry] = {}
        refill = options.burst / options.messages_per_second
        if options.bytes_per_second is not None:
            byte_burst = options.bytes_burst or options.bytes_per_second
            refill = max(refill, byte_burst / options.bytes_per_second)
        self._idle_after = refill
        self._last_sweep = 0.0

    def _new_entry(self, now: float) -> _Entry:
        options = self.options
        byte_bucket = None
        rate = options.bytes_per_second
        if rate is not None:
            byte_bucket = TokenBucket(rate, options.bytes_burst or rate, now)
        messages = TokenBucket(options.messages_per_second, options.burst, now)
        return _Entry(messages, byte_bucket, now)

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < self._idle_after:
            return
        self._last_sweep = now
        for entries in (self._connections, self._users):
            idle = [key for key, e in entries.items() if now - e.last_used > self._idle_after]
            for key in idle:
                del entries[key]

    def authorize_publish(self, client: Client, publication: Publication) -> Publication:
        now = trio.current_time()
        self._sweep(now)
        # Always kept: it counts this connection's refusals in a row.
        connection = self._connections.get(client.client_id)
        if connection is None:
            connection = self._connections[client.client_id] = self._new_entry(now)
        entries = [connection] if self.options.per_connection else []
        user = client.identity.user
        if self.options.per_user and user is not None:
            if user not in self._users:
                self._users[user] = self._new_entry(now)
            entries.append(self._users[user])
        size = 0
        if self.options.bytes_per_second is not None:
            size = len(json.dumps(publication.data, ensure_ascii=False).encode("utf-8", "replace"))
        # A list, not a generator: every entry is refilled and marked used.
        if not all([entry.allows(size, now) for entry in entries]):
            connection.last_used = now
            connection.refusals += 1
            close = 1008 if connection.refusals >= self.options.close_after else None
            raise Refuse("rate limit exceeded", code=ErrorCode.RATE_LIMITED, close_code=close)
        connection.refusals = 0
        for entry in entries:
            entry.take(size)
        return publication

"""A token bucket: ``rate`` tokens a second, holding at most ``capacity`` (no I/O, no clock).

Used by the core's limits (handshakes per address, messages per connection) and offered to
plugins through `broker.plugin`.
"""


class TokenBucket:
    """The caller supplies the time (any monotonic clock, in seconds)."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

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

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` tokens are there (0 if they are now)."""
        self._refill(now)
        return max(0.0, (amount - self.tokens) / self.rate)

    def is_full(self, now: float) -> bool:
        """A full bucket remembers nothing: it may be forgotten and made again later."""
        self._refill(now)
        return self.tokens >= self.capacity

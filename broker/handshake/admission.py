"""Limits per client address, checked when a TCP connection is accepted (no I/O here).

Two limits: how many sockets one address may hold open at once (handshaking or
connected), and how fast it may open them (a token bucket per address). Buckets that
have refilled completely hold no information and are forgotten, so memory follows the
addresses connecting now, not every address ever seen.
"""

import functools
import ipaddress

from ..core.token_bucket import TokenBucket


# Asked on every accept, of the few addresses that connect at a time: ipaddress parses
# in Python (about 4 µs), once per address this way.
@functools.lru_cache(maxsize=4096)
def address_key(host: str) -> str:
    """What the limits count by: an IPv4 address, or an IPv6 /64 (one host's usual share)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class AddressLimits:
    def __init__(self, max_open: int, rate: float, burst: int) -> None:
        """``max_open`` 0 and ``rate`` 0 mean no limit."""
        self._open: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._sweep_at = 1024
        self.configure(max_open, rate, burst)

    def configure(self, max_open: int, rate: float, burst: int) -> None:
        """New limits (after a reload); open counts are kept."""
        self.max_open = max_open
        self.rate = rate
        self.burst = burst
        self._buckets.clear()

    def admit(self, address: str, now: float) -> str | None:
        """Why ``address`` may not open another socket, or None: then call `release` later."""
        if self.max_open and self._open.get(address, 0) >= self.max_open:
            return f"too many connections from {address}"
        if self.rate:
            bucket = self._buckets.get(address)
            if bucket is None:
                bucket = self._buckets[address] = TokenBucket(self.rate, self.burst, now)
                if len(self._buckets) >= self._sweep_at:
                    self._sweep(now)
            if not bucket.can_take(1, now):
                return f"too many new connections from {address}"
            bucket.take(1)
        self._open[address] = self._open.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        count = self._open[address] - 1
        if count:
            self._open[address] = count
        else:
            del self._open[address]

    def _sweep(self, now: float) -> None:
        for address in [a for a, b in self._buckets.items() if b.is_full(now)]:
            del self._buckets[address]
        # Sweeping again only once the table doubled keeps the cost per admit constant.
        self._sweep_at = max(1024, 2 * len(self._buckets))

    @property
    def tracked(self) -> int:
        """Addresses with state held (open sockets or a bucket still refilling)."""
        return len(self._open.keys() | self._buckets.keys())

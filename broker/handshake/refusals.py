"""Which upgrade requests the broker refuses before any plugin sees them, and the words
that say why (no I/O: the node asks, with what it knows at that moment)."""

from .origins import origin_allowed
from .upgrade import Refusal

RETRY_AFTER = (("Retry-After", "1"),)


def limit_refusal(reason: str) -> Refusal:
    """A client address over its limits (`AddressLimits`): come back in a second."""
    return Refusal(429, reason, RETRY_AFTER)


def endpoint_refusal(
    path: str, endpoint: str, *, stopping: bool, taken: int, max_connections: int
) -> Refusal | None:
    """Not the WebSocket endpoint, a broker that is stopping, or no connection left."""
    if path != endpoint:
        return Refusal(404, f"no WebSocket endpoint at {path[:100]!r}")
    if stopping:
        return Refusal(503, "the server is shutting down")
    if taken >= max_connections:
        return Refusal(503, "too many connections")
    return None


def origin_refusal(origin: str | None, host: str, allowed: tuple[str, ...]) -> Refusal | None:
    """A browser page that ``[server] allowed_origins`` does not admit. The browser shows
    only "403": the reason, which the log gets, is what explains it to a person."""
    if origin_allowed(origin, host, allowed):
        return None
    assert origin is not None
    if allowed:
        policy = ", ".join(repr(entry) for entry in allowed)
        policy = policy if len(policy) <= 200 else policy[:197] + "..."
    else:
        policy = f"empty: same host as the request's Host {host[:100]!r} only"
    return Refusal(
        403,
        f"origin {origin[:100]!r} is not allowed by [server] allowed_origins ({policy}); "
        "add it there if that page is yours",
    )

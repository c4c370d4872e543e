"""Which browser origins may open a WebSocket (cross-site WebSocket hijacking defence).

Browsers send an ``Origin`` header with every WebSocket handshake and let any page
connect anywhere, with the user's cookies. A handshake without ``Origin`` is not from
a browser and has no ambient credentials to abuse, so it is always allowed.
"""

from urllib.parse import urlsplit


def origin_allowed(origin: str | None, host: str, allowed: tuple[str, ...]) -> bool:
    """``allowed`` empty means same-origin only: the Origin's host[:port] is the Host header."""
    if origin is None:
        return True
    origin = origin.strip().lower()
    if not allowed:
        return urlsplit(origin).netloc == host.strip().lower() != ""
    return any(_matches(pattern, origin) for pattern in allowed)


def _matches(pattern: str, origin: str) -> bool:
    if pattern in ("*", origin):
        return True
    scheme, separator, rest = pattern.partition("://*.")
    if not separator:
        return False
    # "https://*.example.com[:port]": any subdomain of example.com, same scheme and port.
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    suffix, _, wanted_port = rest.partition(":")
    hostname = parts.hostname or ""
    return (
        parts.scheme == scheme
        and hostname.endswith("." + suffix)
        and str(port or "") == wanted_port
        and parts.netloc == hostname + (f":{port}" if port else "")  # no user@ or oddities
    )

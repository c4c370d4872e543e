"""Which browser origins may open a WebSocket (cross-site WebSocket hijacking defence).

Browsers send an ``Origin`` header with every WebSocket handshake and let any page
connect anywhere, with the user's cookies. A handshake without ``Origin`` is not from
a browser and has no ambient credentials to abuse, so it is always allowed.
"""

import re
from urllib.parse import urlsplit

# An ``allowed_origins`` entry besides "*" and "null": scheme://host[:port], where the
# host may start with "*." (any subdomain) and the port may be "*" (any port).
PATTERN = re.compile(r"(https?)://(\*\.)?(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::([0-9]{1,5}|\*))?")
PATTERN_HELP = (
    "use scheme://host[:port] in lower case (the host may start with '*.', the port may "
    "be '*'), '*' or 'null'"
)
# Pages on the developer's own machine: a file or a sandboxed frame (Origin "null"), or
# a development server on any port of a loopback host.
DEVELOPMENT_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def is_valid_pattern(entry: str) -> bool:
    return entry in ("*", "null") or PATTERN.fullmatch(entry) is not None


def is_development_pattern(entry: str) -> bool:
    """Whether ``entry`` admits pages only a developer's own machine serves."""
    match = PATTERN.fullmatch(entry)
    return entry == "null" or (match is not None and match.group(3) in DEVELOPMENT_HOSTS)


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
    match = PATTERN.fullmatch(pattern)
    if match is None or "*" not in pattern:
        return False
    scheme, any_subdomain, host, port = match.groups()
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    if parts.username is not None or parts.path or parts.query or parts.fragment:
        return False  # an Origin is scheme://host[:port], nothing else
    hostname = parts.hostname or ""
    host = host.strip("[]")
    host_matches = hostname.endswith("." + host) if any_subdomain else hostname == host
    port_matches = port == "*" or str(origin_port or "") == (port or "")
    return parts.scheme == scheme and host_matches and port_matches

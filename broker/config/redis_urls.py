"""Where the redis engine finds a Redis: the URLs of `[cluster]` (no I/O).

``redis://``, ``rediss://`` and ``unix://`` name one Redis (coredis reads them). A
``redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER_NAME[/DB]`` URL names the sentinels that
know which Redis is the master of that name: the broker asks them, and asks again after
a failover. Passwords never go in a sentinel URL (which of the two would it be?): the
Redis one comes from ``redis_password_file``, the sentinels' from
``redis_sentinel_password_file``.
"""

import attrs

SENTINEL_SCHEME = "redis+sentinel"
SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME)
FORMS = (
    "redis://HOST:PORT/DB, rediss://HOST:PORT/DB, unix:///PATH or "
    "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]"
)
MAX_DB = 1_000_000


class UrlError(ValueError):
    """What is wrong with a URL, in words that never show a password."""


@attrs.frozen
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]  # (host, port), in the order to ask them
    master: str
    db: int = 0

    def __str__(self) -> str:
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
        db = f"/{self.db}" if self.db else ""
        return f"{SENTINEL_SCHEME}://{hosts}/{self.master}{db}"


def check(url: str) -> None:
    """Raise UrlError unless ``url`` is one of the forms the engine reads."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in SCHEMES or not rest:
        raise UrlError(f"must be {FORMS}")
    if scheme == SENTINEL_SCHEME:
        parse_sentinel(url)


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def parse_sentinel(url: str) -> SentinelUrl:
    rest = url.removeprefix(SENTINEL_SCHEME + "://")
    hosts, _, path = rest.partition("/")
    if "@" in hosts:
        raise UrlError(
            "a sentinel URL carries no password: put the Redis one in redis_password_file "
            "and the sentinels' in redis_sentinel_password_file"
        )
    if "?" in path or "#" in path:
        raise UrlError("a sentinel URL takes no query or fragment")
    master, _, db_text = path.partition("/")
    if not master:
        raise UrlError("names no master: redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME")
    if not master.isprintable() or " " in master:
        raise UrlError(f"master name {master[:40]!r} has spaces or control characters")
    db = 0
    if db_text:
        if not db_text.isdigit() or not db_text.isascii() or int(db_text) > MAX_DB:
            raise UrlError(f"database {db_text[:20]!r} is not a number")
        db = int(db_text)
    sentinels = tuple(_host_and_port(entry) for entry in hosts.split(","))
    if len(set(sentinels)) != len(sentinels):
        raise UrlError("names a sentinel twice")
    return SentinelUrl(sentinels, master, db)


def _host_and_port(entry: str) -> tuple[str, int]:
    if entry.startswith("["):  # [IPv6]:PORT
        host, bracket, port = entry[1:].partition("]:")
        if not bracket:
            raise UrlError(f"sentinel {entry[:60]!r} must be [ADDRESS]:PORT")
    else:
        host, colon, port = entry.rpartition(":")
        if not colon:
            raise UrlError(f"sentinel {entry[:60]!r} must be HOST:PORT")
    if not host or any(ch in host for ch in " []/"):
        raise UrlError(f"sentinel {entry[:60]!r} has no host")
    if not port.isdigit() or not port.isascii() or not 0 < int(port) < 65536:
        raise UrlError(f"sentinel {entry[:60]!r}: the port must be 1 to 65535")
    return host, int(port)

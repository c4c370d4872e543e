"""The public plugin API of trio-broker (documented in docs/plugins.md).

A plugin is a class deriving from `Plugin` that overrides any of the hooks. Its
options (the rest of its ``[[plugins]]`` table) are validated into its nested
``Options`` attrs class, which the broker passes to ``__init__``. A hook is an
``async def`` that may wait (I/O), each call bounded by ``[server] plugin_timeout``,
or a plain ``def`` that never waits and costs no timeout. A hook refuses by raising
`Refuse`; any other exception, a timeout or a return value of the wrong type fails
the operation closed and is logged with the plugin's name.
"""

import re
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, TypeAlias, TypeVar

import attrs

from .config.options import OptionsError, structure_options
from .core.keys import DuplicateKey, KeyTable
from .core.stats import PLUGIN_SECONDS_BUCKETS, Histogram, Stats
from .core.token_bucket import TokenBucket
from .core.topics import TopicError, check_filter, covers, matches, overlaps
from .wire.protocol import ErrorCode, binary_data, data_fields

# Beside the hooks' types, the helpers a plugin needs and the built-in plugins use: topic
# filters (`matches` is the broker's own), secrets looked up in constant time, a token
# bucket, the strict validation that the broker applies to ``Options``, and how data goes
# into JSON and back (``data_fields``: binary data as ``data_b64``; ``binary_data``).
__all__ = [
    "Client",
    "DuplicateKey",
    "ErrorCode",
    "HandshakeRequest",
    "Identity",
    "KeyTable",
    "MaybeAwaitable",
    "Metrics",
    "OptionsError",
    "Plugin",
    "Publication",
    "Refuse",
    "TokenBucket",
    "TopicError",
    "binary_data",
    "check_filter",
    "covers",
    "data_fields",
    "matches",
    "overlaps",
    "structure_options",
]


_T = TypeVar("_T")
# What a hook returns: its answer, or (an ``async def`` hook's) an awaitable of it.
MaybeAwaitable: TypeAlias = _T | Awaitable[_T]


def _roles(roles: Iterable[str]) -> frozenset[str]:
    return frozenset(roles)


def _channels(channels: Iterable[str]) -> tuple[str, ...]:
    return tuple(channels)


@attrs.frozen
class Identity:
    """Who a connection is. Anonymous (``user`` None) unless a plugin authenticates it."""

    user: str | None = None
    roles: frozenset[str] = attrs.field(default=frozenset(), converter=_roles)
    claims: Mapping[str, Any] = attrs.field(factory=dict)
    # Wall-clock time (seconds since the epoch) when the identity stops being valid: the
    # broker then closes the connection with 4001 "token expired".
    expires_at: float | None = None
    # Filters the broker subscribes the connection to once it is accepted, without
    # authorize_subscribe: the application's backend decided (server-side subscriptions).
    channels: tuple[str, ...] = attrs.field(default=(), converter=_channels)


@attrs.frozen
class HandshakeRequest:
    """The HTTP upgrade request, as an authenticate hook sees it."""

    path: str
    query: Mapping[str, tuple[str, ...]]
    # Header names are lower-case; a header sent several times appears several times.
    headers: tuple[tuple[str, str], ...]
    remote_address: str
    # The id the connection gets if it is accepted (for a backend that records it).
    client_id: str = ""

    def header(self, name: str) -> str | None:
        """The first value of a header (name case-insensitive), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def origin(self) -> str | None:
        return self.header("origin")


@attrs.frozen
class Client:
    """A connection, as hooks after the handshake see it."""

    client_id: str
    identity: Identity
    remote_address: str


@attrs.frozen
class Publication:
    """A message being published.

    ``meta`` holds extra fields for the delivery envelope, next to ``op``, ``topic``
    and ``data``: set by plugins (say, ``{"from": user}``), never by clients, so a
    subscriber can trust them.
    """

    topic: str
    data: Any  # JSON's types, or bytes: binary data
    meta: Mapping[str, Any] = attrs.field(factory=dict)


class Refuse(Exception):
    """Raised by a hook to refuse: the client gets ``code`` with ``message``.

    In ``authenticate`` the handshake is refused with HTTP ``status`` instead. With
    ``close_code``, the connection is also closed with that WebSocket close code.
    """

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode = ErrorCode.FORBIDDEN,
        status: int = 403,
        close_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.close_code = close_code


_METRIC_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class Metrics:
    """Numbers a plugin keeps for ``/metrics``, beside the broker's (summed over a
    node's workers): ``self.metrics`` in every plugin.

    ``count("hook_failures", hook="connect", reason="timeout")`` adds one to the counter
    ``trio_broker_hook_failures_total{hook="connect",reason="timeout"}``;
    ``observe("hook_seconds", 0.003, hook="connect")`` counts a duration (seconds) into
    the histogram ``trio_broker_hook_seconds``. A name is lower-case letters, digits and
    ``_``; give it the same label names at every call. Both cost a dictionary update.
    """

    def __init__(self, stats: Stats | None = None) -> None:
        self._stats = stats if stats is not None else Stats()
        self._labels: dict[str, tuple[str, ...]] = {}

    def _key(self, name: str, labels: Mapping[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
        names = self._labels.get(name)
        if names is None:
            if not _METRIC_NAME.fullmatch(name):
                raise ValueError(f"metric name {name[:70]!r}: use [a-z][a-z0-9_]*")
            names = self._labels[name] = tuple(sorted(labels))
        key = tuple(sorted((label, str(value)) for label, value in labels.items()))
        if tuple(label for label, _ in key) != names:
            raise ValueError(f"metric {name}: labels {sorted(labels)}, not {list(names)}")
        return name, key

    def count(self, name: str, amount: int = 1, **labels: str) -> None:
        self._stats.plugin_counts[self._key(name, labels)] += amount

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        key = self._key(name, labels)
        histogram = self._stats.plugin_histograms.get(key)
        if histogram is None:
            histogram = self._stats.plugin_histograms[key] = Histogram(PLUGIN_SECONDS_BUCKETS)
        histogram.observe(seconds)


class Plugin:
    """Base class of plugins: override the hooks you need, leave the others.

    A hook that is not overridden costs nothing: in particular ``filter_delivery``
    runs once per message *per subscriber*, so the broker skips that step entirely
    unless some configured plugin overrides it. Override with ``async def`` a hook that
    waits for something, with ``def`` one that does not: the broker then calls it
    without the cancel scope that bounds an async hook, which costs more than most
    hooks. The defaults here are plain functions: call them without ``await``.
    """

    @attrs.frozen
    class Options:
        """No options. A plugin with options defines its own attrs ``Options`` class."""

    # The configured name ("use"), for logs; set by the loader.
    name: str = "plugin"
    # Counted into the broker's numbers once the plugin runs (set by the broker).
    metrics: Metrics = Metrics()

    def __init__(self, options: Any) -> None:
        self.options = options

    def authenticate(
        self, request: HandshakeRequest, identity: Identity
    ) -> MaybeAwaitable[Identity | None]:
        """Return a new identity, or None to keep ``identity``; raise Refuse to refuse."""
        return None

    def authorize_subscribe(self, client: Client, topic_filter: str) -> MaybeAwaitable[None]:
        """Raise Refuse to refuse the subscription."""

    def authorize_publish(
        self, client: Client, publication: Publication
    ) -> MaybeAwaitable[Publication | None]:
        """Return the publication, changed or not, or None to drop it silently.

        Raise Refuse to refuse it with an error. A dropped publish is acked as usual.
        """
        return publication

    def refresh(self, client: Client, token: str) -> MaybeAwaitable[Identity | None]:
        """New credentials (the ``refresh`` request) for a connected client.

        Return its new identity, or None if this plugin does not judge such tokens;
        raise Refuse to refuse (the connection keeps its identity). Its ``expires_at``
        replaces the old one.
        """
        return None

    def filter_delivery(self, client: Client, publication: Publication) -> MaybeAwaitable[bool]:
        """Whether ``client`` (a subscriber) receives ``publication``."""
        return True

    def renew(self, client: Client) -> MaybeAwaitable[float | None]:
        """``client``'s identity expires now: return a new expiry time (seconds since the
        epoch, in the future) to keep the connection, or None if this plugin does not
        renew; raise Refuse to let it expire (the client gets 4001 as without renewal)."""
        return None

    def on_connect(self, client: Client) -> MaybeAwaitable[None]:
        """A connection was accepted (after authenticate)."""

    def on_disconnect(self, client: Client) -> MaybeAwaitable[None]:
        """A connection ended."""

    def aclose(self) -> MaybeAwaitable[None]:
        """The plugin is retired: the broker stops, or a reload replaced it (then once
        the hooks already running had their ``plugin_timeout``). Release what it holds
        (connections to a backend, files). Bounded by ``plugin_timeout``; an
        ``on_disconnect`` of a connection that began before a reload may still come."""

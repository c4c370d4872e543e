"""Run the configured plugins' hooks in order, each async one bounded in time, failing closed."""

import contextlib
import inspect
import logging
import time
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import attrs
import trio

from ..core.stats import Stats
from ..core.topics import TopicError, check_topic
from ..plugin import Client, HandshakeRequest, Identity, Metrics, Plugin, Publication, Refuse

log = logging.getLogger("broker.plugins")
# Shared by every connection no plugin authenticates (immutable, claims included).
_ANONYMOUS = Identity(claims=MappingProxyType({}))

RESERVED_ENVELOPE_FIELDS = frozenset({"op", "topic", "data", "data_b64", "id", "pos"})


class PluginFailure(Exception):
    """A hook raised, timed out or returned nonsense: the operation fails closed."""


def _valid_publication(result: Any, max_topic_length: int) -> bool:
    if not isinstance(result, Publication) or RESERVED_ENVELOPE_FIELDS & result.meta.keys():
        return False
    try:
        check_topic(result.topic, max_topic_length)
    except TopicError:
        return False
    return True


def _overrides(plugin: Plugin, hook: str) -> bool:
    return getattr(type(plugin), hook) is not getattr(Plugin, hook)


class Pipeline:
    """The plugins of one configuration. A reload builds a new Pipeline."""

    def __init__(self, plugins: Sequence[Plugin] = (), timeout: float = 5.0) -> None:
        self.plugins = list(plugins)
        self.timeout = timeout
        self.stats = Stats()

        def having(hook: str) -> list[Plugin]:
            return [plugin for plugin in self.plugins if _overrides(plugin, hook)]

        self._authenticators = having("authenticate")
        self._subscribe_authorizers = having("authorize_subscribe")
        self._publish_authorizers = having("authorize_publish")
        self._delivery_filters = having("filter_delivery")
        self._refreshers = having("refresh")
        self._connect_listeners = having("on_connect")
        self._disconnect_listeners = having("on_disconnect")
        self._renewers = having("renew")
        self._closers = having("aclose")

    @property
    def stats(self) -> Stats:
        """The broker's, once it runs this pipeline: refusals and time spent per plugin,
        and what the plugins count themselves (`Plugin.metrics`)."""
        return self._stats

    @stats.setter
    def stats(self, stats: Stats) -> None:
        self._stats = stats
        for plugin in self.plugins:
            plugin.metrics = Metrics(stats)

    @property
    def authorizes_publishes(self) -> bool:
        return bool(self._publish_authorizers)

    @property
    def filters_deliveries(self) -> bool:
        return bool(self._delivery_filters)

    @property
    def refreshes(self) -> bool:
        return bool(self._refreshers)

    @property
    def renews(self) -> bool:
        return bool(self._renewers)

    async def _call(self, plugin: Plugin, hook: str, *args: Any) -> Any:
        """Refuse passes through; anything else going wrong becomes PluginFailure."""
        started = time.perf_counter()
        try:
            # An async hook's call only makes its coroutine: nothing ran yet.
            result = getattr(plugin, hook)(*args)
            if not inspect.isawaitable(result):
                # A def hook: done, and nothing could have interrupted it.
                if time.perf_counter() - started > self.timeout:
                    log.warning(
                        "plugin %s: %s, a def hook, took longer than %ss and held up "
                        "every connection meanwhile: make it async if it waits",
                        plugin.name,
                        hook,
                        self.timeout,
                    )
                return result
            # A scope rather than fail_after, whose generator costs as much as most hooks.
            with trio.CancelScope(deadline=trio.current_time() + self.timeout):
                return await result
        except Refuse:
            self.stats.plugin_refusals[plugin.name] += 1
            raise
        except Exception as exc:
            log.exception("plugin %s: %s raised", plugin.name, hook)
            raise PluginFailure(f"{plugin.name}.{hook} raised") from exc
        finally:
            self.stats.plugin_call(plugin.name, hook, time.perf_counter() - started)
        # Only the scope's deadline leaves the block without a return.
        log.error("plugin %s: %s took longer than %ss", plugin.name, hook, self.timeout)
        raise PluginFailure(f"{plugin.name}.{hook} timed out")

    def _wrong_type(self, plugin: Plugin, hook: str, result: Any) -> PluginFailure:
        log.error("plugin %s: %s returned %.100r", plugin.name, hook, result)
        return PluginFailure(f"{plugin.name}.{hook} returned a {type(result).__name__}")

    def _identity(self, plugin: Plugin, hook: str, result: Any) -> Identity | None:
        """A hook's answer that must be an Identity or None."""
        if result is not None and not isinstance(result, Identity):
            raise self._wrong_type(plugin, hook, result)
        return result

    async def authenticate(self, request: HandshakeRequest) -> Identity:
        identity = _ANONYMOUS
        for plugin in self._authenticators:
            result = await self._call(plugin, "authenticate", request, identity)
            identity = self._identity(plugin, "authenticate", result) or identity
        return identity

    async def authorize_subscribe(self, client: Client, topic_filter: str) -> None:
        for plugin in self._subscribe_authorizers:
            await self._call(plugin, "authorize_subscribe", client, topic_filter)

    async def authorize_publish(
        self, client: Client, publication: Publication, max_topic_length: int
    ) -> Publication | None:
        for plugin in self._publish_authorizers:
            result = await self._call(plugin, "authorize_publish", client, publication)
            if result is None:
                return None
            if not _valid_publication(result, max_topic_length):
                raise self._wrong_type(plugin, "authorize_publish", result)
            publication = result
        return publication

    async def refresh(self, client: Client, token: str) -> Identity:
        """The client's new identity; Refuse if no plugin accepted the token."""
        identity = None
        for plugin in self._refreshers:
            result = await self._call(plugin, "refresh", client, token)
            new = self._identity(plugin, "refresh", result)
            if new is not None:
                identity = new
                client = attrs.evolve(client, identity=new)
        if identity is None:
            raise Refuse("the token was not accepted")
        return identity

    async def renew(self, client: Client) -> float | None:
        """A new expiry time for ``client``'s identity from the first plugin that gives one;
        None if none does, one refuses or one fails."""
        for plugin in self._renewers:
            try:
                result = await self._call(plugin, "renew", client)
            except (Refuse, PluginFailure):
                return None
            if result is None:
                continue
            if isinstance(result, bool) or not isinstance(result, int | float):
                self._wrong_type(plugin, "renew", result)
                return None
            return float(result)
        return None

    async def aclose(self) -> None:
        """Retire every plugin (`Plugin.aclose`), each within the timeout; failures are
        logged and the others still closed."""
        for plugin in self._closers:
            with contextlib.suppress(Refuse, PluginFailure):
                await self._call(plugin, "aclose")

    async def filter_delivery(self, client: Client, publication: Publication) -> bool:
        """Whether to deliver; a failing filter withholds the delivery (fails closed)."""
        for plugin in self._delivery_filters:
            try:
                result = await self._call(plugin, "filter_delivery", client, publication)
            except (Refuse, PluginFailure):
                return False
            if result is not True:
                if result is not False:
                    self._wrong_type(plugin, "filter_delivery", result)
                return False
        return True

    async def _notify(self, plugins: list[Plugin], hook: str, client: Client) -> None:
        for plugin in plugins:
            # A notification cannot refuse anything; failures are logged by _call.
            with contextlib.suppress(Refuse, PluginFailure):
                await self._call(plugin, hook, client)

    async def on_connect(self, client: Client) -> None:
        await self._notify(self._connect_listeners, "on_connect", client)

    async def on_disconnect(self, client: Client) -> None:
        await self._notify(self._disconnect_listeners, "on_disconnect", client)

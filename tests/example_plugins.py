"""Third-party-style plugins for the tests, loaded by "tests.example_plugins:Class"."""

import collections
import inspect
import time
from typing import Any

import attrs
import trio

from broker.plugin import Client, HandshakeRequest, Identity, Plugin, Publication, Refuse

CALLS: list[str] = []
# Set when a Backend plugin of that label is retired (aclose).
RETIRED: collections.defaultdict[str, trio.Event] = collections.defaultdict(trio.Event)


class StampSender(Plugin):
    """The example from docs/plugins.md: every message says who sent it."""

    async def authorize_publish(self, client: Client, publication: Publication) -> Publication:
        return attrs.evolve(publication, meta={**publication.meta, "from": client.identity.user})


class StampAddress(Plugin):
    """Every message says the address its publisher connected from."""

    async def authorize_publish(self, client: Client, publication: Publication) -> Publication:
        return attrs.evolve(publication, meta={"address": client.remote_address})


class HeaderAuth(Plugin):
    """Trusts an X-User header (tests only!); X-Roles is comma-separated."""

    @attrs.frozen
    class Options:
        required: bool = True
        lifetime: float | None = None

    async def authenticate(self, request: HandshakeRequest, identity: Identity) -> Identity | None:
        user = request.header("x-user") or request.query_value("user")
        if user is None:
            if self.options.required:
                raise Refuse("who are you?", status=401)
            return None
        roles = (request.header("x-roles") or "").split(",")
        expires = None if self.options.lifetime is None else time.time() + self.options.lifetime
        return Identity(user=user, roles=[r for r in roles if r], expires_at=expires)


class Recorder(Plugin):
    """Appends "<label>:<hook>" to CALLS for every hook."""

    @attrs.frozen
    class Options:
        label: str

    def _record(self, hook: str) -> None:
        CALLS.append(f"{self.options.label}:{hook}")

    async def authenticate(self, request: HandshakeRequest, identity: Identity) -> None:
        self._record("authenticate")

    async def authorize_subscribe(self, client: Client, topic_filter: str) -> None:
        self._record("authorize_subscribe")

    async def authorize_publish(self, client: Client, publication: Publication) -> Publication:
        self._record("authorize_publish")
        return publication

    async def on_connect(self, client: Client) -> None:
        self._record("on_connect")

    async def on_disconnect(self, client: Client) -> None:
        self._record("on_disconnect")


def misbehave(hook: str, how: str, *, plain: bool = False, **more: Any) -> dict[str, Any]:
    """A [[plugins]] table for `Misbehave`, or with ``plain`` for `PlainMisbehave`."""
    name = "PlainMisbehave" if plain else "Misbehave"
    return {"use": f"{__name__}:{name}", "hook": hook, "how": how, **more}


class Misbehave(Plugin):
    """Misbehaves in one hook: ``how`` is refuse, raise, hang, garbage or drop."""

    @attrs.frozen
    class Options:
        hook: str = attrs.field(
            validator=attrs.validators.in_(
                [
                    "authenticate",
                    "authorize_subscribe",
                    "authorize_publish",
                    "filter_delivery",
                    "refresh",
                ]
            )
        )
        how: str = attrs.field(
            validator=attrs.validators.in_(["refuse", "raise", "hang", "garbage", "drop", "close"])
        )
        only_topic: str | None = None

    def _act_now(self, hook: str, topic: str | None, default: Any) -> Any:
        """What the hook answers; for "hang", an awaitable that never ends."""
        options = self.options
        if hook != options.hook or (options.only_topic and topic != options.only_topic):
            return default
        if options.how == "refuse":
            raise Refuse(f"{hook} refused by test", status=403)
        if options.how == "close":
            raise Refuse("enough", close_code=1008)
        if options.how == "raise":
            raise RuntimeError("plugin bug")
        if options.how == "hang":
            return trio.sleep_forever()  # noqa: ASYNC105 (awaited by the caller)
        if options.how == "garbage":
            return "garbage"
        return None  # drop

    async def _act(self, hook: str, topic: str | None, default: Any) -> Any:
        result = self._act_now(hook, topic, default)
        return await result if inspect.iscoroutine(result) else result

    async def authenticate(self, request: HandshakeRequest, identity: Identity) -> Any:
        return await self._act("authenticate", None, None)

    async def authorize_subscribe(self, client: Client, topic_filter: str) -> None:
        await self._act("authorize_subscribe", topic_filter, None)

    async def authorize_publish(self, client: Client, publication: Publication) -> Any:
        return await self._act("authorize_publish", publication.topic, publication)

    async def filter_delivery(self, client: Client, publication: Publication) -> Any:
        return await self._act("filter_delivery", publication.topic, True)

    async def refresh(self, client: Client, token: str) -> Any:
        return await self._act("refresh", None, client.identity)


class PlainMisbehave(Misbehave):
    """`Misbehave` with plain ``def`` hooks: "hang" hands back an awaitable that never
    ends, as a def hook may (the broker awaits it within the timeout)."""

    def authenticate(self, request: HandshakeRequest, identity: Identity) -> Any:
        return self._act_now("authenticate", None, None)

    def authorize_subscribe(self, client: Client, topic_filter: str) -> Any:
        return self._act_now("authorize_subscribe", topic_filter, None)

    def authorize_publish(self, client: Client, publication: Publication) -> Any:
        return self._act_now("authorize_publish", publication.topic, publication)

    def filter_delivery(self, client: Client, publication: Publication) -> Any:
        return self._act_now("filter_delivery", publication.topic, True)

    def refresh(self, client: Client, token: str) -> Any:
        return self._act_now("refresh", None, client.identity)


class OnlyRole(Plugin):
    """Delivers messages on topics under ``prefix`` only to clients with ``role``."""

    @attrs.frozen
    class Options:
        prefix: str
        role: str

    async def filter_delivery(self, client: Client, publication: Publication) -> bool:
        if publication.topic.startswith(self.options.prefix):
            return self.options.role in client.identity.roles
        return True


class NotAPlugin:
    pass


class Backend(Plugin):
    """What an application's backend decides, from the request (tests only!): channels
    from ``?channels=a,b``, renewals of ``renew_by`` seconds (``renewals`` of them), and
    "<label>:aclose" in CALLS when retired."""

    @attrs.frozen
    class Options:
        label: str = "backend"
        lifetime: float | None = None
        renew_by: float | None = None
        renewals: int = 1
        renew_how: str = "extend"  # or refuse, raise, garbage

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self.renewed = 0

    async def authenticate(self, request: HandshakeRequest, identity: Identity) -> Identity:
        channels = [c for c in (request.query_value("channels") or "").split(",") if c]
        lifetime = self.options.lifetime
        expires = None if lifetime is None else time.time() + lifetime
        return Identity(user=request.client_id, channels=channels, expires_at=expires)

    async def renew(self, client: Client) -> float | None:
        CALLS.append(f"{self.options.label}:renew")
        how = self.options.renew_how
        if how == "refuse":
            raise Refuse("no more")
        if how == "raise":
            raise RuntimeError("plugin bug")
        if how == "garbage":
            return "soon"  # type: ignore[return-value]
        if self.options.renew_by is None or self.renewed >= self.options.renewals:
            return None
        self.renewed += 1
        return time.time() + self.options.renew_by

    async def aclose(self) -> None:
        CALLS.append(f"{self.options.label}:aclose")
        RETIRED[self.options.label].set()

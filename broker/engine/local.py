"""What every engine keeps in its own process: the local router and the [[topics]] rules."""

from ..config.schema import Config
from ..core.webhooks import Events
from ..plugin import Client
from .router import LocalRouter
from .topic_rules import TopicRules


class LocalPart:
    """The half of an engine that every engine has: its `LocalRouter` (this process's
    subscribers), the `TopicRules` of the config, which `configure` replaces, and the
    `Events` the webhooks hear."""

    def __init__(self, config: Config) -> None:
        self.router = LocalRouter()
        self.rules = TopicRules(config.topics)
        self.events = Events()

    def configure(self, config: Config) -> None:
        self.rules = TopicRules(config.topics)

    def has_presence(self, topic: str) -> bool:
        options = self.rules.lookup(topic)
        return options is not None and options.presence

    async def join(self, topic: str, client: Client) -> None:
        if self.has_presence(topic):
            self.events.subscription("join", client.client_id, client.identity.user, topic)
        await self._membership("join", topic, client)

    async def leave(self, topic: str, client: Client, *, announce: bool = True) -> None:
        if self.has_presence(topic):
            self.events.subscription("leave", client.client_id, client.identity.user, topic)
        await self._membership("leave", topic, client, announce)

    async def _membership(self, op: str, topic: str, client: Client, announce: bool = True) -> None:
        raise NotImplementedError

    @property
    def subscription_count(self) -> int:
        return self.router.subscription_count

    def filter_count(self) -> int:
        return self.router.filter_count()

    def busiest(self, count: int) -> list[tuple[str, int]]:
        return self.router.busiest(count)

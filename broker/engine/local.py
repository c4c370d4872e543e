"""What every engine keeps in its own process: the local router and the [[topics]] rules."""

import secrets
from typing import Any

from ..config.schema import Config
from ..core.webhooks import Events
from ..plugin import Client
from .interface import CommandHandler
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
        self.node = secrets.token_hex(4)
        self._command_handler: CommandHandler | None = None

    def serve_commands(self, handler: CommandHandler) -> None:
        self._command_handler = handler

    async def run_command(self, command: dict[str, Any]) -> dict[str, Any]:
        """This node's answer to a control command."""
        if self._command_handler is None:
            return {"error": "this node serves no commands"}
        return await self._command_handler(command)

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

    def holders(self, prefix: str = "") -> dict[str, int]:
        return self.router.holders(prefix)

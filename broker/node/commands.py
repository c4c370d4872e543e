"""What one node does for the control API (`broker.admin.control`), asked by any node of
the cluster through `Engine.broadcast`: its part of a disconnect, and what it knows."""

import time
from collections.abc import Callable, Iterable
from typing import Any

from ..connections.connection import ClientConnection
from ..engine.interface import Engine
from ..requests import server_side
from ..version import __version__
from ..wire.close_codes import CloseCode

# A close frame's reason is at most 123 bytes.
MAX_REASON = 100


class NodeCommands:
    def __init__(
        self, engine: Engine, connections: Callable[[], Iterable[ClientConnection]]
    ) -> None:
        self._engine = engine
        self._connections = connections
        self._started = time.monotonic()

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        if op == "disconnect":
            return self._disconnect(command)
        if op == "subscribe":
            return await self._subscribe(command)
        if op == "unsubscribe":
            return await self._unsubscribe(command)
        if op == "info":
            connections = list(self._connections())
            return {
                "version": __version__,
                "connections": len(connections),
                "subscriptions": self._engine.subscription_count,
                "uptime_s": round(time.monotonic() - self._started, 3),
            }
        if op == "channels":
            prefix = command.get("prefix")
            return {"channels": self._engine.holders(prefix if isinstance(prefix, str) else "")}
        return {"error": f"unknown command {op!r:.40}"}

    def _matching(self, command: dict[str, Any]) -> list[ClientConnection]:
        user, client_id = command.get("user"), command.get("client_id")
        return [
            connection
            for connection in self._connections()
            if (client_id is not None and connection.client_id == client_id)
            or (user is not None and connection.client.identity.user == user)
        ]

    async def _subscribe(self, command: dict[str, Any]) -> dict[str, Any]:
        topic, since = command.get("topic"), command.get("since")
        if not isinstance(topic, str) or not (since is None or isinstance(since, str)):
            return {"error": "bad subscribe command"}
        subscribed = 0
        for connection in self._matching(command):
            if not connection.closing and await server_side.subscribe_for(connection, topic, since):
                subscribed += 1
        return {"subscribed": subscribed}

    async def _unsubscribe(self, command: dict[str, Any]) -> dict[str, Any]:
        topic = command.get("topic")
        if not isinstance(topic, str):
            return {"error": "bad unsubscribe command"}
        unsubscribed = 0
        for connection in self._matching(command):
            if not connection.closing and await server_side.unsubscribe_for(connection, topic):
                unsubscribed += 1
        return {"unsubscribed": unsubscribed}

    def _disconnect(self, command: dict[str, Any]) -> dict[str, Any]:
        code = (
            CloseCode.DISCONNECTED_MAY_RECONNECT
            if command.get("reconnect") is True
            else CloseCode.DISCONNECTED_DO_NOT_RECONNECT
        )
        reason = command.get("reason")
        reason = reason[:MAX_REASON] if isinstance(reason, str) and reason else "disconnected"
        closed = 0
        for connection in self._matching(command):
            if not connection.closing:
                connection.close(code, reason, drain=True)
                closed += 1
        return {"disconnected": closed}

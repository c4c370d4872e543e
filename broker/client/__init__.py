"""A client of trio-broker for Python programs, on Trio or asyncio (docs/client.md).

async with connect("ws://127.0.0.1:8080/ws", token=TOKEN) as client:
    await client.subscribe("chat/#")
    await client.publish("chat/lobby", {"text": "hi"})
    async for event in client.messages():
        ...
"""

from .client import DEFAULT_URL, Client, HistoryAfter, PendingAck, Subscribed, connect
from .errors import BrokerError, ClientError, ConnectionLost, HandshakeRefused
from .events import Event, Membership, Message, RecoveryFailed, ServerSubscription

__all__ = [
    "DEFAULT_URL",
    "BrokerError",
    "Client",
    "ClientError",
    "ConnectionLost",
    "Event",
    "HandshakeRefused",
    "HistoryAfter",
    "Membership",
    "Message",
    "PendingAck",
    "RecoveryFailed",
    "ServerSubscription",
    "Subscribed",
    "connect",
]

"""The engine: fan-out, history and presence, behind one interface.

Everything that nodes of a cluster must share goes through an engine: who is
subscribed to what, the positions and retained messages of topics with history,
and who is present on a topic. `broker.engine.memory.MemoryEngine` keeps it all in
this process; a Redis engine keeps it in Redis, with the same contract:

- `subscribe` and `publish` are atomic with respect to each other: a message whose
  position is after `Recovery.position` reaches the subscriber live, one at or
  before it is in `Recovery.frames` (when asked for) or was never meant for it. An
  engine that may still deliver such a message live says which in
  `Recovery.snapshot`, and the connection drops it.
- `publish` hands one frame to each matching subscriber once, waits for full ones
  (backpressure), and says how many it reached.
- Join and leave events never wait: a subscriber whose queue is full misses them.
- An engine that cannot reach what it shares raises ProtocolError ``unavailable``.
"""

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from ..config.schema import Config
from ..core.snapshots import Snapshot
from ..core.stats import Link
from ..core.webhooks import Events
from ..plugin import Client, Publication
from ..wire.protocol import ProtocolError
from .history_page import HistoryPage
from .router import Subscriber

# Runs one control API command on this node (`broker.node.commands`): its answer.
CommandHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@attrs.frozen
class Recovery:
    frames: list[bytes]  # the retained deliveries after `since`, oldest first
    recovered: bool  # all of them: nothing after `since` was dropped
    position: str | None  # now, for the ack; None when the filter covers no history
    # Which live deliveries, arriving meanwhile or later, are among `frames` (or older):
    # an engine that cannot take the snapshot atomically with subscribing says so.
    snapshot: Snapshot | None = None


@attrs.frozen
class Answers:
    """What a broadcast gathered."""

    answers: list[dict[str, Any]]  # each node's, with its ``node``
    unanswered: int = 0  # nodes that got the command and did not answer in time


class Engine(Protocol):
    # What happens, for the webhooks: the engine reports join, leave, occupied and
    # vacated (the latter two once per transition across the cluster).
    events: Events

    def configure(self, config: Config) -> None:
        """A reloaded config: new [[topics]] tables and history bounds."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Its background work (connections to other nodes), until cancelled."""

    @property
    def unready_reason(self) -> str | None:
        """Why this node cannot serve now (None: it can)."""

    async def subscribe(
        self, topic_filter: str, subscriber: Subscriber, since: str | None
    ) -> Recovery:
        """From now on ``subscriber`` gets every message on a topic ``topic_filter``
        matches; with ``since`` (a position it received), the retained messages after it
        come back in `Recovery.frames` and nothing between them and the live stream is
        lost or doubled (the module's contract). Raises ProtocolError ``unavailable``
        (and holds nothing) when it cannot; the subscriber is not told about presence
        here: that is `join`."""

    def unsubscribe(self, topic_filter: str, subscriber: Subscriber) -> None:
        """No more deliveries for that subscription; never waits, never fails (an engine
        that shares subscriptions drops its interest when nobody local holds it)."""

    async def publish(
        self,
        publication: Publication,
        accepts: Callable[[Subscriber], Awaitable[bool]] | None,
        on_failure: Callable[[ProtocolError], None] | None = None,
    ) -> int | None:
        """Subscribers reached (counted in the stats too). With ``on_failure`` the
        engine may return None as soon as it took the message, and report a failure
        to publish it later through ``on_failure`` (for publishes nobody awaits)."""

    async def history(
        self, topic_filter: str, limit: int, max_bytes: int, since: str | None = None
    ) -> HistoryPage:
        """The newest ``limit`` retained messages (oldest first) that fit in ``max_bytes``
        of frames, and the position now; with ``since`` (a position), only those
        published after it, and whether they are all of them (`history_page`)."""

    def has_presence(self, topic: str) -> bool: ...

    async def presence(self, topic: str) -> list[dict[str, Any]]: ...

    async def join(self, topic: str, client: Client) -> None:
        """``client`` subscribed to exactly ``topic``: presence and join events."""

    async def leave(self, topic: str, client: Client, *, announce: bool = True) -> None:
        """It unsubscribed or disconnected; ``announce`` False: no leave event."""

    @property
    def subscription_count(self) -> int: ...

    @property
    def retained(self) -> tuple[int, int]:
        """Messages kept for history, and their bytes."""

    def filter_count(self) -> int: ...

    def busiest(self, count: int) -> list[tuple[str, int]]:
        """The filters with the most subscribers on this node, most first."""

    def holders(self, prefix: str = "") -> dict[str, int]:
        """How many subscribers on this node hold each filter starting with ``prefix``."""

    def links(self) -> list[Link]: ...

    async def admit_user(self, user: str, client_id: str, limit: int) -> bool:
        """Count one more connection of ``user`` in, unless it has ``limit`` already
        (False); ProtocolError ``unavailable`` if the count cannot be reached."""

    def release_user(self, user: str, client_id: str) -> None:
        """A connection `admit_user` counted ended; never waits, never fails."""

    @property
    def node(self) -> str:
        """This node's name in the cluster (random, new at each start)."""

    def serve_commands(self, handler: CommandHandler) -> None:
        """Where `broadcast` commands run on this node."""

    async def broadcast(self, command: dict[str, Any]) -> "Answers":
        """Run ``command`` on every node of the cluster, this one too; the answers of those
        that answered in time (each with its ``node``), and how many did not.
        ProtocolError ``unavailable`` if the other nodes cannot be asked."""

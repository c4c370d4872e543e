"""What request handlers need of a connection: the IO shell around them."""

from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Protocol

import attrs

from ..config.schema import LimitsConfig
from ..core.snapshots import Snapshot
from ..core.stats import Stats
from ..engine.interface import Engine
from ..plugin import Client, Identity
from ..plugin_host.pipeline import Pipeline
from ..wire.encodings import WireFormat


@attrs.define
class CatchUp:
    """What a block inside `Session.catching_up` tells the connection: which live
    deliveries its replay sent already (or older ones), if the engine may deliver such."""

    snapshot: Snapshot | None = None


class Replied:
    """What a handler returns when it sent its reply itself."""


REPLIED = Replied()


class Session(Protocol):
    """What a request handler may use of the connection it came on (`ClientConnection`):
    who the client is, its subscriptions and limits, the engine, and the ways to send."""

    client: Client
    subscriptions: set[str]  # the filters held
    limits: LimitsConfig
    engine: Engine
    stats: Stats
    wire_format: WireFormat  # what the client speaks (JSON or MessagePack)

    @property
    def closing(self) -> bool: ...

    def pipeline(self) -> Pipeline:
        """The current plugins (a reload swaps them between two requests)."""

    async def send(self, payload: bytes) -> None:
        """Queue one message for the client, waiting while its queue is full."""

    def offer(self, frame: bytes) -> bool:
        """Queue one framed delivery if there is room (the router's `Subscriber`)."""

    async def deliver(self, frame: bytes) -> None:
        """Queue one live delivery, waiting while the queue is full (the router's)."""

    async def send_frame(self, frame: bytes) -> None:
        """Queue one framed message now, waiting while the queue is full."""

    def catching_up(self) -> AbstractAsyncContextManager[CatchUp]:
        """Meanwhile live deliveries wait aside, to follow what the block sends; those its
        snapshot covers are dropped, then and later (`broker.core.snapshots`)."""

    def changing_subscriptions(self) -> AbstractAsyncContextManager[None]:
        """Meanwhile no other change of this connection's subscriptions runs (the
        control API's may come beside the client's own requests)."""

    def held(self) -> AbstractContextManager[None]:
        """Meanwhile the heartbeat knows the client is held up, not gone."""

    def renew(self, identity: Identity) -> None:
        """New credentials: a new identity and expiry."""

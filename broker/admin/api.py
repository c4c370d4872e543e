"""The admin listener's endpoints: health, readiness, metrics, the HTTP publish API, stats.

Handlers take whole requests (`broker.admin.http_server`) and never touch a socket. A
publish goes through `broker.engine.publishing`, the same path as a WebSocket client's:
the API key's user and roles are its identity, so plugins (acl, rate_limit, ...)
judge it like any client.
"""

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..config.schema import Config
from ..core.keys import KeyTable
from ..core.stats import BUSIEST, Snapshot, Stats
from ..engine import publishing
from ..engine.interface import Engine
from ..plugin import Client, Identity, Refuse
from ..plugin_host.pipeline import Pipeline, PluginFailure
from ..version import __version__
from ..wire import protocol
from ..wire.protocol import ErrorCode, ProtocolError
from . import metrics, ui_pages
from .control import ControlApi, cluster_channels, cluster_nodes
from .http_server import HttpRequest, HttpResponse, error_response, json_response


class Node(Protocol):
    """What the admin endpoints use of the node they serve (`broker.node.broker.Broker`)."""

    config: Config
    config_file: str | None
    api_keys: KeyTable[Identity]
    engine: Engine
    pipeline: Pipeline
    stats: Stats

    @property
    def websocket_port(self) -> int:
        """Where clients connect."""

    @property
    def stopping(self) -> bool: ...

    async def node_snapshot(self) -> Snapshot:
        """The node's numbers, its workers' included."""


# HTTP status for each error code a publish can meet.
STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.INVALID_TOPIC: 400,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.LIMIT_EXCEEDED: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
}
RETRY_AFTER = (("Retry-After", "1"),)


class _Failed(Exception):
    """One publish failed: the error as the API reports it."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def response(self) -> HttpResponse:
        status = STATUS[self.code]
        return error_response(
            status, self.code.value, self.message, RETRY_AFTER if status in (429, 503) else ()
        )


Endpoint = Callable[[HttpRequest, Identity | None], Awaitable[HttpResponse]]


class AdminApi:
    def __init__(self, broker: Node) -> None:
        self._broker = broker
        self._metrics_renderer = metrics.Metrics()
        self._started = time.monotonic()
        # path: (method, needs an API key, endpoint)
        self._routes: dict[str, tuple[str, bool, Endpoint]] = {
            "/healthz": ("GET", False, self._health),
            "/readyz": ("GET", False, self._ready),
            "/metrics": ("GET", False, self._metrics),
            "/api/publish": ("POST", True, self._publish),
            "/api/publish_batch": ("POST", True, self._publish_batch),
            "/api/stats": ("GET", True, self._stats),
        }
        control = ControlApi(lambda: broker.engine, lambda: broker.config.limits)
        for path, (method, endpoint) in control.routes().items():
            self._routes[path] = (method, True, endpoint)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/ui/") and self._broker.config.admin.ui:
            return await self._ui(request)
        route = self._routes.get(request.path)
        if route is None:
            return error_response(404, "bad_request", f"no endpoint at {request.path[:100]!r}")
        method, needs_key, endpoint = route
        if request.method != method:
            return error_response(
                405, "bad_request", f"use {method} for {request.path}", (("Allow", method),)
            )
        identity = None
        if needs_key:
            identity = self._identity(request)
            if identity is None:
                return error_response(
                    401,
                    "forbidden",
                    "a valid API key is required: Authorization: Bearer KEY",
                    (("WWW-Authenticate", 'Bearer realm="trio-broker"'),),
                )
        return await endpoint(request, identity)

    def _identity(self, request: HttpRequest) -> Identity | None:
        scheme, _, key = (request.header("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        return self._broker.api_keys.lookup(key.strip())

    async def _ui(self, request: HttpRequest) -> HttpResponse:
        """The demo pages ([admin] ui): static files, where the WebSocket endpoint is, and
        the dashboard's numbers."""
        if request.method != "GET":
            return error_response(405, "bad_request", "use GET", (("Allow", "GET"),))
        name = request.path.removeprefix("/ui/")
        if name == "stats.json":
            return json_response(200, await self._dashboard(), (("Cache-Control", "no-store"),))
        if name == "config.json":
            server = self._broker.config.server
            url = ui_pages.websocket_url(
                request.header("host"),
                self._broker.websocket_port,
                server.path,
                server.tls is not None,
            )
            return json_response(200, {"websocket": url})
        found = ui_pages.page(name)
        if found is None:
            return error_response(404, "bad_request", f"no page at {request.path[:100]!r}")
        return found

    async def _dashboard(self) -> dict[str, Any]:
        """The dashboard's numbers: this node's, and the cluster's nodes and busiest filters
        (those of this node alone, and no nodes, when the others cannot be asked)."""
        snapshot = await self._broker.node_snapshot()
        busiest = [{"filter": f, "subscribers": n} for f, n in snapshot.busiest]
        nodes: list[dict[str, Any]] = []
        try:
            nodes = (await cluster_nodes(self._broker.engine))[0]
            top = (await cluster_channels(self._broker.engine))[0][:BUSIEST]
            busiest = [{"filter": f, "subscribers": n} for f, n in top]
        except ProtocolError:
            pass  # Redis away: this node's numbers only
        return {
            "connections": snapshot.connections,
            "subscriptions": snapshot.subscriptions,
            "published": snapshot.stats.published,
            "deliveries": snapshot.stats.deliveries,
            "busiest": busiest,
            "nodes": nodes,
        }

    # Operations.

    async def _health(self, request: HttpRequest, identity: Identity | None) -> HttpResponse:
        return json_response(200, {"status": "ok"})

    async def _ready(self, request: HttpRequest, identity: Identity | None) -> HttpResponse:
        reason = (await self._broker.node_snapshot()).unready_reason
        if reason is None:
            return json_response(200, {"status": "ready"})
        return json_response(503, {"status": "unavailable", "reason": reason})

    async def _metrics(self, request: HttpRequest, identity: Identity | None) -> HttpResponse:
        snapshot = await self._broker.node_snapshot()
        return HttpResponse(200, self._metrics_renderer.render(snapshot), metrics.CONTENT_TYPE)

    async def _stats(self, request: HttpRequest, identity: Identity | None) -> HttpResponse:
        broker = self._broker
        snapshot = await broker.node_snapshot()
        stats = snapshot.stats
        return json_response(
            200,
            {
                "version": __version__,
                "uptime_seconds": round(time.monotonic() - self._started, 3),
                "config_file": broker.config_file,
                "ready": snapshot.unready_reason is None,
                "connections": snapshot.connections,
                "subscriptions": snapshot.subscriptions,
                "topics": snapshot.topics,
                "retained_messages": snapshot.retained_messages,
                "retained_bytes": snapshot.retained_bytes,
                "counts": {
                    "messages_published": stats.published,
                    "deliveries": stats.deliveries,
                    "delivered_bytes": stats.delivered_bytes,
                    "http_publishes": stats.http_publishes,
                    "slow_consumer_disconnects": stats.slow_consumer_disconnects,
                    "throttled_connections": stats.throttled_connections,
                    "webhook_events_sent": stats.webhook_events_sent,
                    "webhook_events_dropped": stats.webhook_events_dropped,
                    "webhook_posts_failed": stats.webhook_posts_failed,
                    "handshake_refusals": {str(k): v for k, v in stats.handshake_refusals.items()},
                    "errors": dict(stats.errors),
                    "plugin_refusals": dict(stats.plugin_refusals),
                },
            },
        )

    # Publishing.

    def _decode(self, request: HttpRequest) -> Any:
        try:
            return protocol.decode_json(request.body.decode("utf-8"))
        except UnicodeDecodeError:
            raise _Failed(ErrorCode.BAD_REQUEST, "the body is not UTF-8") from None
        except ProtocolError as error:
            raise _Failed(error.code, error.message) from None

    async def _publish_one(self, client: Client, message: protocol.Publish) -> dict[str, Any]:
        broker = self._broker
        limits = broker.config.limits
        size = len(
            protocol.encode_json({"topic": message.topic, **protocol.data_fields(message.data)})
        )
        if size > limits.max_message_size:
            raise _Failed(
                ErrorCode.LIMIT_EXCEEDED,
                f"the message is {size} bytes; at most {limits.max_message_size}",
            )
        try:
            reached = await publishing.publish(
                client,
                message.topic,
                message.data,
                pipeline=broker.pipeline,
                engine=broker.engine,
                max_topic_length=limits.max_topic_length,
            )
        except ProtocolError as error:
            raise _Failed(error.code, error.message) from None
        except Refuse as refusal:
            raise _Failed(refusal.code, refusal.message) from None
        except PluginFailure:  # logged with the plugin's name
            raise _Failed(ErrorCode.INTERNAL, "internal error") from None
        if reached is None:
            return {"subscribers": 0, "dropped": True}
        broker.stats.http_publishes += 1
        return {"subscribers": reached}

    def _client(self, request: HttpRequest, identity: Identity | None) -> Client:
        assert identity is not None
        # One "connection" per key user: rate_limit's per-connection buckets apply to it.
        return Client(f"api:{identity.user}", identity, request.remote)

    def _shutting_down(self) -> HttpResponse | None:
        if not self._broker.stopping:
            return None
        return error_response(503, "internal", "the server is shutting down", RETRY_AFTER)

    async def _publish(self, request: HttpRequest, identity: Identity | None) -> HttpResponse:
        if refused := self._shutting_down():
            return refused
        try:
            message = protocol.parse_publish(self._decode(request))
            result = await self._publish_one(self._client(request, identity), message)
        except ProtocolError as error:
            return _Failed(error.code, error.message).response()
        except _Failed as failed:
            return failed.response()
        return json_response(200, result)

    async def _publish_batch(self, request: HttpRequest, identity: Identity | None) -> HttpResponse:
        if refused := self._shutting_down():
            return refused
        # The whole batch is checked first: a malformed one publishes nothing.
        try:
            body = self._decode(request)
            if not isinstance(body, dict) or body.keys() != {"messages"}:
                raise _Failed(ErrorCode.BAD_REQUEST, 'the body must be {"messages": [...]}')
            if not isinstance(body["messages"], list):
                raise _Failed(ErrorCode.BAD_REQUEST, "'messages' must be an array")
            messages = [
                protocol.parse_publish(message, f"messages[{index}]")
                for index, message in enumerate(body["messages"])
            ]
        except ProtocolError as error:
            return _Failed(error.code, error.message).response()
        except _Failed as failed:
            return failed.response()
        client = self._client(request, identity)
        results = []
        for message in messages:
            try:
                results.append(await self._publish_one(client, message))
            except _Failed as failed:
                results.append({"code": failed.code.value, "message": failed.message})
        return json_response(200, {"results": results})

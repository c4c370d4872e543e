"""The server control API (docs/operations.md): what the application's backend may do
to the whole cluster and learn of it, with an API key whose roles include "admin".

Requests are checked here (no socket); every node's part runs through
`Engine.broadcast` (`broker.node.commands`), and the answers are summed up.
"""

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qs

from ..config.schema import LimitsConfig
from ..core.topics import TopicError, check_filter, check_topic
from ..engine.interface import Engine
from ..plugin import Identity
from ..wire.protocol import ErrorCode, ProtocolError, decode_json
from .http_server import HttpRequest, HttpResponse, error_response, json_response

ADMIN_ROLE = "admin"
MAX_REASON = 100
DEFAULT_CHANNELS = 1000
MAX_CHANNELS = 100_000


class Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _body(request: HttpRequest, allowed: frozenset[str]) -> dict[str, Any]:
    try:
        body = decode_json(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ProtocolError):
        raise Invalid("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    unknown = sorted(body.keys() - allowed)
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)[:200]}")
    return body


def _who(body: dict[str, Any]) -> dict[str, Any]:
    """The clients a command is for: ``{"user": U}`` or ``{"client_id": C}``."""
    named: dict[str, Any] = {key: body[key] for key in ("user", "client_id") if key in body}
    if len(named) != 1:
        raise Invalid('name the clients with exactly one of "user" and "client_id"')
    ((key, value),) = named.items()
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise Invalid(f'"{key}" must be a non-empty string of at most 1024 characters')
    return named


def disconnect_command(request: HttpRequest) -> dict[str, Any]:
    body = _body(request, frozenset({"user", "client_id", "reconnect", "reason"}))
    reconnect = body.get("reconnect", False)
    if not isinstance(reconnect, bool):
        raise Invalid('"reconnect" must be true or false')
    reason = body.get("reason", "disconnected")
    if not isinstance(reason, str) or len(reason.encode()) > MAX_REASON:
        raise Invalid(f'"reason" must be a string of at most {MAX_REASON} bytes')
    return {"op": "disconnect", **_who(body), "reconnect": reconnect, "reason": reason}


def _checked_topic(topic: str, limits: LimitsConfig, *, wildcards: bool) -> str:
    """``topic`` if it is a valid filter (``wildcards``) or topic; Invalid says why not."""
    try:
        (check_filter if wildcards else check_topic)(topic, limits.max_topic_length)
    except TopicError as error:
        raise Invalid(f"topic: {error}") from None
    return topic


def _topic_of(body: dict[str, Any], limits: LimitsConfig) -> str:
    topic = body.get("topic")
    if not isinstance(topic, str):
        raise Invalid('"topic" is required: a topic filter')
    return _checked_topic(topic, limits, wildcards=True)


def subscribe_command(request: HttpRequest, limits: LimitsConfig) -> dict[str, Any]:
    body = _body(request, frozenset({"user", "client_id", "topic", "since"}))
    since = body.get("since")
    if since is not None and (not isinstance(since, str) or len(since) > 100):
        raise Invalid('"since" must be a position (a string)')
    return {"op": "subscribe", **_who(body), "topic": _topic_of(body, limits), "since": since}


def unsubscribe_command(request: HttpRequest, limits: LimitsConfig) -> dict[str, Any]:
    body = _body(request, frozenset({"user", "client_id", "topic"}))
    return {"op": "unsubscribe", **_who(body), "topic": _topic_of(body, limits)}


def _query(request: HttpRequest, allowed: frozenset[str]) -> dict[str, str]:
    try:
        values = parse_qs(request.query, keep_blank_values=True, strict_parsing=False)
    except ValueError:
        raise Invalid("the query does not parse") from None
    unknown = sorted(values.keys() - allowed)
    if unknown:
        raise Invalid(f"unknown parameter(s): {', '.join(unknown)[:200]}")
    if any(len(v) > 1 for v in values.values()):
        raise Invalid("each parameter at most once")
    return {name: v[0] for name, v in values.items()}


def _count(query: dict[str, str], name: str, default: int, most: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not 0 <= int(text) <= most:
        raise Invalid(f"{name} must be a whole number from 0 to {most}")
    return int(text)


Endpoint = Callable[[HttpRequest, Identity | None], Awaitable[HttpResponse]]
NODE_FIELDS = ("node", "version", "connections", "subscriptions", "uptime_s")


async def cluster_nodes(engine: Engine) -> tuple[list[dict[str, Any]], int]:
    """Every node's numbers, by name (`broker.node.commands`); how many did not answer."""
    gathered = await engine.broadcast({"op": "info"})
    nodes = [{key: answer.get(key) for key in NODE_FIELDS} for answer in gathered.answers]
    return sorted(nodes, key=lambda node: str(node["node"])), gathered.unanswered


async def cluster_channels(engine: Engine, prefix: str = "") -> tuple[list[tuple[str, int]], int]:
    """The filters held anywhere in the cluster and their subscribers, most first; how many
    nodes did not answer."""
    totals: dict[str, int] = {}
    gathered = await engine.broadcast({"op": "channels", "prefix": prefix})
    for answer in gathered.answers:
        for topic_filter, count in answer.get("channels", {}).items():
            totals[topic_filter] = totals.get(topic_filter, 0) + int(count)
    return sorted(totals.items(), key=lambda item: (-item[1], item[0])), gathered.unanswered


def _noting(answer: dict[str, Any], unanswered: int) -> dict[str, Any]:
    """``answer``, saying how many nodes it leaves out when some did not answer in time
    (they may still act on a command)."""
    return answer | {"unanswered": unanswered} if unanswered else answer


class ControlApi:
    """The endpoints, for `broker.admin.api.AdminApi` to route to."""

    def __init__(self, engine: Callable[[], Engine], limits: Callable[[], LimitsConfig]) -> None:
        self._engine = engine
        self._limits = limits

    def routes(self) -> dict[str, tuple[str, Endpoint]]:
        return {
            "/api/disconnect": ("POST", self.disconnect),
            "/api/subscribe": ("POST", self.subscribe),
            "/api/unsubscribe": ("POST", self.unsubscribe),
            "/api/info": ("GET", self.info),
            "/api/channels": ("GET", self.channels),
            "/api/presence": ("GET", self.presence),
            "/api/history": ("GET", self.history),
        }

    async def _run(
        self,
        identity: Identity | None,
        work: Callable[[], Awaitable[Any]],
    ) -> HttpResponse:
        if identity is None or ADMIN_ROLE not in identity.roles:
            return error_response(403, "forbidden", 'the API key needs the role "admin"')
        try:
            return json_response(200, await work())
        except Invalid as invalid:
            return error_response(400, "bad_request", invalid.message)
        except ProtocolError as error:
            status = {ErrorCode.UNAVAILABLE: 503, ErrorCode.FORBIDDEN: 403}.get(error.code, 400)
            return error_response(status, error.code.value, error.message)

    async def _acting(
        self,
        identity: Identity | None,
        command: Callable[[], dict[str, Any]],
        done: str,
    ) -> HttpResponse:
        """Run ``command`` (built once the key is checked) on every node; the sum of what
        they did (their ``done`` counts)."""

        async def work() -> dict[str, Any]:
            gathered = await self._engine().broadcast(command())
            total = sum(answer.get(done, 0) for answer in gathered.answers)
            return _noting({done: total}, gathered.unanswered)

        return await self._run(identity, work)

    async def disconnect(self, request: HttpRequest, identity: Identity | None) -> HttpResponse:
        return await self._acting(identity, partial(disconnect_command, request), "disconnected")

    async def subscribe(self, request: HttpRequest, identity: Identity | None) -> HttpResponse:
        command = partial(subscribe_command, request, self._limits())
        return await self._acting(identity, command, "subscribed")

    async def unsubscribe(self, request: HttpRequest, identity: Identity | None) -> HttpResponse:
        command = partial(unsubscribe_command, request, self._limits())
        return await self._acting(identity, command, "unsubscribed")

    async def info(self, request: HttpRequest, identity: Identity | None) -> HttpResponse:
        async def work() -> dict[str, Any]:
            _query(request, frozenset())
            nodes, unanswered = await cluster_nodes(self._engine())
            return _noting({"nodes": nodes}, unanswered)

        return await self._run(identity, work)

    async def channels(self, request: HttpRequest, identity: Identity | None) -> HttpResponse:
        async def work() -> dict[str, Any]:
            query = _query(request, frozenset({"prefix", "limit"}))
            limit = _count(query, "limit", DEFAULT_CHANNELS, MAX_CHANNELS)
            held, unanswered = await cluster_channels(self._engine(), query.get("prefix", ""))
            answer = {
                "channels": [{"topic": f, "subscribers": n} for f, n in held[:limit]],
                "truncated": len(held) > limit,
            }
            return _noting(answer, unanswered)

        return await self._run(identity, work)

    def _topic(self, query: dict[str, str], *, wildcards: bool) -> str:
        topic = query.get("topic")
        if topic is None:
            raise Invalid("topic is required")
        return _checked_topic(topic, self._limits(), wildcards=wildcards)

    async def presence(self, request: HttpRequest, identity: Identity | None) -> HttpResponse:
        async def work() -> dict[str, Any]:
            topic = self._topic(_query(request, frozenset({"topic"})), wildcards=False)
            engine = self._engine()
            if not engine.has_presence(topic):
                raise ProtocolError(ErrorCode.FORBIDDEN, f"no presence on {topic!r}")
            return {"clients": await engine.presence(topic)}

        return await self._run(identity, work)

    async def history(self, request: HttpRequest, identity: Identity | None) -> HttpResponse:
        async def work() -> dict[str, Any]:
            query = _query(request, frozenset({"topic", "limit", "since"}))
            topic_filter = self._topic(query, wildcards=True)
            limits = self._limits()
            most = limits.max_history_request
            limit = _count(query, "limit", most, most)
            page = await self._engine().history(
                topic_filter, limit, limits.max_queued_bytes, query.get("since")
            )
            return page.reply()

        return await self._run(identity, work)

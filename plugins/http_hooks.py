"""http_hooks: the application's backend decides who connects, subscribes and publishes.

Each hook with a URL is a POST of JSON to it (docs/plugins.md has the shapes); the
backend answers 200 with ``{"result": {...}}`` to accept or ``{"error": {"code",
"message"}}`` to refuse. Anything else (a timeout, a non-2xx, an answer of another shape,
the backend down) fails closed: the handshake gets 503, a request the error
``unavailable``, an expiring connection 4001. Calls keep connections to the backend
alive (httpx) and at most ``max_in_flight`` of them run at once.
"""

import logging
import socket
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import trio

from broker.plugin import (
    Client,
    ErrorCode,
    HandshakeRequest,
    Identity,
    Plugin,
    Publication,
    Refuse,
    data_fields,
)

from .backend_replies import (
    KEEP,
    MAX_REPLY_BYTES,
    BadReply,
    Bursts,
    Refused,
    accepted,
    connect_identity,
    published_data,
    read_reply,
    renewed_expiry,
)

log = logging.getLogger("broker.plugins.http_hooks")

HOOKS = ("connect", "subscribe", "publish", "refresh")
KEPT_ALIVE = 8  # idle connections to the backend kept for the next calls
T = TypeVar("T")


def _check_url(instance: Any, attribute: "attrs.Attribute[Any]", value: str | None) -> None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"{attribute.name}: must be an http:// or https:// URL")


def _url() -> Any:
    return attrs.field(default=None, validator=_check_url)


def _check_header_names(instance: Any, attribute: Any, value: list[str]) -> None:
    for name in value:
        if not name or not name.isascii() or any(c in name for c in " :\r\n"):
            raise ValueError(f"forward_headers: {name[:40]!r} is not a header name")


def _read_headers_file(path: str) -> dict[str, str]:
    """Static headers for every call (an API key, say): a TOML table of strings."""
    try:
        table = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"headers_file {path}: invalid TOML: {error}") from None
    if not all(isinstance(value, str) for value in table.values()):
        # Never the values: they are secrets.
        raise ValueError(f"headers_file {path}: every header's value must be a string")
    return table


class HttpHooks(Plugin):
    @attrs.frozen
    class Options:
        connect_url: str | None = _url()
        subscribe_url: str | None = _url()
        publish_url: str | None = _url()
        refresh_url: str | None = _url()
        # Seconds per call, all included (waiting for a free connection too): keep it
        # below [server] plugin_timeout, which bounds the whole hook.
        timeout: float = attrs.field(
            default=1.0, validator=[attrs.validators.gt(0), attrs.validators.le(60)]
        )
        forward_headers: list[str] = attrs.field(factory=list, validator=_check_header_names)
        headers_file: str | None = None
        max_in_flight: int = attrs.field(
            default=100, validator=[attrs.validators.ge(1), attrs.validators.le(10_000)]
        )

    options: Options

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        headers = {} if options.headers_file is None else _read_headers_file(options.headers_file)
        self._forwarded = {name.lower(): name for name in options.forward_headers}
        self._bursts = {hook: Bursts() for hook in HOOKS}
        # Few idle connections kept: httpcore looks at every pooled connection (a system
        # call each) for each request, so a pool left large by a burst (every client
        # subscribing after a restart) would make every later call slow. And no Nagle: a
        # request leaves in two writes (head, then body), and the second would wait for
        # the backend's delayed ACK (40 ms a call).
        limits = httpx.Limits(
            max_connections=options.max_in_flight,
            max_keepalive_connections=min(options.max_in_flight, KEPT_ALIVE),
        )
        transport = httpx.AsyncHTTPTransport(
            limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        )
        self._http = httpx.AsyncClient(
            headers=headers, timeout=options.timeout, transport=transport, follow_redirects=False
        )

    async def _call(
        self, hook: str, url: str, payload: dict[str, Any], read: Callable[[dict[str, Any]], T]
    ) -> T:
        """One call's result, as ``read`` takes it; Refused if the backend refused,
        BadReply if it failed (logged once per burst)."""
        started = time.perf_counter()
        try:
            with trio.fail_after(self.options.timeout):
                status, body = await self._post(url, payload)
            result = read(read_reply(status, body))
        except Refused:
            self._bursts[hook].success()
            raise
        except (BadReply, trio.TooSlowError, httpx.HTTPError) as error:
            failure = _as_bad_reply(error)
            self.metrics.count("hook_failures", hook=hook, reason=failure.reason)
            unlogged = self._bursts[hook].failure(time.monotonic())
            if unlogged is not None:
                more = f" ({unlogged} more failures since the last logged)" if unlogged else ""
                log.warning("%s hook %s failed: %s%s", hook, url, failure, more)
            raise failure from None
        finally:
            self.metrics.observe("hook_seconds", time.perf_counter() - started, hook=hook)
        self._bursts[hook].success()
        return result

    async def _post(self, url: str, payload: dict[str, Any]) -> tuple[int, bytes]:
        async with self._http.stream("POST", url, json=payload) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_REPLY_BYTES:
                    raise BadReply("reply", f"longer than {MAX_REPLY_BYTES} bytes")
            return response.status_code, bytes(body)

    async def authenticate(self, request: HandshakeRequest, identity: Identity) -> Identity | None:
        url = self.options.connect_url
        if url is None:
            return None
        headers: dict[str, str] = {}
        for name, value in request.headers:
            if name in self._forwarded:
                # A header sent twice is one list (RFC 9110); cookies join with "; ".
                joiner = "; " if name == "cookie" else ", "
                original = self._forwarded[name]
                headers[original] = (
                    f"{headers[original]}{joiner}{value}" if original in headers else value
                )
        payload = {
            "client_id": request.client_id,
            "remote": request.remote_address,
            "origin": request.origin,
            "headers": headers,
            "query": {name: values[0] for name, values in request.query.items() if values},
        }
        try:
            return await self._call("connect", url, payload, connect_identity)
        except Refused as refused:
            raise Refuse(refused.message, status=403) from None
        except BadReply:
            raise Refuse("the application's backend is unavailable", status=503) from None

    def _who(self, client: Client) -> dict[str, Any]:
        identity = client.identity
        return {
            "client_id": client.client_id,
            "user": identity.user,
            "roles": sorted(identity.roles),
        }

    async def _ask(
        self, hook: str, url: str, payload: dict[str, Any], read: Callable[[dict[str, Any]], T]
    ) -> T:
        """A request's call: a refusal is the request's error with the backend's code."""
        try:
            return await self._call(hook, url, payload, read)
        except Refused as refused:
            raise Refuse(refused.message, code=refused.code) from None
        except BadReply:
            raise Refuse(
                f"the application's backend is unavailable ({hook})", code=ErrorCode.UNAVAILABLE
            ) from None

    async def authorize_subscribe(self, client: Client, topic_filter: str) -> None:
        url = self.options.subscribe_url
        if url is None:
            return
        await self._ask("subscribe", url, {**self._who(client), "topic": topic_filter}, accepted)

    async def authorize_publish(self, client: Client, publication: Publication) -> Publication:
        url = self.options.publish_url
        if url is None:
            return publication
        payload = {
            **self._who(client),
            "topic": publication.topic,
            **data_fields(publication.data),
        }
        result = await self._ask("publish", url, payload, published_data)
        if result is KEEP:
            return publication
        return attrs.evolve(publication, data=result)

    async def renew(self, client: Client) -> float | None:
        url = self.options.refresh_url
        if url is None:
            return None
        return await self._ask("refresh", url, self._who(client), renewed_expiry)

    async def aclose(self) -> None:
        await self._http.aclose()


def _as_bad_reply(error: Exception) -> BadReply:
    if isinstance(error, BadReply):
        return error
    if isinstance(error, trio.TooSlowError | httpx.TimeoutException):
        return BadReply("timeout", "no answer in time")
    return BadReply("network", f"{type(error).__name__}: {error}")

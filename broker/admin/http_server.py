"""A small HTTP/1.1 server on h11: keep-alive, with bounds on request size and time.

`serve_connection` reads requests from one stream and answers each with what the
handler returns; everything about the protocol (framing, keep-alive, 100-continue,
malformed requests) is h11's. The handler sees whole requests, bodies read.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import attrs
import h11
import trio

log = logging.getLogger("broker.http")

RECEIVE_SIZE = 65_536
# Request line and headers together, like the WebSocket handshake's bound.
MAX_HEAD_SIZE = 8_192


@attrs.frozen
class HttpRequest:
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]  # names in lower case
    body: bytes
    remote: str

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)


@attrs.frozen
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(
    status: int, content: Any, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    body = json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    return HttpResponse(status, body, headers=headers)


def error_response(
    status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    return json_response(status, {"code": code, "message": message}, headers)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@attrs.frozen
class HttpLimits:
    max_body_size: int
    request_timeout: float  # from a request's first byte to its last
    idle_timeout: float  # between requests on a kept-alive connection


class _Refused(Exception):
    """The request cannot be read: answer this and close the connection."""

    def __init__(self, response: HttpResponse) -> None:
        self.response = response


def _too_large(limits: HttpLimits) -> _Refused:
    message = f"the body is larger than {limits.max_body_size} bytes"
    return _Refused(error_response(413, "limit_exceeded", message))


async def _next_event(connection: h11.Connection, stream: trio.abc.ReceiveStream) -> Any:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        connection.receive_data(bytes(await stream.receive_some(RECEIVE_SIZE)))


async def _read_request(
    connection: h11.Connection, stream: trio.abc.Stream, limits: HttpLimits, remote: str
) -> HttpRequest | None:
    """The next whole request, or None when the client closed the connection."""
    head = await _next_event(connection, stream)
    if isinstance(head, h11.ConnectionClosed):
        return None
    assert isinstance(head, h11.Request)
    # h11 bounds a head still arriving; one that came whole in a read is measured here.
    size = len(head.method) + len(head.target) + sum(len(k) + len(v) + 4 for k, v in head.headers)
    if size > MAX_HEAD_SIZE:
        raise _Refused(
            error_response(431, "bad_request", f"request headers over {MAX_HEAD_SIZE} bytes")
        )
    headers = tuple(
        (bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in head.headers
    )
    length = next((value for name, value in headers if name == "content-length"), None)
    if length is not None and int(length) > limits.max_body_size:
        raise _too_large(limits)
    if connection.they_are_waiting_for_100_continue:
        await stream.send_all(
            connection.send(h11.InformationalResponse(status_code=100, headers=[]))
        )
    body = bytearray()
    while not isinstance(event := await _next_event(connection, stream), h11.EndOfMessage):
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Data)
        body += event.data
        if len(body) > limits.max_body_size:  # chunked bodies say no length up front
            raise _too_large(limits)
    target = bytes(head.target).decode("latin-1")
    path, _, query = target.partition("?")
    return HttpRequest(head.method.decode("latin-1"), path, query, headers, bytes(body), remote)


async def _send(
    connection: h11.Connection, stream: trio.abc.SendStream, response: HttpResponse, server: str
) -> None:
    headers = [
        ("Server", server),
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        *response.headers,
    ]
    reason = HTTPStatus(response.status).phrase.encode()
    data = connection.send(
        h11.Response(status_code=response.status, headers=headers, reason=reason)
    )
    data += connection.send(h11.Data(data=response.body)) if response.body else b""
    data += connection.send(h11.EndOfMessage())
    await stream.send_all(data)


async def serve_connection(
    stream: trio.abc.Stream, handler: Handler, limits: HttpLimits, remote: str, server: str
) -> None:
    """Answer requests until the client closes, errs or idles too long."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
    while True:
        if not any(connection.trailing_data):  # nothing pipelined: wait, idle
            data = b""
            with trio.move_on_after(limits.idle_timeout):
                data = bytes(await stream.receive_some(RECEIVE_SIZE))
            if not data:  # closed, or idle too long
                return
            connection.receive_data(data)
        try:
            with trio.fail_after(limits.request_timeout):
                request = await _read_request(connection, stream, limits, remote)
        except _Refused as refused:
            await _send(connection, stream, refused.response, server)
            return
        except trio.TooSlowError:
            response = error_response(408, "bad_request", "the request took too long to arrive")
            if connection.our_state is h11.SEND_RESPONSE:
                await _send(connection, stream, response, server)
            return
        except h11.RemoteProtocolError as error:
            status = error.error_status_hint
            reason = str(error) or HTTPStatus(status).phrase
            if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _send(
                    connection, stream, error_response(status, "bad_request", reason), server
                )
            return
        if request is None:
            return
        try:
            response = await handler(request)
        except Exception:
            log.exception("error answering %s %s from %s", request.method, request.path, remote)
            response = error_response(500, "internal", "internal error")
        await _send(connection, stream, response, server)
        if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
            return
        connection.start_next_cycle()

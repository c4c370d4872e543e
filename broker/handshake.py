"""The HTTP side of a WebSocket connection: read the upgrade request, refuse or accept it."""

import http
import re
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio
from wsproto import WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.utilities import RemoteProtocolError

from .plugin import HandshakeRequest

RECEIVE_SIZE = 16_384
# The upgrade request's size at most, headers included (nginx's default header buffer).
# Below h11's own 16 KiB limit, which would only say 400.
MAX_REQUEST_SIZE = 8_192
# Where h11 sees a request's head end (it takes bare LF line endings too).
_END_OF_HEAD = re.compile(rb"\n\r?\n")


@attrs.frozen
class Refusal:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


class HandshakeFailed(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


def plugin_view(request: Request, remote: str) -> HandshakeRequest:
    """The upgrade request as plugins see it."""
    target = urlsplit(request.target)
    query = {key: tuple(values) for key, values in parse_qs(target.query).items()}
    headers = [("host", request.host)]
    headers += [
        (bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1"))
        for name, value in request.extra_headers
    ]
    return HandshakeRequest(target.path, query, tuple(headers), remote)


# A browser's address bar or curl, not a WebSocket client: say what the endpoint is.
NOT_WEBSOCKET = Refusal(
    426,
    "this is a WebSocket endpoint: connect with a WebSocket client, for example "
    'new WebSocket("ws://HOST:PORT/ws") in a browser\'s JavaScript',
    (("Upgrade", "websocket"),),
)


def _is_plain_get(request: bytes) -> bool:
    """Whether the head of ``request`` is a GET that asks for no upgrade at all."""
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(request)
    try:
        event = parser.next_event()
    except h11.RemoteProtocolError:
        return False
    if not isinstance(event, h11.Request) or event.method != b"GET":
        return False
    connection = b",".join(value for name, value in event.headers if name == b"connection")
    upgrade = any(name == b"upgrade" for name, _ in event.headers)
    return not upgrade and b"upgrade" not in connection.lower()


@attrs.frozen
class Received:
    request: Request
    after: bytes  # what the client sent after the request: its first frames


def _after_head(received: bytes) -> bytes:
    """What follows the request's head (which ends with an empty line)."""
    end = _END_OF_HEAD.search(received)
    return received[end.end() :] if end is not None else b""


async def receive_request(stream: trio.abc.ReceiveStream, ws: WSConnection) -> Received | None:
    """The client's upgrade request, or None if it hung up first."""
    received = b""
    while True:
        for event in ws.events():
            if isinstance(event, Request):
                return Received(event, _after_head(received))
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            return None
        received += data
        if len(received) > MAX_REQUEST_SIZE:
            reason = f"request headers larger than {MAX_REQUEST_SIZE} bytes"
            raise HandshakeFailed(Refusal(431, reason))
        try:
            ws.receive_data(bytes(data))
        except RemoteProtocolError as exc:
            if _is_plain_get(received):
                raise HandshakeFailed(NOT_WEBSOCKET) from None
            hint = exc.event_hint
            status = getattr(hint, "status_code", 400)
            headers = tuple(
                (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
                for name, value in getattr(hint, "headers", ())
            )
            raise HandshakeFailed(Refusal(status, str(exc), headers)) from None
        except (UnicodeError, ValueError) as exc:
            raise HandshakeFailed(Refusal(400, f"malformed request: {exc}")) from None


def http_error(refusal: Refusal) -> bytes:
    """A complete HTTP/1.1 error response that ends the connection."""
    phrase = http.HTTPStatus(refusal.status).phrase
    body = f"{refusal.status} {phrase}: {refusal.reason}\n".encode()
    head = [f"HTTP/1.1 {refusal.status} {phrase}"]
    head += [f"{name}: {value}" for name, value in refusal.headers]
    head += [
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    return "\r\n".join([*head, "", ""]).encode() + body


async def refuse(stream: trio.abc.SendStream, refusal: Refusal) -> None:
    await stream.send_all(http_error(refusal))


async def accept(stream: trio.abc.SendStream, ws: WSConnection) -> None:
    await stream.send_all(ws.send(AcceptConnection()))

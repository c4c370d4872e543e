"""The HTTP side of a WebSocket connection: read the upgrade request, refuse or accept it."""

import http
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
from wsproto import WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.utilities import RemoteProtocolError

from .plugin import HandshakeRequest

RECEIVE_SIZE = 16_384
# The upgrade request's size at most, headers included (nginx's default header buffer).
# Below h11's own 16 KiB limit, which would only say 400.
MAX_REQUEST_SIZE = 8_192


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


async def receive_request(stream: trio.abc.ReceiveStream, ws: WSConnection) -> Request | None:
    """The client's upgrade request, or None if it hung up first."""
    received = 0
    while True:
        for event in ws.events():
            if isinstance(event, Request):
                return event
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            return None
        received += len(data)
        if received > MAX_REQUEST_SIZE:
            reason = f"request headers larger than {MAX_REQUEST_SIZE} bytes"
            raise HandshakeFailed(Refusal(431, reason))
        try:
            ws.receive_data(bytes(data))
        except RemoteProtocolError as exc:
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

"""The HTTP side of a WebSocket connection: read the upgrade request, refuse or accept it."""

import http
from urllib.parse import urlsplit

import attrs
import trio
from wsproto import WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.utilities import RemoteProtocolError

RECEIVE_SIZE = 16_384


class HandshakeFailed(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@attrs.frozen
class Refusal:
    status: int
    reason: str


def request_path(request: Request) -> str:
    return urlsplit(request.target).path


async def receive_request(stream: trio.abc.ReceiveStream, ws: WSConnection) -> Request | None:
    """The client's upgrade request, or None if it hung up first."""
    while True:
        for event in ws.events():
            if isinstance(event, Request):
                return event
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            return None
        try:
            ws.receive_data(bytes(data))
        except RemoteProtocolError as exc:
            raise HandshakeFailed(getattr(exc.event_hint, "status_code", 400), str(exc)) from None
        except (UnicodeError, ValueError) as exc:
            raise HandshakeFailed(400, f"malformed request: {exc}") from None


def http_error(status: int, reason: str) -> bytes:
    """A complete HTTP/1.1 error response that ends the connection."""
    body = f"{status} {http.HTTPStatus(status).phrase}: {reason}\n".encode()
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


async def refuse(stream: trio.abc.SendStream, refusal: Refusal) -> None:
    await stream.send_all(http_error(refusal.status, refusal.reason))


async def accept(stream: trio.abc.SendStream, ws: WSConnection) -> None:
    await stream.send_all(ws.send(AcceptConnection()))

"""A WebSocket client connection on anyio and wsproto: TCP (or TLS), handshake, text frames.

anyio, so that it runs under Trio and under asyncio alike; wsproto does the protocol.
"""

import contextlib
import ssl
from urllib.parse import urlsplit

import anyio
import anyio.abc
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from .errors import ConnectionLost, HandshakeRefused

RECEIVE_SIZE = 65_536
MAX_MESSAGE = 64 * 2**20  # what one message may grow to: a broker's max_message_size is less


def parse_url(url: str) -> tuple[bool, str, int, str]:
    """``ws://host:port/path?query`` as (tls, host, port, target); ValueError if it is not."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a WebSocket URL (ws://HOST:PORT/PATH or wss://…): {url!r}")
    tls = parts.scheme == "wss"
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return tls, parts.hostname, port, target


class WebSocket:
    def __init__(self, stream: anyio.abc.ByteStream, ws: WSConnection) -> None:
        self._stream = stream
        self._ws = ws
        self._send_lock = anyio.Lock()
        self._parts: list[str] = []
        self._binary_parts: list[bytes] = []
        self._size = 0
        self._early: list[Event] = []  # read with the handshake's answer

    @classmethod
    async def connect(
        cls,
        url: str,
        headers: list[tuple[str, str]],
        ssl_context: ssl.SSLContext | None = None,
        subprotocol: str | None = None,
    ) -> "WebSocket":
        """Open the TCP (TLS for wss://) connection and do the handshake.

        Raises HandshakeRefused when the server answers with an HTTP error, OSError when it
        cannot be reached, ConnectionLost when it hangs up meanwhile."""
        tls, host, port, target = parse_url(url)
        stream: anyio.abc.ByteStream
        if tls:
            stream = await anyio.connect_tcp(
                host, port, tls=True, ssl_context=ssl_context or ssl.create_default_context()
            )
        else:
            stream = await anyio.connect_tcp(host, port)
        ws = WSConnection(ConnectionType.CLIENT)
        netloc = host if ":" not in host else f"[{host}]"
        request = Request(
            host=f"{netloc}:{port}",
            target=target,
            extra_headers=[(name.encode(), value.encode()) for name, value in headers],
            subprotocols=[] if subprotocol is None else [subprotocol],
        )
        try:
            await stream.send(ws.send(request))
            websocket = cls(stream, ws)
            await websocket._handshake()
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
        return websocket

    async def _handshake(self) -> None:
        refused: RejectConnection | None = None
        body = b""
        while True:
            events = await self._events()
            for index, event in enumerate(events):
                if isinstance(event, AcceptConnection):
                    # The first messages may have come in the same read as the answer.
                    self._early = events[index + 1 :]
                    return
                if isinstance(event, RejectConnection):
                    refused = event
                    if not event.has_body:
                        raise HandshakeRefused(event.status_code, "")
                elif isinstance(event, RejectData) and refused is not None:
                    body += event.data
                    if event.body_finished:
                        raise HandshakeRefused(refused.status_code, body.decode(errors="replace"))

    async def _events(self) -> list[Event]:
        try:
            data = await self._stream.receive(RECEIVE_SIZE)
        except (
            anyio.EndOfStream,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            OSError,
        ) as error:
            raise ConnectionLost("the connection was lost") from error
        self._ws.receive_data(data)
        return list(self._ws.events())

    async def send(self, message: str | bytes) -> None:
        """One message: text, or binary (MessagePack's)."""
        if self._ws.state is not ConnectionState.OPEN:
            # The server's close came in (the reader reports it): no more messages out.
            raise ConnectionLost("the connection is closing")
        event = BytesMessage(data=message) if isinstance(message, bytes) else TextMessage(message)
        await self._send_bytes(self._ws.send(event))

    async def _send_bytes(self, data: bytes) -> None:
        try:
            async with self._send_lock:
                await self._stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
            raise ConnectionLost("the connection was lost") from error

    async def receive(self) -> list[str | bytes]:
        """The messages that arrived (at least one): text, or binary; pings are answered
        meanwhile.

        Raises ConnectionLost (with the close code and reason, if the server sent them)."""
        messages: list[str | bytes] = []
        while not messages:
            events, self._early = self._early or await self._events(), []
            for event in events:
                if isinstance(event, TextMessage):
                    self._parts.append(event.data)
                    self._size += len(event.data)
                    if self._size > MAX_MESSAGE:
                        raise ConnectionLost("a message from the server is too large")
                    if event.message_finished:
                        messages.append("".join(self._parts))
                        self._parts, self._size = [], 0
                elif isinstance(event, Ping):
                    await self._send_bytes(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    await self._answer_close(event)
                    raise ConnectionLost(
                        f"closed by the server: {event.code} {event.reason or ''}".strip(),
                        event.code,
                        event.reason,
                    )
                elif isinstance(event, BytesMessage):
                    self._binary_parts.append(bytes(event.data))
                    self._size += len(event.data)
                    if self._size > MAX_MESSAGE:
                        raise ConnectionLost("a message from the server is too large")
                    if event.message_finished:
                        messages.append(b"".join(self._binary_parts))
                        self._binary_parts, self._size = [], 0
        return messages

    async def _answer_close(self, event: CloseConnection) -> None:
        with contextlib.suppress(ConnectionLost):  # gone already: nothing to answer
            await self._send_bytes(self._ws.send(event.response()))

    async def aclose(self) -> None:
        """Say goodbye (1000) if still open, and close the socket."""
        with anyio.move_on_after(1, shield=True), contextlib.suppress(ConnectionLost):
            if self._ws.state is ConnectionState.OPEN:
                await self._send_bytes(self._ws.send(CloseConnection(code=1000)))
        await anyio.aclose_forcefully(self._stream)

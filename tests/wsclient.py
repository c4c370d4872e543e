"""A Trio WebSocket client for the tests: the `websockets` library's own sans-IO
protocol (handshake, framing, masking, close handshake) driven over a Trio socket.

It reads only when a test asks it to, so a test can make a subscriber stall
simply by not calling `recv`.
"""

import contextlib
import json
import ssl
from collections import deque
from typing import Any

import msgpack
import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

TIMEOUT = 10.0


class Rejected(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"handshake refused with HTTP {status}: {body!r}")
        self.status = status
        self.body = body


class Closed(Exception):
    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"connection closed: {code} {reason!r}")
        self.code = code
        self.reason = reason


class WsClient:
    def __init__(self, stream: trio.abc.Stream, protocol: ClientProtocol) -> None:
        self.stream = stream
        self.protocol = protocol
        self._frames: deque[Frame] = deque()
        self.eof = False
        self.bytes_received = 0  # from the socket, after the handshake (compressed or not)
        self.response: Response | None = None  # the 101

    @classmethod
    async def connect(
        cls,
        url: str,
        headers: dict[str, str] | None = None,
        timeout: float = TIMEOUT,
        receive_buffer: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        compression: bool = False,
        subprotocols: list[str] | None = None,
    ) -> "WsClient":
        """Connect; ``receive_buffer`` shrinks SO_RCVBUF so that backpressure comes sooner;
        ``compression`` offers permessage-deflate as websockets does by default.

        A wss:// URL verifies the server with ``ssl_context`` (the system's CAs by default).
        """
        uri = parse_uri(url)
        stream: trio.abc.Stream
        if receive_buffer is None:
            stream = await trio.open_tcp_stream(uri.host, uri.port)
        else:
            sock = trio.socket.socket()
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
            await sock.connect((uri.host, uri.port))
            stream = trio.SocketStream(sock)
        if uri.secure:
            context = ssl_context or ssl.create_default_context()
            stream = trio.SSLStream(stream, context, server_hostname=uri.host)
        extensions = enable_client_permessage_deflate(None) if compression else None
        offered = [Subprotocol(name) for name in subprotocols] if subprotocols else None
        protocol = ClientProtocol(uri, max_size=None, extensions=extensions, subprotocols=offered)
        request = protocol.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        protocol.send_request(request)
        client = cls(stream, protocol)
        try:
            with trio.fail_after(timeout):
                await client._flush()
                response = await client._handshake_response()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        if response.status_code != 101 or isinstance(protocol.handshake_exc, InvalidStatus):
            await trio.aclose_forcefully(stream)
            raise Rejected(response.status_code, response.body or b"")
        client.response = response
        return client

    async def _handshake_response(self) -> Response:
        while True:
            data = await self.stream.receive_some(65536)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            response = None
            for event in self.protocol.events_received():
                # Frames can arrive in the same read as the response: keep them.
                if isinstance(event, Response):
                    response = event
                else:
                    self._frames.append(event)
            if response is not None:
                return response
            if not data:
                raise Closed(None, "EOF during handshake")

    async def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                await self.stream.send_all(data)

    def _closed(self) -> Closed:
        received = self.protocol.close_rcvd
        if received is None:
            return Closed(None, None)  # no close frame: an abnormal closure
        return Closed(received.code, received.reason)

    async def _read_more(self) -> None:
        if self.eof:
            raise self._closed()
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        if data:
            self.bytes_received += len(data)
            self.protocol.receive_data(data)
        else:
            self.eof = True
            self.protocol.receive_eof()
        self._frames.extend(self.protocol.events_received())  # type: ignore[arg-type]
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._flush()  # pongs and close replies

    async def recv_frame(self, timeout: float = TIMEOUT) -> Frame:
        with trio.fail_after(timeout):
            while not self._frames:
                await self._read_more()
            return self._frames.popleft()

    async def recv(self, timeout: float = TIMEOUT) -> Any:
        """The next text message as JSON; raises Closed at the close frame."""
        with trio.fail_after(timeout):
            while True:
                frame = await self.recv_frame()
                if frame.opcode is Opcode.TEXT:
                    return json.loads(frame.data)
                if frame.opcode is Opcode.CLOSE:
                    raise self._closed()
                if frame.opcode is Opcode.BINARY:
                    raise AssertionError(f"unexpected binary frame {frame.data!r}")

    async def wait_closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str | None]:
        """Read (and discard) until the server closes; return its close code and reason."""
        with trio.fail_after(timeout):
            while True:
                try:
                    frame = await self.recv_frame()
                except Closed as closed:
                    return closed.code, closed.reason
                if frame.opcode is Opcode.CLOSE:
                    closed = self._closed()
                    return closed.code, closed.reason

    async def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        await self._flush()

    async def send_bytes(self, data: bytes) -> None:
        self.protocol.send_binary(data)
        await self._flush()

    async def send_ping(self, data: bytes) -> None:
        self.protocol.send_ping(data)
        await self._flush()

    async def send(self, obj: Any) -> None:
        await self.send_text(json.dumps(obj))

    async def send_msgpack(self, obj: Any) -> None:
        await self.send_bytes(msgpack.packb(obj))

    async def recv_msgpack(self, timeout: float = TIMEOUT) -> Any:
        """The next binary message as MessagePack (a trio-broker.msgpack connection's)."""
        with trio.fail_after(timeout):
            while True:
                frame = await self.recv_frame()
                if frame.opcode is Opcode.BINARY:
                    return msgpack.unpackb(frame.data)
                if frame.opcode is Opcode.CLOSE:
                    raise self._closed()
                if frame.opcode is Opcode.TEXT:
                    raise AssertionError(f"unexpected text frame {frame.data!r}")

    async def request_msgpack(self, obj: Any, timeout: float = TIMEOUT) -> Any:
        await self.send_msgpack(obj)
        return await self.recv_msgpack(timeout)

    async def request(self, obj: Any, timeout: float = TIMEOUT) -> Any:
        """Send a request and return the next message (its reply, in a quiet test)."""
        await self.send(obj)
        return await self.recv(timeout)

    async def aclose(self) -> None:
        """Close (or finish closing) and wait for the server to drop the TCP connection."""
        try:
            if self.protocol.state.name == "OPEN":
                self.protocol.send_close(1000)
                await self._flush()
            with trio.move_on_after(2):
                while not self.eof:
                    await self._read_more()
        except (trio.BrokenResourceError, trio.ClosedResourceError, Closed):
            pass
        finally:
            await trio.aclose_forcefully(self.stream)

"""The HTTP side of a WebSocket connection (no I/O): the upgrade request read and checked as
RFC 6455 section 4.2.1 says, and the bytes that refuse or accept it."""

import http
from urllib.parse import urlsplit

import attrs
import httptools
from wsproto.utilities import generate_accept_token

from ..wire import encodings

RECEIVE_SIZE = 16_384
# Where the WebSocket listener serves Server-Sent Events (docs/protocol.md).
STREAM_PATH = "/sse"
# The upgrade request's size at most, headers included (nginx's default header buffer).
MAX_REQUEST_SIZE = 8_192
_VERSION_13 = (("Sec-WebSocket-Version", "13"),)
# What HTTP allows around a header's value (RFC 9110 section 5.5: OWS).
_WHITESPACE = b" \t"


@attrs.frozen
class Refusal:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


class HandshakeFailed(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


# A browser's address bar or curl, not a WebSocket client: say what the endpoint is.
NOT_WEBSOCKET = Refusal(
    426,
    "this is a WebSocket endpoint: connect with a WebSocket client, for example "
    'new WebSocket("ws://HOST:PORT/ws") in a browser\'s JavaScript',
    (("Upgrade", "websocket"),),
)


@attrs.frozen
class UpgradeRequest:
    """An upgrade request that RFC 6455 section 4.2.1 accepts."""

    target: str
    host: str
    key: bytes  # Sec-WebSocket-Key
    # Its other headers (names lowercase), but Host and the extension and subprotocol
    # offers.
    extra_headers: tuple[tuple[bytes, bytes], ...]
    # The Sec-WebSocket-Extensions values (broker.wire.deflate reads them).
    extensions: tuple[bytes, ...] = ()
    # The subprotocols offered (Sec-WebSocket-Protocol), in the client's order.
    subprotocols: tuple[str, ...] = ()
    # A plain GET of the event stream (Server-Sent Events, broker.wire.sse), not an
    # upgrade: no key, no extensions, no subprotocols.
    stream: bool = False


@attrs.frozen
class IncomingUpgrade:
    """An accepted upgrade request, and the bytes the client sent right behind it."""

    request: UpgradeRequest
    after: bytes  # what the client sent after the request: its first frames


@attrs.frozen
class RequestHead:
    """A request's line and headers as the parser read them (names in lowercase)."""

    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",")]


def _is_plain_get(event: RequestHead) -> bool:
    """Whether ``event`` is a GET that asks for no upgrade at all."""
    if event.method != b"GET":
        return False
    connection = b",".join(value for name, value in event.headers if name == b"connection")
    upgrade = any(name == b"upgrade" for name, _ in event.headers)
    return not upgrade and b"upgrade" not in connection.lower()


def _bad(
    reason: str, status: int = 400, headers: tuple[tuple[str, str], ...] = ()
) -> HandshakeFailed:
    return HandshakeFailed(Refusal(status, reason, headers))


def check_upgrade(event: RequestHead) -> UpgradeRequest:
    """The request if it is a WebSocket upgrade (checked as wsproto checks it, with its
    answers); HandshakeFailed saying what is missing otherwise."""
    if _is_plain_get(event):
        if urlsplit(event.target.decode("ascii", "replace")).path == STREAM_PATH:
            return _stream_request(event)
        raise HandshakeFailed(NOT_WEBSOCKET)
    if event.method != b"GET":
        raise _bad("Request method must be GET")
    connection: list[bytes] = []
    host = key = version = None
    upgrade = b""
    extra: list[tuple[bytes, bytes]] = []
    extensions: list[bytes] = []
    protocols: list[bytes] = []
    for name, value in event.headers:
        if name == b"host":
            host = value
            continue
        if name == b"sec-websocket-extensions":
            extensions.append(bytes(value))
            continue
        if name == b"sec-websocket-protocol":
            # Names are case-sensitive (RFC 6455 section 4.1): not `_tokens`.
            protocols += [token.strip() for token in value.split(b",") if token.strip()]
            continue
        if name == b"connection":
            connection += _tokens(value)
        elif name == b"sec-websocket-key":
            key = value
        elif name == b"sec-websocket-version":
            version = value
        elif name == b"upgrade":
            upgrade = value
        extra.append((bytes(name), bytes(value)))
    if b"upgrade" not in connection:
        raise _bad("Missing header, 'Connection: Upgrade'")
    if version != b"13":
        status = 426 if version else 400
        raise _bad("Missing header, 'Sec-WebSocket-Version'", status, _VERSION_13)
    if key is None:
        raise _bad("Missing header, 'Sec-WebSocket-Key'")
    if upgrade.lower() != b"websocket":
        raise _bad("Missing header, 'Upgrade: websocket'")
    if host is None:
        raise _bad("Missing header, 'Host'")
    try:
        target, host_name = event.target.decode("ascii"), host.decode("idna")
        offered = tuple(protocol.decode("ascii") for protocol in protocols)
    except UnicodeError as exc:
        raise _bad(f"malformed request: {exc}") from None
    if offered and encodings.choose_subprotocol(offered) is None:
        names = ", ".join(offered)[:200]
        raise _bad(
            f"unknown subprotocol(s) {names}: this broker speaks "
            + ", ".join(encodings.SUBPROTOCOLS)
        )
    return UpgradeRequest(target, host_name, bytes(key), tuple(extra), tuple(extensions), offered)


def _stream_request(event: RequestHead) -> UpgradeRequest:
    host = None
    extra: list[tuple[bytes, bytes]] = []
    for name, value in event.headers:
        if name == b"host":
            host = value
        else:
            extra.append((bytes(name), bytes(value)))
    if host is None:
        raise _bad("Missing header, 'Host'")
    try:
        target, host_name = event.target.decode("ascii"), host.decode("idna")
    except UnicodeError as exc:
        raise _bad(f"malformed request: {exc}") from None
    return UpgradeRequest(target, host_name, b"", tuple(extra), stream=True)


class _HeadCollector:
    """httptools' callbacks: the target and the headers, until the head ends."""

    __slots__ = ("complete", "headers", "target")

    def __init__(self) -> None:
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.target += url  # in pieces when the target is split across reads

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value.strip(_WHITESPACE)))

    def on_headers_complete(self) -> None:
        self.complete = True


class RequestReader:
    """The upgrade request from the bytes the client sends (no I/O: the node reads them).

    llhttp (through httptools) reads the head: the same C parser as Node's, several
    times faster than h11 at what every connection of a reconnect storm costs.
    """

    def __init__(self) -> None:
        self._head = _HeadCollector()
        self._parser = httptools.HttpRequestParser(self._head)
        self._size = 0

    def receive(self, data: bytes) -> IncomingUpgrade | None:
        """The request once its head is complete (None until then); raises HandshakeFailed
        for one that is too large, malformed, or not an upgrade RFC 6455 accepts."""
        self._size += len(data)
        if self._size > MAX_REQUEST_SIZE:
            reason = f"request headers larger than {MAX_REQUEST_SIZE} bytes"
            raise HandshakeFailed(Refusal(431, reason))
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            after = data[upgrade.args[0] :]  # the client's first frames, if it sent any
        except httptools.HttpParserError:
            # What follows a complete head is not read (a plain GET has no frames).
            if not self._head.complete:
                raise _bad("Bad HTTP message") from None
            after = b""
        else:
            if not self._head.complete:
                return None
            after = b""
        head = RequestHead(self._parser.get_method(), self._head.target, tuple(self._head.headers))
        return IncomingUpgrade(check_upgrade(head), after)


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


def accept_response(request: UpgradeRequest, extensions: bytes | None = None) -> bytes:
    """The 101 answer, with the extensions agreed on and the subprotocol chosen."""
    agreed = b"" if extensions is None else b"Sec-WebSocket-Extensions: " + extensions + b"\r\n"
    subprotocol = encodings.choose_subprotocol(request.subprotocols)
    if subprotocol is not None:
        agreed += b"Sec-WebSocket-Protocol: " + subprotocol.encode() + b"\r\n"
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + generate_accept_token(request.key) + b"\r\n" + agreed + b"\r\n"
    )

"""A stream before it is a connection: whose it is, its upgrade request, and the early
refusal of a client over a limit. Shared by the WebSocket and the admin listeners."""

import contextlib
import logging

import trio

from ..handshake import upgrade as handshake
from ..handshake.upgrade import HandshakeFailed, Refusal
from .raw_socket import receive_some

log = logging.getLogger("broker.server")

# How long a client refused for its address's limits may take to send its request.
REFUSAL_READ_TIMEOUT = 1.0


def peer(stream: trio.SocketStream) -> tuple[str, str]:
    """The client's host, and host:port for logs."""
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "?", "?"
    host, port = address[0], address[1]
    return host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def receive_request(stream: trio.abc.ReceiveStream) -> handshake.IncomingUpgrade | None:
    """The client's upgrade request, or None if it hung up first (HandshakeFailed if it
    is not one)."""
    reader = handshake.RequestReader()
    while data := await receive_some(stream, handshake.RECEIVE_SIZE):
        if (received := reader.receive(data)) is not None:
            return received
    return None


async def refuse_early(
    stream: trio.abc.Stream, remote: str, refusal: Refusal, handshake_timeout: float
) -> None:
    """Refuse a client over a limit, after reading its request (not counted here).

    Read first: closing a socket with unread data sends a reset, which can reach
    the client before the answer. The short deadline keeps a flood of refused
    sockets from piling up.
    """
    log.info("refused %s: %d %s", remote, refusal.status, refusal.reason)
    timeout = min(REFUSAL_READ_TIMEOUT, handshake_timeout)
    broken = (trio.BrokenResourceError, trio.ClosedResourceError)
    with trio.move_on_after(timeout), contextlib.suppress(*broken):
        with contextlib.suppress(HandshakeFailed):
            await receive_request(stream)
        await stream.send_all(handshake.http_error(refusal))

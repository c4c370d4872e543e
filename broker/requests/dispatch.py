"""Parse a client's message, run its op, send the reply or the error."""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..plugin import Refuse
from ..plugin_host.pipeline import PluginFailure
from ..wire import encodings, protocol
from ..wire.encodings import WireFormat
from ..wire.frame_reader import Received
from ..wire.protocol import ErrorCode, ProtocolError
from . import history, presence, publish, refresh, subscribe
from .session import Replied, Session

log = logging.getLogger("broker.connection")

# What a handler returns: extra fields for the ack, or a whole reply of its own.
Reply = dict[str, Any] | bytes | Replied | None
Handler = Callable[[Session, Any], Awaitable[Reply]]


async def _ping(session: Session, request: protocol.Ping) -> bytes:
    return protocol.encode_pong(request.id)


async def _unsubscribe(session: Session, request: protocol.Unsubscribe) -> None:
    await subscribe.unsubscribe(session, request)


HANDLERS: dict[type, Handler] = {
    protocol.Publish: publish.publish,
    protocol.Subscribe: subscribe.subscribe,
    protocol.Unsubscribe: _unsubscribe,
    protocol.Ping: _ping,
    protocol.History: history.history,
    protocol.Presence: presence.presence,
    protocol.Refresh: refresh.refresh,
}


async def handle(session: Session, message: Received, close: Callable[[int, str], None]) -> None:
    """Answer one message; ``close`` ends the connection after a plugin's refusal asks to."""
    request_id = None
    try:
        request = _request(session.wire_format, message.payload)
        request_id = request.id
        reply = await HANDLERS[type(request)](session, request)
        if isinstance(reply, Replied):
            pass  # the handler sent its reply itself
        elif isinstance(reply, bytes):
            await session.send(reply)
        elif request_id is not None:
            await session.send(protocol.encode_ack(request_id, **(reply or {})))
    except ProtocolError as error:
        if error.request_id is not None:  # a request that did not parse has no id yet
            request_id = error.request_id
        await send_error(session, error.code, error.message, request_id)
    except Refuse as refusal:
        await send_error(session, refusal.code, refusal.message, request_id)
        if refusal.close_code is not None:
            close(refusal.close_code, refusal.message[:100])
    except PluginFailure:  # logged with the plugin's name
        await send_error(session, ErrorCode.INTERNAL, "internal error", request_id)
    except Exception:
        client = session.client
        log.exception(
            "client %s (%s): error handling a request", client.client_id, client.remote_address
        )
        await send_error(session, ErrorCode.INTERNAL, "internal error", request_id)


def _request(wire_format: WireFormat, payload: str | bytes) -> protocol.Request:
    if wire_format.msgpack:
        if not isinstance(payload, bytes):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"text frames are not supported on a {encodings.MSGPACK} connection: "
                "send MessagePack in binary frames",
            )
        return protocol.request_from(encodings.decode_msgpack(payload))
    if isinstance(payload, bytes):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "binary frames are not supported: send JSON text frames "
            f"(or connect with the subprotocol {encodings.MSGPACK})",
        )
    return protocol.parse_request(payload)


async def send_error(
    session: Session, code: ErrorCode, message: str, request_id: protocol.RequestId | None
) -> None:
    session.stats.errors[code.value] += 1
    await session.send(protocol.encode_error(code, message, request_id))

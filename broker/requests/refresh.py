"""``refresh``: new credentials for a connection whose token will expire."""

from typing import Any

from ..wire import protocol
from ..wire.protocol import ErrorCode, ProtocolError
from .session import Session


async def refresh(session: Session, request: protocol.Refresh) -> dict[str, Any]:
    pipeline = session.pipeline()
    if not pipeline.refreshes:
        raise ProtocolError(ErrorCode.FORBIDDEN, "no plugin here can refresh credentials")
    identity = await pipeline.refresh(session.client, request.token)
    session.renew(identity)
    expires_at = identity.expires_at
    return {} if expires_at is None else {"expires_at": int(expires_at)}

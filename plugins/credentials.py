"""Where clients put their credentials: shared by the token and JWT plugins."""

from broker.plugin import HandshakeRequest

QUERY_PARAMETER = "token"


def bearer_token(request: HandshakeRequest) -> str | None:
    """The token from ``Authorization: Bearer ...`` or, for browsers, which cannot set
    headers on a WebSocket, from the ``token`` query parameter."""
    authorization = request.header("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.query_value(QUERY_PARAMETER) or None

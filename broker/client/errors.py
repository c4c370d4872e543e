"""What the client raises."""


class ClientError(Exception):
    """Base of the client's errors."""


class BrokerError(ClientError):
    """The broker answered a request with an error (docs/protocol.md, "Errors")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code  # "forbidden", "rate_limited", "unavailable", ...
        self.message = message


class HandshakeRefused(ClientError):
    """The broker refused the connection (HTTP status and its reason)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"refused with HTTP {status}: {reason}".rstrip(": "))
        self.status = status
        self.reason = reason

    @property
    def permanent(self) -> bool:
        """Trying again will not help (bad credentials, origin, path), unlike 429 or 503."""
        return self.status not in (429, 500, 502, 503, 504)


class ConnectionLost(ClientError):
    """The connection ended (a request in flight may or may not have been done)."""

    def __init__(self, message: str, code: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason

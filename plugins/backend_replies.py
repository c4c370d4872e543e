"""What `http_hooks` reads from the application's backend, checked (no I/O).

A hook's answer is a 2xx with ``{"result": {...}}`` to accept or ``{"error": {"code",
"message"}}`` to refuse (docs/plugins.md). Anything else is a `BadReply`: the broker
cannot tell what the backend meant, so the operation fails closed.
"""

import json
import math
from collections.abc import Mapping
from typing import Any

from broker.plugin import ErrorCode, Identity, TopicError, binary_data, check_filter

# Bigger answers than this are not a hook's answer.
MAX_REPLY_BYTES = 1_048_576
# As long as a topic filter may be anywhere in the broker.
MAX_CHANNEL_BYTES = 65_536
CONNECT_FIELDS = frozenset({"user", "roles", "expires_at", "info", "channels"})


class BadReply(Exception):
    """The backend answered something that is not a hook's answer; ``reason`` is a metric
    label, the message says what was wrong (for the log)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Refused(Exception):
    """The backend refused: ``code`` (one of the protocol's error codes) and ``message``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def read_reply(status: int, body: bytes) -> dict[str, Any]:
    """The ``result`` of an answer; Refused or BadReply otherwise."""
    if not 200 <= status < 300:
        raise BadReply("status", f"HTTP {status}")
    try:
        reply = json.loads(body)
    except ValueError as error:  # UnicodeDecodeError included
        raise BadReply("reply", f"not JSON: {error}") from None
    if not isinstance(reply, dict) or len(reply.keys() & {"result", "error"}) != 1:
        raise BadReply("reply", 'not {"result": {...}} nor {"error": {...}}')
    if "error" in reply:
        raise _refusal(reply["error"])
    result = reply["result"]
    if not isinstance(result, dict):
        raise BadReply("reply", '"result" is not an object')
    return result


def _refusal(error: Any) -> Refused:
    if not isinstance(error, dict):
        raise BadReply("reply", '"error" is not an object')
    code, message = error.get("code"), error.get("message", "")
    try:
        known = ErrorCode(str(code)) if isinstance(code, str) else None
    except ValueError:
        known = None
    if known is None:
        codes = ", ".join(c.value for c in ErrorCode)
        raise BadReply("reply", f'"error.code" {code!r} is not one of {codes}') from None
    if not isinstance(message, str):
        raise BadReply("reply", '"error.message" is not a string')
    return Refused(known, message[:1000])


def _unknown_fields(result: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(result.keys() - known)
    if unknown:
        raise BadReply("reply", f"unknown field(s) in result: {', '.join(unknown)[:200]}")


def _expiry(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadReply("reply", '"expires_at" is not Unix seconds or null')
    return float(value)


def _strings(result: Mapping[str, Any], name: str) -> list[str]:
    value = result.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadReply("reply", f'"{name}" is not a list of strings')
    return value


def connect_identity(result: Mapping[str, Any]) -> Identity:
    """The identity a connect result gives; ``info`` goes to its claims."""
    _unknown_fields(result, CONNECT_FIELDS)
    user = result.get("user")
    if user is not None and not isinstance(user, str):
        raise BadReply("reply", '"user" is not a string or null')
    info = result.get("info", {})
    if not isinstance(info, dict):
        raise BadReply("reply", '"info" is not an object')
    channels = _strings(result, "channels")
    for channel in channels:
        try:
            check_filter(channel, MAX_CHANNEL_BYTES)
        except TopicError as error:
            raise BadReply("reply", f"channel {channel[:100]!r}: {error}") from None
    return Identity(
        user=user,
        roles=_strings(result, "roles"),
        claims={"info": info} if info else {},
        expires_at=_expiry(result.get("expires_at")),
        channels=channels,
    )


def accepted(result: Mapping[str, Any]) -> None:
    """A subscribe result: ``{}``."""
    _unknown_fields(result, frozenset())


class _Keep:
    """A publish result that keeps the data as published."""


KEEP = _Keep()


def published_data(result: Mapping[str, Any]) -> Any:
    """A publish result: ``{}`` keeps the data (`KEEP`), ``{"data": X}`` publishes X,
    ``{"data_b64": B}`` the binary data B (standard base64) stands for."""
    _unknown_fields(result, frozenset({"data", "data_b64"}))
    if "data_b64" not in result:
        return result.get("data", KEEP)
    if "data" in result:
        raise BadReply("reply", "'data' and 'data_b64' together")
    try:
        return binary_data(result["data_b64"])
    except ValueError:
        raise BadReply("reply", "'data_b64' is not a string of standard base64") from None


def renewed_expiry(result: Mapping[str, Any]) -> float | None:
    """A refresh result: ``{"expires_at": T}``; null means no renewal."""
    _unknown_fields(result, frozenset({"expires_at"}))
    if "expires_at" not in result:
        raise BadReply("reply", 'no "expires_at" in result')
    return _expiry(result["expires_at"])


class Bursts:
    """Failures logged once per burst: the first after a success, then at most once every
    ``every`` seconds, saying how many were not logged meanwhile."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._next_log = -math.inf
        self._unlogged = 0

    def failure(self, now: float) -> int | None:
        """None: do not log this one; else log it, with the count of those not logged."""
        if now < self._next_log:
            self._unlogged += 1
            return None
        unlogged, self._unlogged = self._unlogged, 0
        self._next_log = now + self.every
        return unlogged

    def success(self) -> None:
        self._next_log = -math.inf  # the next failure starts a new burst

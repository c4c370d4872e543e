"""The trio-broker wire protocol v1 (docs/protocol.md): parse client requests, encode replies.

Pure functions and plain classes; nothing here touches a socket.
"""

import base64
import binascii
import enum
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

RequestId = int | str

MAX_ID_LENGTH = 128
# Arrays and objects nested deeper than this are refused: deep enough for any real payload,
# shallow enough that encoding, plugins and clients never meet their recursion limits.
MAX_JSON_DEPTH = 64
# Ids must survive a round trip through JavaScript numbers.
MAX_SAFE_INTEGER = 2**53 - 1
# The close code of a connection whose credentials expired (docs/protocol.md).


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "bad_request"
    INVALID_TOPIC = "invalid_topic"
    FORBIDDEN = "forbidden"
    LIMIT_EXCEEDED = "limit_exceeded"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"


class ProtocolError(Exception):
    """A request the broker refuses; becomes an ``error`` reply, never a close."""

    def __init__(self, code: ErrorCode, message: str, request_id: RequestId | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@attrs.frozen
class Subscribe:
    topic: str
    id: RequestId | None = None
    since: str | None = None  # a position to recover from (opaque: checked by the broker)


@attrs.frozen
class Unsubscribe:
    topic: str
    id: RequestId | None = None


@attrs.frozen
class Publish:
    topic: str
    data: Any
    id: RequestId | None = None


@attrs.frozen
class Ping:
    id: RequestId | None = None


@attrs.frozen
class History:
    topic: str
    limit: int | None = None
    id: RequestId | None = None
    since: str | None = None  # only what was published after this position


@attrs.frozen
class Presence:
    topic: str
    id: RequestId | None = None


@attrs.frozen
class Refresh:
    token: str = attrs.field(repr=False)
    id: RequestId | None = None


Request = Subscribe | Unsubscribe | Publish | Ping | History | Presence | Refresh

_OPS: dict[type[Any], str] = {
    Subscribe: "subscribe",
    Unsubscribe: "unsubscribe",
    Publish: "publish",
    Ping: "ping",
    History: "history",
    Presence: "presence",
    Refresh: "refresh",
}


def encode_request(request: Request) -> str:
    """A request as a client sends it: `parse_request` reads it back as it was.

    Optional fields left as None are left out; ``data`` is always sent (null is data).
    """
    fields = request_fields(request)
    if "data" in fields:
        fields.update(data_fields(fields.pop("data")))
    return json.dumps(fields)


def request_fields(request: Request) -> dict[str, Any]:
    """A request's fields as a client sends them, ``op`` included (binary data as bytes:
    `encode_request` makes it ``data_b64`` for JSON)."""
    fields: dict[str, Any] = {"op": _OPS[type(request)]}
    for name, value in attrs.asdict(request, recurse=False).items():
        if value is not None or name == "data":
            fields[name] = value
    return fields


def data_fields(data: Any) -> dict[str, Any]:
    """How ``data`` goes in a JSON object: ``{"data": data}``, or for binary data (bytes)
    ``{"data_b64": standard base64}``; `data_field` reads either back."""
    if isinstance(data, bytes):
        return {"data_b64": base64.b64encode(data).decode()}
    return {"data": data}


def binary_data(text: object) -> bytes:
    """The bytes a ``data_b64`` value stands for; ValueError unless it is a string of
    standard base64 (RFC 4648 section 4, padded)."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as error:
        raise ValueError(str(error)) from None


def data_field(
    obj: Mapping[str, Any], request_id: "RequestId | None" = None, where: str = ""
) -> Any:
    """The data of a publish or a delivery: ``data``, or ``data_b64`` (binary data, in
    standard base64) decoded to bytes; exactly one of them."""
    if "data_b64" not in obj:
        if "data" not in obj:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"missing field 'data'{where}", request_id)
        return obj["data"]
    if "data" in obj:
        message = f"'data' and 'data_b64' together{where}: send one"
        raise ProtocolError(ErrorCode.BAD_REQUEST, message, request_id)
    try:
        return binary_data(obj["data_b64"])
    except ValueError:
        message = f"'data_b64' must be a string of standard base64{where}"
        raise ProtocolError(ErrorCode.BAD_REQUEST, message, request_id) from None


_FIELDS: dict[str, frozenset[str]] = {
    "subscribe": frozenset({"op", "id", "topic", "since"}),
    "unsubscribe": frozenset({"op", "id", "topic"}),
    "publish": frozenset({"op", "id", "topic", "data", "data_b64"}),
    "ping": frozenset({"op", "id"}),
    "history": frozenset({"op", "id", "topic", "limit", "since"}),
    "presence": frozenset({"op", "id", "topic"}),
    "refresh": frozenset({"op", "id", "token"}),
}
# Tokens are long (JWTs with claims), but not unbounded.
MAX_TOKEN_LENGTH = 16_384


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JSON parsers disagree on which duplicate wins; a plugin or a proxy reading the
    # request might see another value than the broker, so duplicates are refused.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return obj


_decoder = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_parse_float, object_pairs_hook=_unique_keys
)


_scan_once: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a decoded value (a scalar is 0)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:  # deeper than that is refused anyway
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep() -> ProtocolError:
    return ProtocolError(
        ErrorCode.BAD_REQUEST, f"JSON nests arrays and objects more than {MAX_JSON_DEPTH} deep"
    )


def decode_json(text: str) -> Any:
    """JSON as clients may send it (no NaN, no duplicate keys, bounded nesting)."""
    try:
        # The scanner alone first: JSONDecoder.decode's whitespace handling around it
        # costs as much again, and requests rarely have any.
        try:
            value, end = _scan_once(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):
            value = _decoder.decode(text)  # or its error, which says where
    except ValueError as exc:  # includes JSONDecodeError and int digit limits
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise _too_deep() from None
    # Fewer brackets than the limit cannot nest deeper: the walk is for the rare rest.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise _too_deep()
    return value


def _request_id(obj: dict[str, Any]) -> RequestId | None:
    if "id" not in obj:
        return None
    value = obj["id"]
    if isinstance(value, str) and len(value) <= MAX_ID_LENGTH:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SAFE_INTEGER:
        return value
    raise ProtocolError(
        ErrorCode.BAD_REQUEST,
        f"'id' must be an integer of magnitude at most 2^53-1 "
        f"or a string of at most {MAX_ID_LENGTH} characters",
    )


def _refuse_unknown_fields(
    obj: dict[str, Any],
    allowed: frozenset[str] | set[str],
    where: str,
    request_id: RequestId | None = None,
) -> None:
    if obj.keys() <= allowed:
        return
    unknown = obj.keys() - allowed
    if unknown:
        names = ", ".join(repr(name[:40]) for name in sorted(unknown)[:5])
        message = f"unknown field(s) {where}: {names}"
        raise ProtocolError(ErrorCode.BAD_REQUEST, message, request_id)


def parse_request(text: str) -> Request:
    """Parse one text frame into a request; raise ProtocolError if it is not one."""
    return request_from(decode_json(text))


def request_from(obj: Any) -> Request:
    """The request a decoded message (JSON's, or MessagePack's) makes; ProtocolError if
    it is not one."""
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request must be a JSON object")
    request_id = _request_id(obj)
    op = obj.get("op")
    if not isinstance(op, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "missing string field 'op'", request_id)
    allowed = _FIELDS.get(op)
    if allowed is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown op {op[:40]!r}", request_id)
    _refuse_unknown_fields(obj, allowed, f"for {op}", request_id)
    if op == "ping":
        return Ping(request_id)
    if op == "refresh":
        token = obj.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
            message = f"'token' must be a string of 1 to {MAX_TOKEN_LENGTH} characters"
            raise ProtocolError(ErrorCode.BAD_REQUEST, message, request_id)
        return Refresh(token, request_id)
    topic = obj.get("topic")
    if not isinstance(topic, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "missing string field 'topic'", request_id)
    since = obj.get("since")
    if since is not None and not isinstance(since, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "'since' must be a string", request_id)
    if op == "subscribe":
        if since is not None and request_id is None:
            message = "'since' needs an 'id': the ack says whether the recovery was complete"
            raise ProtocolError(ErrorCode.BAD_REQUEST, message)
        return Subscribe(topic, request_id, since)
    if op == "unsubscribe":
        return Unsubscribe(topic, request_id)
    if op == "presence":
        return Presence(topic, request_id)
    if op == "history":
        limit = obj.get("limit")
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
        ):
            message = "'limit' must be a whole number, 0 or more"
            raise ProtocolError(ErrorCode.BAD_REQUEST, message, request_id)
        return History(topic, limit, request_id, since)
    return Publish(topic, data_field(obj, request_id), request_id)


def parse_publish(obj: Any, where: str = "the body") -> Publish:
    """A publish without the envelope (the HTTP API's): ``{"topic": ..., "data": ...}``."""
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{where} must be a JSON object")
    _refuse_unknown_fields(obj, {"topic", "data", "data_b64"}, f"in {where}")
    if not isinstance(obj.get("topic"), str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"missing string field 'topic' in {where}")
    return Publish(obj["topic"], data_field(obj, where=f" in {where}"))


# Made once: json.dumps with any non-default option builds a new encoder per call.
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_ascii_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_encode_string: Callable[[str], str] = json.encoder.encode_basestring


def encode_json(obj: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; strings that are not valid Unicode (lone surrogates) are escaped."""
    try:
        return _encoder.encode(obj).encode()
    except UnicodeEncodeError:
        return _ascii_encoder.encode(obj).encode()


def _with_id(obj: dict[str, Any], request_id: RequestId | None) -> dict[str, Any]:
    if request_id is not None:
        obj["id"] = request_id
    return obj


def encode_welcome(client_id: str, server: str, expires_at: float | None = None) -> bytes:
    # Formatted, not through JSONEncoder (whose Python layers cost as much as the rest of
    # a reconnect storm's welcome): the same bytes, in the same order.
    welcome = '{"op":"welcome","client_id":' + _encode_string(client_id)
    welcome += ',"server":' + _encode_string(server)
    if expires_at is not None:
        welcome += f',"expires_at":{int(expires_at)}'
    try:
        return (welcome + "}").encode()
    except UnicodeEncodeError:  # a lone surrogate: escaped, as encode_json does
        return encode_json(json.loads(welcome + "}"))


def encode_ack(request_id: RequestId, **fields: Any) -> bytes:
    """An ack; ``fields`` (recovered, pos, expires_at) go beside ``op`` and ``id``."""
    if not fields and type(request_id) is int:  # the common ack, formatted
        return b'{"op":"ack","id":%d}' % request_id
    return encode_json({"op": "ack", "id": request_id, **fields})


def encode_pong(request_id: RequestId | None) -> bytes:
    return encode_json(_with_id({"op": "pong"}, request_id))


def encode_error(code: ErrorCode, message: str, request_id: RequestId | None = None) -> bytes:
    reply = {"op": "error", "code": code.value, "message": message}
    return encode_json(_with_id(reply, request_id))


def encode_message(
    topic: str, data: Any, meta: Mapping[str, Any] | None = None, pos: str | None = None
) -> bytes:
    """A delivery; ``meta`` adds envelope fields set by plugins (never op, topic, data,
    pos); ``pos`` is its position, on topics with history."""
    if type(data) is bytes:  # binary data travels as base64 in JSON
        message = {**(meta or {}), "op": "message", "topic": topic, **data_fields(data)}
        if pos is not None:
            message["pos"] = pos
        return encode_json(message)
    if not meta:
        # Once per publish: assembled around the data rather than encoded as a dict,
        # which costs the json module a new encoder object each time.
        try:
            encoded = _encode_string(data) if type(data) is str else _encoder.encode(data)
            tail = "}" if pos is None else ',"pos":' + _encode_string(pos) + "}"
            return (
                '{"op":"message","topic":' + _encode_string(topic) + ',"data":' + encoded + tail
            ).encode()
        except UnicodeEncodeError:
            pass  # lone surrogates: encode_json escapes them
    message = {**(meta or {}), "op": "message", "topic": topic, "data": data}
    if pos is not None:
        message["pos"] = pos
    return encode_json(message)


def encode_message_around_pos(
    topic: str, data: Any, meta: Mapping[str, Any] | None = None
) -> tuple[bytes, bytes]:
    """A delivery with its position still to come: ``head + pos + tail`` is what
    `encode_message` makes with that ``pos`` (for a position only Redis knows)."""
    payload = encode_message(topic, data, meta)
    return payload[:-1] + b',"pos":"', b'"}'


def encode_history(request_id: RequestId | None, fields: dict[str, Any]) -> bytes:
    """``fields``: messages, and pos, recovered and more when there are any."""
    return encode_json(_with_id({"op": "history", **fields}, request_id))


def encode_presence(request_id: RequestId | None, clients: list[dict[str, Any]]) -> bytes:
    return encode_json(_with_id({"op": "presence", "clients": clients}, request_id))


def encode_subscribed(topic: str, **fields: Any) -> bytes:
    """A subscription the server made for the client; ``fields``: pos, recovered."""
    return encode_json({"op": "subscribed", "topic": topic, **fields})


def encode_unsubscribed(topic: str) -> bytes:
    """A subscription the server ended for the client."""
    return encode_json({"op": "unsubscribed", "topic": topic})


def encode_membership(op: str, topic: str, client_id: str, user: str | None) -> bytes:
    """A ``join`` or ``leave`` event for the subscribers of ``topic``."""
    client = {"client_id": client_id, "user": user}
    return encode_json({"op": op, "topic": topic, "client": client})

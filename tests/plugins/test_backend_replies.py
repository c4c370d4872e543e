"""http_hooks' reading of the backend's answers (no I/O): every shape the contract
allows, and what else fails closed."""

import json
from typing import Any

import pytest

from broker.plugin import ErrorCode, Identity
from plugins.backend_replies import (
    KEEP,
    BadReply,
    Bursts,
    Refused,
    accepted,
    connect_identity,
    published_data,
    read_reply,
    renewed_expiry,
)


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def test_a_result_is_read() -> None:
    assert read_reply(200, body({"result": {"user": "a"}})) == {"user": "a"}
    assert read_reply(204, body({"result": {}})) == {}


def test_a_refusal_carries_the_backends_code_and_message() -> None:
    with pytest.raises(Refused) as caught:
        read_reply(200, body({"error": {"code": "rate_limited", "message": "slow down"}}))
    assert (caught.value.code, caught.value.message) == (ErrorCode.RATE_LIMITED, "slow down")


@pytest.mark.parametrize(
    ("status", "answer", "reason", "says"),
    [
        (500, b'{"result": {}}', "status", "HTTP 500"),
        (302, b"", "status", "HTTP 302"),
        (200, b"<html>", "reply", "not JSON"),
        (200, b"\xff", "reply", "not JSON"),
        (200, body([1]), "reply", "not {"),
        (200, body({"result": {}, "error": {}}), "reply", "not {"),
        (200, body({"ok": True}), "reply", "not {"),
        (200, body({"result": []}), "reply", '"result" is not an object'),
        (200, body({"error": "no"}), "reply", '"error" is not an object'),
        (200, body({"error": {"code": "banned"}}), "reply", "'banned' is not one of"),
        (200, body({"error": {"code": "forbidden", "message": 5}}), "reply", "message"),
    ],
)
def test_anything_else_is_a_bad_reply(status: int, answer: bytes, reason: str, says: str) -> None:
    with pytest.raises(BadReply) as caught:
        read_reply(status, answer)
    assert caught.value.reason == reason and says in str(caught.value)


def test_a_connect_result_is_an_identity() -> None:
    identity = connect_identity(
        {
            "user": "alice",
            "roles": ["admin"],
            "expires_at": 1_900_000_000,
            "info": {"name": "Alice"},
            "channels": ["user/alice", "news/#"],
        }
    )
    assert identity == Identity(
        user="alice",
        roles=["admin"],
        claims={"info": {"name": "Alice"}},
        expires_at=1_900_000_000.0,
        channels=["user/alice", "news/#"],
    )
    assert connect_identity({}) == Identity()  # anonymous, nothing more


@pytest.mark.parametrize(
    ("result", "says"),
    [
        ({"user": 5}, '"user"'),
        ({"roles": "admin"}, '"roles"'),
        ({"expires_at": "soon"}, '"expires_at"'),
        ({"expires_at": True}, '"expires_at"'),
        ({"info": []}, '"info"'),
        ({"channels": ["a/#/b"]}, "channel 'a/#/b'"),
        ({"usr": "alice"}, "unknown field(s) in result: usr"),
    ],
)
def test_a_connect_result_of_another_shape_is_a_bad_reply(result: Any, says: str) -> None:
    with pytest.raises(BadReply) as caught:
        connect_identity(result)
    assert says in str(caught.value)


def test_subscribe_publish_and_refresh_results() -> None:
    accepted({})
    with pytest.raises(BadReply):
        accepted({"data": 1})
    assert published_data({}) is KEEP
    assert published_data({"data": None}) is None  # null is data
    with pytest.raises(BadReply):
        published_data({"topic": "x"})
    assert published_data({"data_b64": "AP8="}) == b"\x00\xff"  # binary data
    for bad in ({"data_b64": "@"}, {"data_b64": 1}, {"data": 1, "data_b64": "AA=="}):
        with pytest.raises(BadReply):
            published_data(bad)
    assert renewed_expiry({"expires_at": 5}) == 5.0
    assert renewed_expiry({"expires_at": None}) is None
    with pytest.raises(BadReply):
        renewed_expiry({})


def test_failures_are_logged_once_per_burst() -> None:
    bursts = Bursts(every=10)
    assert bursts.failure(0) == 0  # the first: logged
    assert bursts.failure(1) is None
    assert bursts.failure(2) is None
    assert bursts.failure(10) == 2  # ten seconds on: logged, with the two not logged
    bursts.success()
    assert bursts.failure(11) == 0  # a new burst

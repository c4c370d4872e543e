"""Secrets (tokens, JWT keys) never reach a log line or an error message, and subscribers
learn nothing about each other."""

import logging
import time
from pathlib import Path

import jwt
import pytest

from broker.config.schema import ConfigError
from broker.node.config_file import load
from tests.conftest import Connect, StartBroker, url
from tests.wsclient import Rejected, WsClient

SECRET = "jwt-secret-that-must-never-be-logged-0123456789"
TOKEN = "static-token-that-must-never-be-logged"
PLUGINS = [
    {"use": "jwt_auth", "secret": SECRET, "algorithms": ["HS256"]},
    {"use": "acl", "default": "deny", "rules": [{"subscribe": ["users/{user}/#"]}]},
]


def mint(key: str = SECRET, **claims: object) -> str:
    payload: dict[str, object] = {"sub": "alice", "exp": time.time() + 3600, **claims}
    return jwt.encode(payload, key, algorithm="HS256")


async def test_no_token_or_key_in_logs_or_errors(
    start_broker: StartBroker, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = await start_broker(PLUGINS)
    good = mint()
    forged = mint(key="another-key-another-key-another-key-0123")
    expired = mint(exp=time.time() - 60)
    bodies = []
    for token in (forged, expired, "not.a.jwt", good[:-3]):
        with pytest.raises(Rejected) as caught:
            await WsClient.connect(url(broker, f"/ws?token={token}"))
        bodies.append(caught.value.body.decode())
        with pytest.raises(Rejected) as caught:
            await WsClient.connect(url(broker), headers={"Authorization": f"Bearer {token}"})
        bodies.append(caught.value.body.decode())
    client = await connect(broker, headers={"Authorization": f"Bearer {good}"})
    replies = [
        await client.request({"op": "subscribe", "topic": "users/bob/inbox", "id": 1}),
        await client.request({"op": "publish", "topic": "x", "data": good, "id": 2}),
    ]
    # The broker's and the plugins' records (the test client logs its own requests).
    logged = [r.getMessage() for r in caplog.records if not r.name.startswith("websockets")]
    text = "\n".join([*logged, *bodies, *map(str, replies)])
    assert "users/bob/inbox" in text, "the test saw the refusals it meant to"
    for secret in (SECRET, good, forged, expired, good[:-3]):
        # The token travels as data in the publish above, and must not come back in an error.
        assert secret not in text.replace(f'"data": "{good}"', "")


def test_config_errors_do_not_echo_secrets(tmp_path: Path) -> None:
    for table in (
        f'secret = "short-{TOKEN[:5]}"\nalgorithms = ["HS256"]',  # too short
        f'secret = "{SECRET}"\nalgorithms = ["RS256"]',  # wrong kind of key
        f'secret = "{SECRET}"\nsecret_file = "/x"\nalgorithms = ["HS256"]',  # two keys
    ):
        path = tmp_path / "broker.toml"
        path.write_text(f'[[plugins]]\nuse = "jwt_auth"\n{table}\n')
        with pytest.raises(ConfigError) as caught:
            load(path)
        assert SECRET not in str(caught.value)
        assert f"short-{TOKEN[:5]}" not in str(caught.value)
    path = tmp_path / "broker.toml"
    path.write_text(f'[[plugins]]\nuse = "token_auth"\ntokens = {{ alice = 5, bob = "{TOKEN}" }}\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert TOKEN not in str(caught.value)


async def test_subscribers_cannot_see_each_other(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker()
    first, second = await connect(broker, welcome=False), await connect(broker, welcome=False)
    welcomes = [await first.recv(), await second.recv()]
    await first.request({"op": "subscribe", "topic": "room", "id": 1})
    await second.request({"op": "subscribe", "topic": "room", "id": 1})
    await second.send({"op": "publish", "topic": "room", "data": "hi"})
    delivered = await first.recv()
    # A delivery names no sender and no other subscriber; a welcome only its own client id.
    assert delivered == {"op": "message", "topic": "room", "data": "hi"}
    assert welcomes[0]["client_id"] != welcomes[1]["client_id"]
    assert welcomes[1]["client_id"] not in str(welcomes[0])
    # Subscribing to "$" topics (where presence might live one day) is not a way in.
    reply = await first.request({"op": "subscribe", "topic": "#", "id": 2})
    assert reply == {"op": "ack", "id": 2}
    await second.send({"op": "publish", "topic": "room", "data": "again"})
    assert (await first.recv())["data"] == "again"
    assert (await first.request({"op": "ping", "id": 3})) == {"op": "pong", "id": 3}

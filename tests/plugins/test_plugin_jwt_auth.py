import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker import Broker
from broker.config.schema import ConfigError
from broker.plugin_host.loader import load_plugins
from tests.conftest import Connect, StartBroker, make_config, url
from tests.wsclient import Rejected, WsClient

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret!"
OPTIONS = {
    "use": "jwt_auth",
    "secret": SECRET,
    "algorithms": ["HS256"],
    "audience": "app",
    "issuer": "auth.example",
}


def mint(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    payload = {"sub": "alice", "aud": "app", "iss": "auth.example", "exp": time.time() + 3600}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refused_status(broker_url: str, headers: dict[str, str] | None = None) -> int:
    with pytest.raises(Rejected) as caught:
        await WsClient.connect(broker_url, headers=headers)
    return caught.value.status


async def test_valid_token_in_header_or_query(start_broker: StartBroker, connect: Connect) -> None:
    broker = await start_broker([OPTIONS, {"use": "tests.example_plugins:StampSender"}])
    client = await connect(broker, headers=bearer(mint()))
    await connect(url(broker, f"/ws?token={mint(sub='bob')}"))
    await client.request({"op": "subscribe", "topic": "t", "id": 1})
    await client.send({"op": "publish", "topic": "t", "data": 1})
    assert (await client.recv())["from"] == "alice"


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (None, "missing token"),
        (mint(exp=time.time() - 10), "token expired"),
        (mint(key="another-secret-another-secret-another"), "invalid token"),
        (mint(aud="other-app"), "invalid token"),
        (mint(iss="evil.example"), "invalid token"),
        (mint(sub=None), "invalid token"),
        (mint(roles="admin"), "'roles' must be a list"),
        (mint(subscribe=["a//b"]), "bad filter"),
        (
            jwt.encode(
                {"sub": "alice", "aud": "app", "iss": "auth.example"}, None, algorithm="none"
            ),
            "invalid token",
        ),
        ("not.a.jwt", "invalid token"),
    ],
)
async def test_bad_tokens_get_401(start_broker: StartBroker, token: str | None, why: str) -> None:
    broker = await start_broker([OPTIONS])
    with pytest.raises(Rejected) as caught:
        await WsClient.connect(url(broker), headers=bearer(token) if token else None)
    assert caught.value.status == 401
    assert why.encode() in caught.value.body


async def test_public_key_tokens_and_no_algorithm_confusion(
    start_broker: StartBroker, connect: Connect, tmp_path: Path
) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file = tmp_path / "jwt.pub"
    key_file.write_bytes(public_pem)
    broker = await start_broker(
        [{"use": "jwt_auth", "public_key_file": str(key_file), "algorithms": ["ES256"]}]
    )
    await connect(broker, headers=bearer(mint(private, "ES256", aud=None, iss=None)))
    # The classic attack: an HS256 token signed with the public key as the HMAC secret.
    forged = jwt.encode({"sub": "mallory"}, SECRET, algorithm="HS256")
    assert await refused_status(url(broker), bearer(forged)) == 401


async def test_token_claims_restrict_topics(start_broker: StartBroker, connect: Connect) -> None:
    broker = await start_broker([OPTIONS])
    token = mint(subscribe=["chat/#"], publish=["chat/+/out"])
    client = await connect(broker, headers=bearer(token))
    assert (await client.request({"op": "subscribe", "topic": "chat/x", "id": 1}))["op"] == "ack"
    for topic_filter in ("admin/#", "#", "+/x"):
        reply = await client.request({"op": "subscribe", "topic": topic_filter, "id": 2})
        assert reply["code"] == "forbidden", topic_filter
    ok = {"op": "publish", "topic": "chat/1/out", "data": 0, "id": 3}
    assert (await client.request(ok))["op"] in ("ack", "message")
    denied = await client.request({"op": "publish", "topic": "chat/1/in", "data": 0, "id": 4})
    while denied["op"] != "error":
        denied = await client.recv()
    assert denied["code"] == "forbidden"


async def test_a_channels_claim_subscribes_the_connection(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker([OPTIONS])
    # Whoever signed the token chose the channels: "subscribe" does not restrict them.
    token = mint(channels=["user/alice", "news/#"], subscribe=["chat/#"])
    client = await connect(broker, headers=bearer(token))
    assert await client.recv() == {"op": "subscribed", "topic": "user/alice"}
    assert await client.recv() == {"op": "subscribed", "topic": "news/#"}
    with pytest.raises(Rejected) as caught:
        await connect(broker, headers=bearer(mint(channels=["a/#/b"])))
    assert caught.value.status == 401 and b"'channels'" in caught.value.body


async def test_connection_is_closed_when_the_token_expires(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker([OPTIONS])
    client = await connect(broker, headers=bearer(mint(exp=int(time.time()) + 2)))
    assert await client.wait_closed(timeout=10) == (4001, "token expired")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"secret": SECRET}, "required option missing @ plugins[0].algorithms"),
        ({"secret": SECRET, "algorithms": []}, "name at least one"),
        ({"secret": SECRET, "algorithms": ["none"]}, "'none' never is"),
        ({"secret": SECRET, "algorithms": ["HS256", "RS256"]}, "do not mix"),
        ({"secret": "short", "algorithms": ["HS256"]}, "at least 32 bytes"),
        ({"algorithms": ["HS256"]}, "exactly one of"),
        ({"secret": SECRET, "public_key_file": "/x", "algorithms": ["HS256"]}, "exactly one of"),
        ({"public_key_file": "/nonexistent.pem", "algorithms": ["RS256"]}, "No such file"),
        ({"secret_file": "/nonexistent", "algorithms": ["HS256"]}, "No such file"),
        ({"public_key_file": "/x", "algorithms": ["HS256"]}, "HS* algorithms need"),
        ({"secret": SECRET, "algorithms": ["HS256"], "audience": []}, "accepts no token"),
    ],
)
def test_option_errors(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_plugins(make_config([{"use": "jwt_auth", **options}]), "c.toml")
    assert "c.toml: plugins[0] (jwt_auth): " in str(caught.value)
    assert error in str(caught.value)
    assert SECRET not in str(caught.value)


# --- refresh (protocol v1.1) ---------------------------------------------------------------


async def test_refresh_extends_the_connection_with_a_new_token(
    start_broker: StartBroker, connect: Connect, autojump_clock: Any
) -> None:
    broker = await start_broker([OPTIONS], server={"heartbeat_interval": 0})
    soon = time.time() + 30
    client = await connect(url(broker), headers=bearer(mint(exp=soon)), welcome=False)
    assert (await client.recv())["expires_at"] == int(soon)
    later = time.time() + 3600
    reply = await client.request({"op": "refresh", "token": mint(exp=later), "id": 1})
    assert reply == {"op": "ack", "id": 1, "expires_at": int(later)}
    # The old expiry no longer closes it (virtual time: the autojump clock skips ahead).
    await trio.sleep(60)
    assert await client.request({"op": "ping", "id": 2}) == {"op": "pong", "id": 2}


@pytest.mark.parametrize(
    ("claims", "key"),
    [
        ({"sub": "mallory"}, SECRET),  # another user
        ({"exp": time.time() - 10}, SECRET),  # expired
        ({}, "another-secret-another-secret-another"),  # not signed by our key
    ],
)
async def test_a_refused_refresh_changes_nothing(
    start_broker: StartBroker, connect: Connect, claims: dict[str, Any], key: str
) -> None:
    broker = await start_broker([OPTIONS])
    soon = time.time() + 30
    client = await connect(url(broker), headers=bearer(mint(exp=soon)), welcome=False)
    await client.recv()
    token = mint(key=key, **claims)
    reply = await client.request({"op": "refresh", "token": token, "id": 1})
    assert (reply["op"], reply["code"], reply["id"]) == ("error", "forbidden", 1)
    assert token not in reply["message"]
    # Still alice, still expiring as before: a publish as her works.
    assert (await client.request({"op": "ping", "id": 2}))["op"] == "pong"


async def test_refresh_without_a_plugin_that_refreshes_is_forbidden(
    broker: Broker, connect: Connect
) -> None:
    client = await connect(broker)
    reply = await client.request({"op": "refresh", "token": "x", "id": 1})
    assert reply["code"] == "forbidden"
    reply = await client.request({"op": "refresh", "token": "", "id": 2})
    assert reply["code"] == "bad_request"

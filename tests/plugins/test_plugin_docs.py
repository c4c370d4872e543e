"""The plugin examples in README.md and docs/plugins.md, run as written."""

import time
import tomllib
from pathlib import Path

import jwt
import pytest

from broker import Broker
from broker.config.schema import config_from_mapping
from tests.conftest import ROOT, Connect, doc_block, make_pipeline, url
from tests.wsclient import Rejected, WsClient

SECRET = "x" * 40


async def test_example_plugin_from_the_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nursery: object, connect: Connect
) -> None:
    (tmp_path / "stamp_example.py").write_text(
        doc_block(ROOT / "docs" / "plugins.md", "example-plugin", "python")
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = config_from_mapping(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "plugins": [
                {"use": "tests.example_plugins:HeaderAuth"},
                {"use": "stamp_example:StampSender", "field": "sender"},
            ],
        }
    )
    broker = Broker(config, make_pipeline(config))
    await nursery.start(broker.serve)  # type: ignore[attr-defined]
    client = await connect(broker, headers={"X-User": "alice"})
    await client.request({"op": "subscribe", "topic": "chat", "id": 1})
    await client.send({"op": "publish", "topic": "chat", "data": "hi"})
    assert await client.recv() == {
        "op": "message",
        "topic": "chat",
        "data": "hi",
        "sender": "alice",
    }


def _token(user: str, roles: list[str] = [], **claims: object) -> str:  # noqa: B006
    payload = {"sub": user, "roles": roles, "aud": "my-app", "exp": time.time() + 60, **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


async def test_sample_config_from_the_readme(
    tmp_path: Path, nursery: object, connect: Connect
) -> None:
    secret_file = tmp_path / "jwt.secret"
    secret_file.write_text(SECRET + "\n")
    sample = doc_block(ROOT / "README.md", "sample-config", "toml")
    data = tomllib.loads(sample.replace("/etc/trio-broker/jwt.secret", str(secret_file)))
    data["server"] = {"host": "127.0.0.1", "port": 0}
    config = config_from_mapping(data)
    broker = Broker(config, make_pipeline(config))
    await nursery.start(broker.serve)  # type: ignore[attr-defined]

    for bad in (None, _token("alice", exp=time.time() - 5), "junk"):
        with pytest.raises(Rejected) as caught:
            await WsClient.connect(url(broker, f"/ws?token={bad}" if bad else "/ws"))
        assert caught.value.status == 401

    alice = await connect(url(broker, f"/ws?token={_token('alice')}"))
    admin = await connect(url(broker, f"/ws?token={_token('root', ['admin'])}"))

    async def outcome(client: WsClient, request: dict[str, object]) -> str:
        reply = await client.request({**request, "id": 1})
        while reply["op"] == "message":
            reply = await client.recv()
        return "ok" if reply["op"] == "ack" else str(reply["code"])

    assert await outcome(alice, {"op": "subscribe", "topic": "users/alice/#"}) == "ok"
    assert await outcome(alice, {"op": "subscribe", "topic": "public/news"}) == "ok"
    assert await outcome(alice, {"op": "subscribe", "topic": "users/bob/#"}) == "forbidden"
    assert await outcome(alice, {"op": "subscribe", "topic": "#"}) == "forbidden"
    assert await outcome(admin, {"op": "subscribe", "topic": "#"}) == "ok"
    assert await outcome(alice, {"op": "publish", "topic": "public/x", "data": 0}) == "forbidden"
    # The acl refused the publish above before rate_limit saw it: the burst of 40 is intact.
    publish = {"op": "publish", "topic": "users/alice/notes", "data": 0}
    accepted = 0
    while (result := await outcome(alice, publish)) == "ok":
        accepted += 1
        assert accepted < 100, "never rate limited"
    assert result == "rate_limited"
    # 40 from the burst, plus what refilled at 20/s while these round trips ran.
    assert 40 <= accepted <= 45

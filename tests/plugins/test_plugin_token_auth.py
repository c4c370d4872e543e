import logging
from pathlib import Path

import pytest

from broker.config.schema import ConfigError
from broker.plugin_host.loader import load_plugins
from tests.conftest import Connect, StartBroker, make_config, url
from tests.wsclient import Rejected, WsClient

ALICE = "alice-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
OPTIONS = {
    "use": "token_auth",
    "tokens": [
        {"token": ALICE, "user": "alice"},
        {"token": ADMIN, "user": "root", "roles": ["admin"]},
    ],
}
STAMP = {"use": "tests.example_plugins:StampSender"}


async def _sender(client_url: str, connect: Connect, headers: dict[str, str] | None) -> str:
    client = await connect(client_url, headers=headers)
    await client.request({"op": "subscribe", "topic": "t", "id": 1})
    await client.send({"op": "publish", "topic": "t", "data": 0})
    return str((await client.recv())["from"])


async def test_tokens_map_to_users(start_broker: StartBroker, connect: Connect) -> None:
    broker = await start_broker([OPTIONS, STAMP])
    assert await _sender(url(broker), connect, {"Authorization": f"Bearer {ALICE}"}) == "alice"
    assert await _sender(url(broker, f"/ws?token={ADMIN}"), connect, None) == "root"


@pytest.mark.parametrize(
    "headers",
    [None, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {ALICE}"}],
)
async def test_missing_or_wrong_tokens_get_401(
    start_broker: StartBroker, headers: dict[str, str] | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = await start_broker([OPTIONS])
    with pytest.raises(Rejected) as caught:
        await WsClient.connect(url(broker), headers=headers)
    assert caught.value.status == 401
    broker_records = [r for r in caplog.records if r.name.startswith(("broker", "plugins"))]
    assert broker_records, "the refusal is logged"
    for secret in (ALICE, ADMIN, "wrong-token"):
        assert secret.encode() not in caught.value.body
        assert all(secret not in record.getMessage() for record in broker_records)


async def test_optional_tokens_let_anonymous_clients_in(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker([{**OPTIONS, "required": False}])
    await connect(broker)
    with pytest.raises(Rejected):
        await WsClient.connect(url(broker, "/ws?token=wrong-token-0123456789"))


async def test_tokens_file(start_broker: StartBroker, connect: Connect, tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(f'[[tokens]]\ntoken = "{ALICE}"\nuser = "file-alice"\n')
    broker = await start_broker([{"use": "token_auth", "tokens_file": str(path)}, STAMP])
    assert await _sender(url(broker), connect, {"Authorization": f"Bearer {ALICE}"}) == "file-alice"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, "no tokens"),
        ({"tokens": [{"token": "short", "user": "u"}]}, "Length of 'token' must be >= 16"),
        ({"tokens": [{"token": ALICE}]}, "required option missing @ plugins[0].tokens[0].user"),
        ({"tokens_file": "/nonexistent.toml"}, "No such file"),
        (
            {"tokens": [{"token": ALICE, "user": "alice"}, {"token": ALICE, "user": "bob"}]},
            "tokens 0 and 1 are the same token",
        ),
    ],
)
def test_option_errors(options: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_plugins(make_config([{"use": "token_auth", **options}]), "c.toml")
    assert error in str(caught.value)
    assert ALICE not in str(caught.value)


def test_tokens_file_errors_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text('[[tokens]]\ntoken = "x"\n')
    with pytest.raises(ConfigError, match="tokens_file"):
        load_plugins(make_config([{"use": "token_auth", "tokens_file": str(path)}]), "c.toml")

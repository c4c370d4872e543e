from typing import Any

import pytest

from broker.config.schema import ConfigError
from broker.plugin import Client, Identity, Publication, Refuse
from broker.plugin_host.loader import load_plugins
from tests.conftest import Connect, StartBroker, make_config
from tests.wsclient import WsClient

AUTH = {"use": "tests.example_plugins:HeaderAuth"}
ACL = {
    "use": "acl",
    "default": "deny",
    "rules": [
        {"role": "admin", "subscribe": ["#", "$SYS/#"], "publish": ["#"]},
        {"action": "deny", "subscribe": ["users/+/secrets/#"]},
        {"subscribe": ["public/#", "users/{user}/#"], "publish": ["users/{user}/#"]},
        {"user": "bot", "publish": ["public/news"]},
    ],
}


async def _client(broker: Any, connect: Connect, user: str, roles: str = "") -> WsClient:
    return await connect(broker, headers={"X-User": user, "X-Roles": roles})


async def _outcome(client: WsClient, op: str, topic: str) -> str:
    request: dict[str, Any] = {"op": op, "topic": topic, "id": "r"}
    if op == "publish":
        request["data"] = 0
    await client.send(request)
    while (reply := await client.recv())["op"] == "message":
        pass
    return "ok" if reply["op"] == "ack" else str(reply["code"])


@pytest.mark.parametrize(
    ("user", "roles", "op", "topic", "expected"),
    [
        ("alice", "", "subscribe", "public/chat", "ok"),
        ("alice", "", "subscribe", "public/#", "ok"),
        ("alice", "", "subscribe", "users/alice/inbox", "ok"),
        # Could receive users/alice/secrets/..., which the deny rule covers.
        ("alice", "", "subscribe", "users/alice/#", "forbidden"),
        ("alice", "", "subscribe", "users/alice", "ok"),
        # Wildcards must not widen access.
        ("alice", "", "subscribe", "users/+/inbox", "forbidden"),
        ("alice", "", "subscribe", "users/#", "forbidden"),
        ("alice", "", "subscribe", "#", "forbidden"),
        ("alice", "", "subscribe", "+/alice/inbox", "forbidden"),
        ("alice", "", "subscribe", "users/bob/inbox", "forbidden"),
        ("alice", "", "publish", "users/alice/outbox", "ok"),
        ("alice", "", "publish", "users/bob/outbox", "forbidden"),
        ("alice", "", "publish", "public/chat", "forbidden"),
        # The deny rule comes first for everyone but admins, whose rule comes before it.
        ("alice", "", "subscribe", "users/alice/secrets/x", "forbidden"),
        ("alice", "", "subscribe", "users/alice/+/x", "forbidden"),
        ("root", "admin", "subscribe", "#", "ok"),
        ("root", "admin", "subscribe", "users/x/secrets/#", "ok"),
        ("root", "admin", "subscribe", "$SYS/#", "ok"),
        ("bot", "", "publish", "public/news", "ok"),
        ("bot", "", "publish", "public/other", "forbidden"),
        # {user} never applies to user names that would change the filter's shape.
        ("+", "", "subscribe", "users/+/inbox", "forbidden"),
        ("a/b", "", "subscribe", "users/a/b/inbox", "forbidden"),
    ],
)
async def test_rules(
    start_broker: StartBroker,
    connect: Connect,
    user: str,
    roles: str,
    op: str,
    topic: str,
    expected: str,
) -> None:
    broker = await start_broker([AUTH, ACL])
    client = await _client(broker, connect, user, roles)
    assert await _outcome(client, op, topic) == expected


async def test_anonymous_clients_get_no_user_rules(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker([{**AUTH, "required": False}, ACL])
    client = await connect(broker)
    assert await _outcome(client, "subscribe", "public/x") == "ok"
    assert await _outcome(client, "publish", "users/None/x") == "forbidden"


async def test_default_allow(start_broker: StartBroker, connect: Connect) -> None:
    acl = {"use": "acl", "default": "allow", "rules": [{"action": "deny", "publish": ["system/#"]}]}
    broker = await start_broker([AUTH, acl])
    client = await _client(broker, connect, "alice")
    assert await _outcome(client, "publish", "anything") == "ok"
    assert await _outcome(client, "publish", "system/halt") == "forbidden"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"rules": [{"subscribe": ["a/#/b"]}]}, "'#' must be the whole last level"),
        ({"rules": [{"action": "maybe"}]}, "action"),
        ({"default": "perhaps"}, "default"),
        ({"rules": [{"publish": "a"}]}, "must be a list"),
        ({"rules": [{"topics": ["a"]}]}, "unknown option(s): topics"),
        # Looks like "admins may do anything", would decide nothing.
        ({"rules": [{"role": "admin"}]}, "lists no 'subscribe' and no 'publish' filters"),
        ({"rules": [{"user": "", "publish": ["a"]}]}, "user: empty, which matches nobody"),
        ({"rules": [{"role": "", "publish": ["a"]}]}, "role: empty, which matches nobody"),
        ({"rules": [{"publish": ["u/{username}/#"]}]}, "unknown placeholder {username}"),
    ],
)
def test_option_errors(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_plugins(make_config([{"use": "acl", **options}]), "c.toml")
    assert "plugins[0] (acl)" in str(caught.value)
    assert error in str(caught.value)


def _acl(*rules: dict[str, Any]) -> Any:
    (plugin,) = load_plugins(make_config([{"use": "acl", "rules": list(rules)}]), "c.toml")
    return plugin


def _may(plugin: Any, user: str | None, roles: tuple[str, ...], op: str, topic: str) -> bool:
    client = Client("c1", Identity(user=user, roles=frozenset(roles)), "127.0.0.1:1")
    try:
        if op == "subscribe":
            plugin.authorize_subscribe(client, topic)
        else:
            plugin.authorize_publish(client, Publication(topic, None))
    except Refuse:
        return False
    return True


def test_a_star_user_is_every_authenticated_user_and_a_star_role_any_role() -> None:
    plugin = _acl(
        {"user": "*", "subscribe": ["members/#"]},
        {"role": "*", "publish": ["staff/#"]},
    )
    assert _may(plugin, "alice", (), "subscribe", "members/news")
    assert _may(plugin, "*", (), "subscribe", "members/news")
    assert not _may(plugin, None, (), "subscribe", "members/news")
    assert _may(plugin, "bob", ("ops",), "publish", "staff/desk")
    assert _may(plugin, None, ("ops",), "publish", "staff/desk")
    assert not _may(plugin, "alice", (), "publish", "staff/desk")


async def test_a_star_user_rule_over_real_sockets(
    start_broker: StartBroker, connect: Connect
) -> None:
    acl = {"use": "acl", "rules": [{"user": "*", "subscribe": ["#"], "publish": ["chat/#"]}]}
    broker = await start_broker([{**AUTH, "required": False}, acl])
    alice = await _client(broker, connect, "alice")
    assert await _outcome(alice, "subscribe", "#") == "ok"
    assert await _outcome(alice, "publish", "chat/lobby") == "ok"
    anonymous = await connect(broker)
    assert await _outcome(anonymous, "subscribe", "#") == "forbidden"

"""The plugin pipeline over real connections, with plugins from tests/example_plugins.py."""

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from broker import Broker
from broker.config.schema import ConfigError
from broker.plugin import Client, Identity, Plugin, Publication
from broker.plugin_host.loader import load_plugins, resolve
from broker.plugin_host.pipeline import Pipeline
from tests import example_plugins
from tests.conftest import Connect, StartBroker, make_config, url
from tests.example_plugins import misbehave
from tests.wsclient import Rejected, WsClient

EXAMPLE = "tests.example_plugins"


@pytest.fixture(autouse=True)
def calls() -> Iterator[list[str]]:
    example_plugins.CALLS.clear()
    yield example_plugins.CALLS


# --- Loading ---------------------------------------------------------------------------------


def _load_errors(*plugins: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_plugins(make_config(list(plugins)), "my.toml")
    return str(caught.value)


def test_unknown_plugin_names_are_errors() -> None:
    errors = _load_errors(
        {"use": "nope"},
        {"use": "no.such.module:X"},
        {"use": f"{EXAMPLE}:Nope"},
        {"use": f"{EXAMPLE}:NotAPlugin"},
    )
    assert "my.toml: plugins[0] (nope): unknown plugin 'nope'" in errors
    assert "plugins[1] (no.such.module:X): cannot import 'no.such.module'" in errors
    assert f"plugins[2] ({EXAMPLE}:Nope): module '{EXAMPLE}' has no attribute 'Nope'" in errors
    assert "plugins[3]" in errors and "not a subclass of broker.plugin.Plugin" in errors


def test_option_errors_name_the_plugin_and_the_key() -> None:
    errors = _load_errors(
        {"use": f"{EXAMPLE}:Recorder"},
        {"use": f"{EXAMPLE}:Recorder", "label": 5},
        {"use": f"{EXAMPLE}:StampSender", "extra": True},
        misbehave("authorize_publish", "sometimes"),
    )
    assert f"plugins[0] ({EXAMPLE}:Recorder): required option missing @ plugins[0].label" in errors
    assert (
        "plugins[1]" in errors and "must be a string, got an integer @ plugins[1].label" in errors
    )
    assert "plugins[2]" in errors and "unknown option(s): extra @ plugins[2]" in errors
    assert "plugins[3]" in errors and "'how' must be in" in errors


def test_config_without_use_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.use: required"):
        make_config([{"label": "x"}])


def test_builtin_names_resolve() -> None:
    for name in ("acl", "jwt_auth", "token_auth", "rate_limit", "content_filter", "http_hooks"):
        assert resolve(name).__module__ == f"plugins.{name}"


# --- Order and refusals ----------------------------------------------------------------------


async def test_hooks_run_in_config_order(
    start_broker: StartBroker, connect: Connect, calls: list[str]
) -> None:
    broker = await start_broker(
        [{"use": f"{EXAMPLE}:Recorder", "label": "a"}, {"use": f"{EXAMPLE}:Recorder", "label": "b"}]
    )
    client = await connect(broker)
    await client.request({"op": "subscribe", "topic": "t", "id": 1})
    await client.send({"op": "publish", "topic": "t", "data": 1, "id": 2})
    assert (await client.recv())["op"] == "message"
    assert await client.recv() == {"op": "ack", "id": 2}
    await client.aclose()
    assert calls == [
        "a:authenticate",
        "b:authenticate",
        "a:on_connect",
        "b:on_connect",
        "a:authorize_subscribe",
        "b:authorize_subscribe",
        "a:authorize_publish",
        "b:authorize_publish",
        "a:on_disconnect",
        "b:on_disconnect",
    ]


async def test_first_refusal_wins(
    start_broker: StartBroker, connect: Connect, calls: list[str]
) -> None:
    broker = await start_broker(
        [misbehave("authorize_subscribe", "refuse"), {"use": f"{EXAMPLE}:Recorder", "label": "b"}]
    )
    client = await connect(broker)
    assert await client.request({"op": "subscribe", "topic": "t", "id": 1}) == {
        "op": "error",
        "code": "forbidden",
        "message": "authorize_subscribe refused by test",
        "id": 1,
    }
    assert "b:authorize_subscribe" not in calls
    # A refused subscription delivers nothing.
    await client.request({"op": "publish", "topic": "t", "data": 1, "id": 2})
    assert await client.request({"op": "ping", "id": 3}) == {"op": "pong", "id": 3}


@pytest.mark.parametrize("plain", [False, True], ids=["async", "def"])
async def test_refused_publish_is_not_delivered(
    start_broker: StartBroker, connect: Connect, plain: bool
) -> None:
    broker = await start_broker(
        [misbehave("authorize_publish", "refuse", plain=plain, only_topic="secret")]
    )
    client = await connect(broker)
    await client.request({"op": "subscribe", "topic": "#", "id": 0})
    await client.send({"op": "publish", "topic": "secret", "data": 1, "id": 1})
    assert (await client.recv())["code"] == "forbidden"
    await client.send({"op": "publish", "topic": "open", "data": 2, "id": 2})
    assert (await client.recv())["topic"] == "open"


async def test_handshake_refusal_uses_the_plugins_status(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker([{"use": f"{EXAMPLE}:HeaderAuth"}])
    with pytest.raises(Rejected) as caught:
        await WsClient.connect(url(broker))
    assert caught.value.status == 401
    assert b"who are you?" in caught.value.body
    await connect(broker, headers={"X-User": "alice"})
    await connect(url(broker, "/ws?user=bob"))


@pytest.mark.parametrize("plain", [False, True], ids=["async", "def"])
async def test_refusal_can_close_the_connection(
    start_broker: StartBroker, connect: Connect, plain: bool
) -> None:
    broker = await start_broker([misbehave("authorize_publish", "close", plain=plain)])
    client = await connect(broker)
    await client.send({"op": "publish", "topic": "t", "data": 1, "id": 1})
    assert await client.recv() == {"op": "error", "code": "forbidden", "message": "enough", "id": 1}
    assert await client.wait_closed() == (1008, "enough")


# --- Plugins that fail -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hook", "how"),
    [
        ("authorize_subscribe", "raise"),
        ("authorize_subscribe", "hang"),
        ("authorize_publish", "raise"),
        ("authorize_publish", "hang"),
        ("authorize_publish", "garbage"),
    ],
)
@pytest.mark.parametrize("plain", [False, True], ids=["async", "def"])
async def test_failing_plugin_fails_the_operation_closed(
    start_broker: StartBroker,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
    hook: str,
    how: str,
    plain: bool,
) -> None:
    broker = await start_broker(
        [misbehave(hook, how, plain=plain, only_topic="bad")], server={"plugin_timeout": 0.2}
    )
    client = await connect(broker)
    other = await connect(broker)
    await other.request({"op": "subscribe", "topic": "#", "id": 0})
    if hook == "authorize_subscribe":
        await client.send({"op": "subscribe", "topic": "bad", "id": 1})
    else:
        await client.send({"op": "publish", "topic": "bad", "data": 1, "id": 1})
    assert await client.recv() == {
        "op": "error",
        "code": "internal",
        "message": "internal error",
        "id": 1,
    }
    name = f"{EXAMPLE}:{'PlainMisbehave' if plain else 'Misbehave'}"
    assert any(name in record.getMessage() for record in caplog.records)
    # Nothing else is harmed: the same client and the others carry on.
    await client.send({"op": "publish", "topic": "good", "data": 2, "id": 2})
    assert await client.recv() == {"op": "ack", "id": 2}
    assert await other.recv() == {"op": "message", "topic": "good", "data": 2}


@pytest.mark.parametrize("plain", [False, True], ids=["async", "def"])
@pytest.mark.parametrize("how", ["raise", "hang", "garbage"])
async def test_failing_authenticator_refuses_the_handshake(
    start_broker: StartBroker, how: str, plain: bool
) -> None:
    broker = await start_broker(
        [misbehave("authenticate", how, plain=plain)], server={"plugin_timeout": 0.2}
    )
    with pytest.raises(Rejected) as caught:
        await WsClient.connect(url(broker))
    assert caught.value.status == 500


@pytest.mark.parametrize("plain", [False, True], ids=["async", "def"])
@pytest.mark.parametrize("how", ["raise", "hang", "garbage"])
async def test_failing_delivery_filter_withholds_only_that_delivery(
    start_broker: StartBroker, connect: Connect, how: str, plain: bool
) -> None:
    broker = await start_broker(
        [misbehave("filter_delivery", how, plain=plain, only_topic="bad")],
        server={"plugin_timeout": 0.2},
    )
    client = await connect(broker)
    await client.request({"op": "subscribe", "topic": "#", "id": 0})
    await client.send({"op": "publish", "topic": "bad", "data": 1, "id": 1})
    assert await client.recv() == {"op": "ack", "id": 1}
    await client.send({"op": "publish", "topic": "good", "data": 2, "id": 2})
    assert await client.recv() == {"op": "message", "topic": "good", "data": 2}


# --- Transforms, drops, filters, identity ----------------------------------------------------


async def test_stamping_example_from_the_docs(start_broker: StartBroker, connect: Connect) -> None:
    broker = await start_broker(
        [{"use": f"{EXAMPLE}:HeaderAuth"}, {"use": f"{EXAMPLE}:StampSender"}]
    )
    alice = await connect(broker, headers={"X-User": "alice"})
    bob = await connect(broker, headers={"X-User": "bob"})
    await bob.request({"op": "subscribe", "topic": "chat", "id": 1})
    await alice.request({"op": "publish", "topic": "chat", "data": "hi", "id": 2})
    assert await bob.recv() == {"op": "message", "topic": "chat", "data": "hi", "from": "alice"}


async def test_dropped_publish_is_acked_but_not_delivered(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker([misbehave("authorize_publish", "drop", only_topic="void")])
    client = await connect(broker)
    await client.request({"op": "subscribe", "topic": "#", "id": 0})
    assert await client.request({"op": "publish", "topic": "void", "data": 1, "id": 1}) == {
        "op": "ack",
        "id": 1,
    }
    await client.send({"op": "publish", "topic": "kept", "data": 2})
    assert (await client.recv())["topic"] == "kept"


async def test_delivery_filter_sees_each_subscriber(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker(
        [
            {"use": f"{EXAMPLE}:HeaderAuth"},
            {"use": f"{EXAMPLE}:OnlyRole", "prefix": "staff/", "role": "staff"},
        ]
    )
    assert broker.pipeline.filters_deliveries
    staff = await connect(broker, headers={"X-User": "s", "X-Roles": "staff"})
    guest = await connect(broker, headers={"X-User": "g"})
    for client in (staff, guest):
        await client.request({"op": "subscribe", "topic": "#", "id": 0})
    await staff.send({"op": "publish", "topic": "staff/memo", "data": 1})
    await staff.send({"op": "publish", "topic": "all/news", "data": 2})
    assert (await staff.recv())["topic"] == "staff/memo"
    assert (await staff.recv())["topic"] == "all/news"
    assert (await guest.recv())["topic"] == "all/news"


async def test_no_delivery_filter_means_no_per_delivery_step(broker: Broker) -> None:
    assert not broker.pipeline.filters_deliveries


async def test_expired_identity_closes_with_4001(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker([{"use": f"{EXAMPLE}:HeaderAuth", "lifetime": 0.2}])
    client = await connect(broker, headers={"X-User": "alice"})
    assert await client.wait_closed() == (4001, "token expired")


async def test_reconfigure_swaps_the_pipeline_for_existing_connections(
    start_broker: StartBroker, connect: Connect
) -> None:
    from tests.conftest import make_pipeline

    broker = await start_broker([{"use": f"{EXAMPLE}:HeaderAuth"}])
    client = await connect(broker, headers={"X-User": "alice"})
    config = make_config([misbehave("authorize_publish", "refuse")])
    broker.reconfigure(config, make_pipeline(config))
    await client.send({"op": "publish", "topic": "t", "data": 1, "id": 1})
    assert (await client.recv())["code"] == "forbidden"
    # New connections need no X-User any more: HeaderAuth is gone.
    await connect(broker)


async def test_a_broker_without_an_explicit_pipeline_runs_the_configs_plugins(
    nursery: object, connect: Connect
) -> None:
    config = make_config([{"use": f"{EXAMPLE}:HeaderAuth"}])
    broker = Broker(config)
    await nursery.start(broker.serve)  # type: ignore[attr-defined]
    with pytest.raises(Rejected):
        await WsClient.connect(url(broker))
    broker.reconfigure(make_config([misbehave("authorize_subscribe", "refuse")]))
    client = await connect(broker)
    assert (await client.request({"op": "subscribe", "topic": "t", "id": 1}))["code"] == "forbidden"


def test_entry_point_plugins_are_found_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "acme_broker_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: acme-broker-plugins\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[trio_broker.plugins]\nstamp = {EXAMPLE}:StampSender\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve("stamp") is example_plugins.StampSender
    (plugin,) = load_plugins(make_config([{"use": "stamp"}]), "c.toml")
    assert plugin.name == "stamp"


@pytest.mark.parametrize(
    ("how", "code"),
    [("refuse", "forbidden"), ("raise", "internal"), ("garbage", "internal"), ("hang", "internal")],
)
@pytest.mark.parametrize("plain", [False, True], ids=["async", "def"])
async def test_a_misbehaving_refresh_hook_changes_nothing(
    start_broker: StartBroker, connect: Connect, how: str, code: str, plain: bool
) -> None:
    broker = await start_broker(
        [misbehave("refresh", how, plain=plain)], server={"plugin_timeout": 0.2}
    )
    client = await connect(broker)
    reply = await client.request({"op": "refresh", "token": "t", "id": 1})
    assert (reply["op"], reply["code"]) == ("error", code)
    assert await client.request({"op": "ping", "id": 2}) == {"op": "pong", "id": 2}


# --- def hooks ---------------------------------------------------------------------------------


class _DeadlineSeer(Plugin):
    """Records the deadline its hooks run under: `seen` by hook kind."""

    seen: dict[str, float]

    def authorize_subscribe(self, client: Client, topic_filter: str) -> None:
        self.seen["def"] = trio.current_effective_deadline()

    async def authorize_publish(self, client: Client, publication: Publication) -> Publication:
        self.seen["async"] = trio.current_effective_deadline()
        return publication


async def test_a_def_hook_runs_without_the_timeouts_scope_and_an_async_one_within_it() -> None:
    plugin = _DeadlineSeer(Plugin.Options())
    plugin.seen = {}
    pipeline = Pipeline([plugin], timeout=30.0)
    client = Client("c1", Identity(), "127.0.0.1:1")
    await pipeline.authorize_subscribe(client, "t")
    before = trio.current_time()
    assert await pipeline.authorize_publish(client, Publication("t", 1), 100) == Publication("t", 1)
    assert plugin.seen["def"] == math.inf
    assert before + 30.0 <= plugin.seen["async"] <= trio.current_time() + 30.0


class _Slow(Plugin):
    def authorize_publish(self, client: Client, publication: Publication) -> Publication:
        time.sleep(0.05)  # the slow work under test: a def hook cannot be interrupted
        return attrs.evolve(publication, topic="slow")


async def test_a_def_hook_slower_than_the_timeout_is_answered_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plugin = _Slow(Plugin.Options())
    plugin.name = "slowpoke"
    pipeline = Pipeline([plugin], timeout=0.01)
    client = Client("c1", Identity(), "127.0.0.1:1")
    published = await pipeline.authorize_publish(client, Publication("t", 1), 100)
    assert published == Publication("slow", 1)
    (record,) = [r for r in caplog.records if r.name == "broker.plugins"]
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        "plugin slowpoke: authorize_publish, a def hook, took longer than 0.01s and held up "
        "every connection meanwhile: make it async if it waits"
    )

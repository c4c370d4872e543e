"""The admin listener over real sockets: health, readiness, metrics, HTTP publish, stats."""

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from broker import Broker
from broker.admin.ui_pages import websocket_url
from broker.config.schema import ConfigError
from broker.node.config_file import load
from tests.conftest import ROOT, Connect, StartBroker, url
from tests.wsclient import Rejected, WsClient

KEY = "k" * 24
OTHER_KEY = "o" * 24
ADMIN = {
    "enabled": True,
    "host": "127.0.0.1",
    "port": 0,
    "api_keys": [
        {"key": KEY, "user": "backend", "roles": ["publisher"]},
        {"key": OTHER_KEY, "user": "intruder"},
    ],
}
AUTH = {"Authorization": f"Bearer {KEY}"}
ACL = {
    "use": "acl",
    "rules": [
        {"role": "publisher", "publish": ["news/#"], "subscribe": ["#"]},
        {"subscribe": ["#"]},
    ],
}


async def start_admin(
    start_broker: StartBroker, *plugins: dict[str, Any], **sections: Any
) -> Broker:
    admin = {**ADMIN, **sections.pop("admin", {})}
    return await start_broker(list(plugins), admin=admin, **sections)


def admin_url(broker: Broker, path: str) -> str:
    return f"http://127.0.0.1:{broker.admin_port}{path}"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(http: httpx.AsyncClient, broker: Broker) -> dict[Any, float]:
    response = await http.get(admin_url(broker, "/metrics"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return samples(response.text)


# --- Health and readiness ------------------------------------------------------------------


async def test_health_and_readiness(start_broker: StartBroker, http: httpx.AsyncClient) -> None:
    broker = await start_admin(start_broker)
    health = await http.get(admin_url(broker, "/healthz"))
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = await http.get(admin_url(broker, "/readyz"))
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_the_admin_listener_is_off_unless_enabled(broker: Broker) -> None:
    assert broker.admin_listeners == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("POST", "/healthz", 405),
        ("DELETE", "/api/publish", 405),
        ("GET", "/api/publish", 405),
    ],
)
async def test_unknown_paths_and_wrong_methods(
    start_broker: StartBroker, http: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    broker = await start_admin(start_broker)
    response = await http.request(method, admin_url(broker, path), headers=AUTH)
    assert response.status_code == status
    assert response.json()["code"] == "bad_request"
    if status == 405:
        assert response.headers["allow"] in ("GET", "POST")


# --- Metrics -------------------------------------------------------------------------------


async def test_counters_move_by_exactly_what_was_done(
    start_broker: StartBroker, connect: Connect, http: httpx.AsyncClient
) -> None:
    broker = await start_admin(start_broker)
    before = await scrape(http, broker)
    assert before[("trio_broker_connections", ())] == 0
    assert ("process_resident_memory_bytes", ()) in before
    assert ("process_open_fds", ()) in before
    subscribers = [await connect(broker) for _ in range(3)]
    for subscriber in subscribers:
        await subscriber.request({"op": "subscribe", "topic": "t/#", "id": 1})
    publisher = await connect(broker)
    count = 7
    for n in range(count):
        await publisher.request({"op": "publish", "topic": "t/x", "data": n, "id": n})
    for subscriber in subscribers:
        for n in range(count):
            assert (await subscriber.recv())["data"] == n
    after = await scrape(http, broker)
    frame = len(b'{"op":"message","topic":"t/x","data":0}') + 2  # a text frame's 2-byte header
    assert after[("trio_broker_connections", ())] == 4
    assert after[("trio_broker_subscriptions", ())] == 3
    assert after[("trio_broker_messages_published_total", ())] == count
    assert after[("trio_broker_deliveries_total", ())] == count * 3
    assert after[("trio_broker_delivered_bytes_total", ())] == count * 3 * frame
    assert after[("trio_broker_http_publishes_total", ())] == 0


async def test_refusals_errors_and_plugin_time_are_counted(
    start_broker: StartBroker, connect: Connect, http: httpx.AsyncClient
) -> None:
    broker = await start_admin(start_broker, ACL)
    client = await connect(broker)
    for n in range(2):
        reply = await client.request({"op": "publish", "topic": "news/x", "data": 0, "id": n})
        assert reply["code"] == "forbidden"  # anonymous: not a publisher
    assert (await client.request({"op": "subscribe", "topic": "a//b", "id": 9}))["code"] == (
        "invalid_topic"
    )
    with pytest.raises(Rejected):
        await WsClient.connect(url(broker), headers={"Origin": "https://evil.example"})
    metrics = await scrape(http, broker)
    assert metrics[("trio_broker_plugin_refusals_total", (("plugin", "acl"),))] == 2
    assert metrics[("trio_broker_errors_total", (("code", "forbidden"),))] == 2
    assert metrics[("trio_broker_errors_total", (("code", "invalid_topic"),))] == 1
    assert metrics[("trio_broker_handshake_refusals_total", (("status", "403"),))] == 1
    timed = (("hook", "authorize_publish"), ("plugin", "acl"))
    assert metrics[("trio_broker_plugin_seconds_count", timed)] == 2
    every = (("hook", "authorize_publish"), ("le", "+Inf"), ("plugin", "acl"))
    assert metrics[("trio_broker_plugin_seconds_bucket", every)] == 2


# --- HTTP publish --------------------------------------------------------------------------


async def test_an_http_publish_passes_the_plugins_and_reaches_websocket_subscribers(
    start_broker: StartBroker, connect: Connect, http: httpx.AsyncClient
) -> None:
    broker = await start_admin(start_broker, ACL)
    subscriber = await connect(broker)
    await subscriber.request({"op": "subscribe", "topic": "news/#", "id": 1})
    response = await http.post(
        admin_url(broker, "/api/publish"),
        json={"topic": "news/today", "data": {"headline": "hi"}},
        headers=AUTH,
    )
    assert (response.status_code, response.json()) == (200, {"subscribers": 1})
    assert await subscriber.recv() == {
        "op": "message",
        "topic": "news/today",
        "data": {"headline": "hi"},
    }
    # The acl plugin judges the key's identity: "backend" may publish only news/#.
    refused = await http.post(
        admin_url(broker, "/api/publish"), json={"topic": "other", "data": 1}, headers=AUTH
    )
    assert refused.status_code == 403
    assert refused.json() == {"code": "forbidden", "message": "not allowed to publish to 'other'"}
    metrics = await scrape(http, broker)
    assert metrics[("trio_broker_http_publishes_total", ())] == 1
    assert metrics[("trio_broker_messages_published_total", ())] == 1


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'{"topic":"t","data":1}', {}, 401, "forbidden"),
        (b'{"topic":"t","data":1}', {"Authorization": "Bearer " + "x" * 24}, 401, "forbidden"),
        (b'{"topic":"t","data":1}', {"Authorization": KEY}, 401, "forbidden"),
        (b'{"topic":"t",', AUTH, 400, "bad_request"),
        (b"\xff\xfe", AUTH, 400, "bad_request"),
        (b'{"topic":"t","data":NaN}', AUTH, 400, "bad_request"),
        (b'{"topic":"t","data":1,"id":5}', AUTH, 400, "bad_request"),
        (b'{"topic":"a/+/b","data":1}', AUTH, 400, "invalid_topic"),
        (b'{"topic":"$SYS/x","data":1}', AUTH, 403, "forbidden"),
        (b'{"data":1}', AUTH, 400, "bad_request"),
        (b"[1]", AUTH, 400, "bad_request"),
        (b'{"topic":"t","data":"' + b"x" * 2000 + b'"}', AUTH, 413, "limit_exceeded"),
    ],
)
async def test_http_publish_errors(
    start_broker: StartBroker,
    http: httpx.AsyncClient,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    broker = await start_admin(start_broker, limits={"max_message_size": 1024})
    response = await http.post(admin_url(broker, "/api/publish"), content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_http_publishes_are_rate_limited_like_clients(
    start_broker: StartBroker, http: httpx.AsyncClient
) -> None:
    limit = {"use": "rate_limit", "messages_per_second": 0.01, "burst": 2}
    broker = await start_admin(start_broker, limit)
    statuses = []
    for _ in range(3):
        response = await http.post(
            admin_url(broker, "/api/publish"), json={"topic": "t", "data": 0}, headers=AUTH
        )
        statuses.append(response.status_code)
    assert statuses == [200, 200, 429]
    assert response.headers["retry-after"] == "1"
    assert response.json()["code"] == "rate_limited"


async def test_a_batch_reports_each_message_and_a_malformed_one_publishes_nothing(
    start_broker: StartBroker, connect: Connect, http: httpx.AsyncClient
) -> None:
    broker = await start_admin(start_broker, ACL)
    subscriber = await connect(broker)
    await subscriber.request({"op": "subscribe", "topic": "#", "id": 1})
    batch = {
        "messages": [
            {"topic": "news/1", "data": 1},
            {"topic": "elsewhere", "data": 2},
            {"topic": "news/2", "data": 3},
        ]
    }
    response = await http.post(admin_url(broker, "/api/publish_batch"), json=batch, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {
        "results": [
            {"subscribers": 1},
            {"code": "forbidden", "message": "not allowed to publish to 'elsewhere'"},
            {"subscribers": 1},
        ]
    }
    assert [(await subscriber.recv())["data"] for _ in range(2)] == [1, 3]
    malformed = {"messages": [{"topic": "news/3", "data": 4}, {"topic": "news/4"}]}
    response = await http.post(
        admin_url(broker, "/api/publish_batch"), json=malformed, headers=AUTH
    )
    assert response.status_code == 400
    assert response.json()["message"] == "missing field 'data' in messages[1]"
    for body in ({"messages": 5}, {"msgs": []}, [1]):
        response = await http.post(admin_url(broker, "/api/publish_batch"), json=body, headers=AUTH)
        assert response.status_code == 400
    assert await subscriber.request({"op": "ping", "id": "p"}) == {"op": "pong", "id": "p"}


async def test_stats(start_broker: StartBroker, connect: Connect, http: httpx.AsyncClient) -> None:
    broker = await start_admin(start_broker)
    client = await connect(broker)
    await client.request({"op": "subscribe", "topic": "a", "id": 1})
    await client.request({"op": "subscribe", "topic": "b/#", "id": 2})
    await client.request({"op": "publish", "topic": "a", "data": 1, "id": 3})
    assert (await http.get(admin_url(broker, "/api/stats"))).status_code == 401
    stats = (await http.get(admin_url(broker, "/api/stats"), headers=AUTH)).json()
    assert stats["connections"] == 1
    assert stats["subscriptions"] == 2
    assert stats["topics"] == 2
    assert stats["ready"] is True
    assert stats["counts"]["messages_published"] == 1
    assert stats["counts"]["deliveries"] == 1
    assert stats["uptime_seconds"] >= 0
    assert stats["version"]


async def test_while_shutting_down_readiness_and_publishes_say_503(
    start_broker: StartBroker, http: httpx.AsyncClient
) -> None:
    broker = await start_admin(start_broker, server={"shutdown_timeout": 30})
    # A client that never answers the close keeps the shutdown draining.
    silent = await WsClient.connect(url(broker))
    broker.stop()
    await trio.testing.wait_all_tasks_blocked()
    ready = await http.get(admin_url(broker, "/readyz"))
    assert (ready.status_code, ready.json()) == (
        503,
        {"status": "unavailable", "reason": "shutting down"},
    )
    response = await http.post(
        admin_url(broker, "/api/publish"), json={"topic": "t", "data": 0}, headers=AUTH
    )
    assert response.status_code == 503
    await trio.aclose_forcefully(silent.stream)


async def test_new_keys_apply_on_reload(start_broker: StartBroker, http: httpx.AsyncClient) -> None:
    from tests.conftest import make_config

    broker = await start_admin(start_broker)
    new_key = "n" * 32
    broker.reconfigure(
        make_config(admin={**ADMIN, "api_keys": [{"key": new_key, "user": "backend"}]})
    )
    stats = admin_url(broker, "/api/stats")
    assert (await http.get(stats, headers=AUTH)).status_code == 401
    new_auth = {"Authorization": f"Bearer {new_key}"}
    assert (await http.get(stats, headers=new_auth)).status_code == 200


async def test_no_key_appears_in_logs_or_responses(
    start_broker: StartBroker, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = await start_admin(start_broker, ACL)
    bodies = []
    for headers in (AUTH, {"Authorization": f"Bearer {OTHER_KEY}"}, {"Authorization": "Bearer x"}):
        for path, body in (("/api/publish", {"topic": "x", "data": 1}), ("/api/stats", None)):
            method = "POST" if body else "GET"
            response = await http.request(
                method, admin_url(broker, path), json=body, headers=headers
            )
            bodies.append(response.text)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for key in (KEY, OTHER_KEY):
        assert key not in logged
        assert not any(key in body for body in bodies)


# --- Keys in the config --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ([{"key": "short-secret", "user": "b"}], "admin.api_keys[0]: the key must be at least 16"),
        ([{"key": 12345678901234567, "user": "b"}], "admin.api_keys[0].key: must be a string"),
        ([{"key": KEY, "key_file": "/x", "user": "b"}], "set exactly one of 'key' and 'key_file'"),
        ([{"user": "b"}], "set exactly one of 'key' and 'key_file'"),
        ([{"key": KEY}], "admin.api_keys[0].user: required"),
        ([{"key_file": "/nonexistent/key", "user": "b"}], "cannot read '/nonexistent/key'"),
        (
            [{"key": KEY, "user": "a"}, {"key": KEY, "user": "b"}],
            "entries 0 and 1 are the same key",
        ),
    ],
)
def test_bad_keys_are_config_errors_that_never_quote_a_key(
    tmp_path: Path, keys: list[dict[str, Any]], error: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[admin]\napi_keys = {toml_array(keys)}\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert error in str(caught.value)
    assert KEY not in str(caught.value) and "short-secret" not in str(caught.value)
    assert "12345678901234567" not in str(caught.value)


def toml_array(tables: list[dict[str, Any]]) -> str:
    def value(v: Any) -> str:
        return json.dumps(v)

    inline = ["{ " + ", ".join(f"{k} = {value(v)}" for k, v in t.items()) + " }" for t in tables]
    return "[" + ", ".join(inline) + "]"


async def test_a_key_file_is_read(
    start_broker: StartBroker, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("f" * 40 + "\n")
    broker = await start_admin(
        start_broker, admin={"api_keys": [{"key_file": str(key_file), "user": "backend"}]}
    )
    stats = admin_url(broker, "/api/stats")
    assert (await http.get(stats, headers={"Authorization": "Bearer " + "f" * 40})).is_success


async def test_retained_history_is_measured(
    start_broker: StartBroker, connect: Connect, http: httpx.AsyncClient
) -> None:
    broker = await start_admin(
        start_broker, topics=[{"filter": "chat/#", "history_size": 2}], limits={}
    )
    client = await connect(broker)
    for n in range(3):
        await client.request({"op": "publish", "topic": "chat/a", "data": n, "id": n})
    await client.request({"op": "publish", "topic": "other", "data": 0, "id": "o"})
    frame = len(b'{"op":"message","topic":"chat/a","data":0,"pos":"xxxxxxxx:1"}') + 2
    metrics = await scrape(http, broker)
    assert metrics[("trio_broker_retained_messages", ())] == 2  # history_size
    assert metrics[("trio_broker_retained_bytes", ())] == 2 * frame
    stats = (await http.get(admin_url(broker, "/api/stats"), headers=AUTH)).json()
    assert (stats["retained_messages"], stats["retained_bytes"]) == (2, 2 * frame)


async def test_the_demo_pages_are_served_only_with_ui(
    start_broker: StartBroker, http: httpx.AsyncClient
) -> None:
    off = await start_admin(start_broker)
    assert (await http.get(admin_url(off, "/ui/chat.html"))).status_code == 404
    on = await start_admin(start_broker, admin={"ui": True})
    chat = await http.get(admin_url(on, "/ui/chat.html"))
    assert chat.status_code == 200 and chat.headers["content-type"].startswith("text/html")
    assert 'from "./trio-broker.js"' in chat.text
    module = await http.get(admin_url(on, "/ui/trio-broker.js"))
    assert module.headers["content-type"].startswith("text/javascript")
    assert module.text == (ROOT / "clients" / "js" / "trio-broker.js").read_text()
    msgpack = await http.get(admin_url(on, "/ui/msgpack.mjs"))  # for encoding: "msgpack"
    assert msgpack.headers["content-type"].startswith("text/javascript")
    assert msgpack.text == (ROOT / "clients" / "js" / "msgpack.mjs").read_text()
    config = await http.get(admin_url(on, "/ui/config.json"))
    assert config.json() == {"websocket": f"ws://127.0.0.1:{on.port}/ws"}
    assert (await http.get(admin_url(on, "/ui/../config.py"))).status_code == 404
    assert (await http.get(admin_url(on, "/ui/nothing.html"))).status_code == 404
    assert (await http.post(admin_url(on, "/ui/chat.html"))).status_code == 405


def test_pages_reach_the_websocket_listener_by_the_name_they_were_served_from() -> None:
    assert websocket_url("example.com:8081", 8080, "/ws", False) == "ws://example.com:8080/ws"
    assert websocket_url("[::1]:8081", 8080, "/ws", True) == "wss://[::1]:8080/ws"
    assert websocket_url("localhost", 9000, "/x", False) == "ws://localhost:9000/x"
    assert websocket_url(None, 8080, "/ws", False) == "ws://127.0.0.1:8080/ws"

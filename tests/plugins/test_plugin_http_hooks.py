"""http_hooks against a real backend (tests/backend_server.py): every shape of the contract
in docs/plugins.md, refusals, and every way a backend fails (fail closed)."""

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker import Broker
from tests.admin.test_admin import samples
from tests.backend_server import HANG, Backend
from tests.conftest import Connect, StartBroker, url
from tests.wsclient import Rejected

OK: Any = (200, {"result": {}})


@pytest.fixture
def backend() -> Iterator[Backend]:
    with Backend().running() as running:
        yield running


def hooks(backend: Backend, *names: str, **options: Any) -> dict[str, Any]:
    """An http_hooks table calling ``backend`` at /NAME for each hook named."""
    table: dict[str, Any] = {"use": "http_hooks", "timeout": 0.5}
    table.update({f"{name}_url": backend.url(f"/{name}") for name in names})
    return {**table, **options}


async def test_connect_gives_the_identity_and_channels(
    start_broker: StartBroker, connect: Connect, backend: Backend, tmp_path: Path
) -> None:
    secret_headers = tmp_path / "hooks-headers.toml"
    secret_headers.write_text('X-Api-Key = "s3cret"\n')
    backend.answer(
        "/connect",
        (
            200,
            {
                "result": {
                    "user": "alice",
                    "roles": ["member"],
                    "info": {"name": "Alice"},
                    "channels": ["user/alice"],
                }
            },
        ),
    )
    broker = await start_broker(
        [
            hooks(
                backend,
                "connect",
                forward_headers=["Cookie", "Authorization"],
                headers_file=str(secret_headers),
            )
        ],
        topics=[{"filter": "room", "presence": True}],
    )
    origin = f"http://127.0.0.1:{broker.port}"  # the same host: allowed
    client = await connect(
        url(broker, "/ws?room=1&token=t"),
        welcome=False,
        headers={"Cookie": "session=abc", "X-Other": "no", "Origin": origin},
    )
    welcome = await client.recv()
    assert await client.recv() == {"op": "subscribed", "topic": "user/alice"}
    (call,) = backend.calls_to("/connect")
    assert call.body == {
        "client_id": welcome["client_id"],
        "remote": call.body["remote"],
        "origin": origin,
        "headers": {"Cookie": "session=abc"},
        "query": {"room": "1", "token": "t"},
    }
    assert call.body["remote"].startswith("127.0.0.1:")
    assert call.headers["x-api-key"] == "s3cret"
    assert call.headers["content-type"] == "application/json"
    await client.request({"op": "subscribe", "topic": "room", "id": 1})
    who = await client.request({"op": "presence", "topic": "room", "id": 2})
    assert who["clients"] == [{"client_id": welcome["client_id"], "user": "alice"}]


async def test_a_refused_connect_is_a_403_with_the_backends_message(
    start_broker: StartBroker, connect: Connect, backend: Backend
) -> None:
    backend.answer("/connect", (200, {"error": {"code": "forbidden", "message": "banned"}}))
    broker = await start_broker([hooks(backend, "connect")])
    with pytest.raises(Rejected) as caught:
        await connect(broker)
    assert caught.value.status == 403 and b"banned" in caught.value.body


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (HANG, "timeout"),
        ((500, b"oops"), "status"),
        ((200, b"<html>not json</html>"), "reply"),
        ((200, {"result": {"user": 5}}), "reply"),
        ((200, {"error": {"code": "no-such-code", "message": "x"}}), "reply"),
    ],
)
async def test_a_failing_connect_hook_is_a_503(
    start_broker: StartBroker,
    connect: Connect,
    backend: Backend,
    answer: Any,
    reason: str,
    http: httpx.AsyncClient,
) -> None:
    backend.answer("/connect", answer)
    broker = await start_broker([hooks(backend, "connect")], admin={"enabled": True, "port": 0})
    started = time.monotonic()
    with pytest.raises(Rejected) as caught:
        await connect(broker)
    assert caught.value.status == 503
    assert time.monotonic() - started < 3  # the hook's timeout (0.5 s), not the plugin's
    metrics = samples((await http.get(f"http://127.0.0.1:{broker.admin_port}/metrics")).text)
    failures = (("hook", "connect"), ("reason", reason))
    assert metrics[("trio_broker_hook_failures_total", failures)] == 1
    assert metrics[("trio_broker_hook_seconds_count", (("hook", "connect"),))] == 1


async def test_a_backend_that_is_down_fails_closed_and_is_logged_once_per_burst(
    start_broker: StartBroker,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Backend().running() as gone:
        down = gone.url("/connect")  # nothing listens there any more
    broker = await start_broker([{"use": "http_hooks", "connect_url": down, "timeout": 0.5}])
    with caplog.at_level(logging.WARNING, "broker.plugins.http_hooks"):
        for _ in range(3):
            with pytest.raises(Rejected) as caught:
                await connect(broker)
            assert caught.value.status == 503
    logged = [r.getMessage() for r in caplog.records if r.name == "broker.plugins.http_hooks"]
    assert len(logged) == 1 and down in logged[0] and "ConnectError" in logged[0]


async def test_subscribe_asks_the_backend_and_passes_its_refusal_on(
    start_broker: StartBroker, connect: Connect, backend: Backend
) -> None:
    backend.routes["/subscribe"] = lambda body: (
        OK
        if body["topic"] == "open"
        else (200, {"error": {"code": "forbidden", "message": f"not {body['topic']}"}})
    )
    broker = await start_broker(
        [{"use": "tests.example_plugins:HeaderAuth"}, hooks(backend, "subscribe")]
    )
    client = await connect(broker, headers={"X-User": "bob", "X-Roles": "b,a"})
    assert backend.calls == []  # no connect_url: nothing asked at connect
    assert (await client.request({"op": "subscribe", "topic": "open", "id": 1}))["op"] == "ack"
    refused = await client.request({"op": "subscribe", "topic": "closed", "id": 2})
    assert (refused["code"], refused["message"]) == ("forbidden", "not closed")
    first = backend.calls_to("/subscribe")[0].body
    assert first == {
        "client_id": first["client_id"],
        "user": "bob",
        "roles": ["a", "b"],
        "topic": "open",
    }


async def test_publish_may_replace_the_data(
    start_broker: StartBroker, connect: Connect, backend: Backend
) -> None:
    backend.routes["/publish"] = lambda body: (
        (200, {"result": {"data_b64": body["data_b64"][::-1]}})  # binary, reversed
        if "data_b64" in body
        else (200, {"result": {"data": {"clean": body["data"]["text"].upper()}}})
        if isinstance(body["data"], dict)
        else OK
        if body["data"] != "spam"
        else (200, {"error": {"code": "rate_limited", "message": "calm down"}})
    )
    broker = await start_broker([hooks(backend, "publish")])
    subscriber = await connect(broker)
    await subscriber.request({"op": "subscribe", "topic": "chat", "id": 1})
    publisher = await connect(broker)
    await publisher.request({"op": "publish", "topic": "chat", "data": "as is", "id": 1})
    await publisher.request({"op": "publish", "topic": "chat", "data": {"text": "hi"}, "id": 2})
    refused = await publisher.request({"op": "publish", "topic": "chat", "data": "spam", "id": 3})
    assert (refused["code"], refused["message"]) == ("rate_limited", "calm down")
    assert (await subscriber.recv())["data"] == "as is"
    assert (await subscriber.recv())["data"] == {"clean": "HI"}
    call = backend.calls_to("/publish")[1].body
    assert (call["topic"], call["data"], call["user"]) == ("chat", {"text": "hi"}, None)
    # Binary data goes to the backend as data_b64, and may come back replaced.
    binary = {"op": "publish", "topic": "chat", "data_b64": "AQID", "id": 4}
    assert (await publisher.request(binary))["op"] == "ack"
    assert (await subscriber.recv())["data_b64"] == "DIQA"
    assert backend.calls_to("/publish")[3].body["data_b64"] == "AQID"


@pytest.mark.parametrize("hook", ["subscribe", "publish"])
async def test_a_failing_request_hook_is_unavailable_and_the_connection_stays(
    start_broker: StartBroker, connect: Connect, backend: Backend, hook: str
) -> None:
    backend.answer(f"/{hook}", (503, b"maintenance"))
    broker = await start_broker([hooks(backend, hook)])
    client = await connect(broker)
    request = {"op": hook, "topic": "t", "id": 1}
    if hook == "publish":
        request["data"] = 1
    error = await client.request(request)
    assert error["code"] == "unavailable" and hook in error["message"]
    assert (await client.request({"op": "ping", "id": 2}))["op"] == "pong"


async def test_refresh_renews_an_expiring_connection_until_the_backend_says_no(
    start_broker: StartBroker, connect: Connect, backend: Backend
) -> None:
    backend.routes["/connect"] = lambda body: (
        200,
        {"result": {"user": "carol", "expires_at": time.time() + 0.3}},
    )
    renewals = [(200, {"result": {"expires_at": time.time() + 0.6}})]
    backend.routes["/refresh"] = lambda body: (
        renewals.pop() if renewals else (200, {"error": {"code": "forbidden", "message": "no"}})
    )
    broker = await start_broker([hooks(backend, "connect", "refresh")])
    started = time.monotonic()
    client = await connect(broker)
    assert await client.wait_closed() == (4001, "token expired")
    assert time.monotonic() - started >= 0.5  # lived past its first expiry
    calls = backend.calls_to("/refresh")
    assert [call.body["user"] for call in calls] == ["carol", "carol"]


async def test_calls_keep_their_connection_to_the_backend(
    start_broker: StartBroker, connect: Connect, backend: Backend
) -> None:
    backend.answer("/connect", (200, {"result": {"user": "dave"}}))
    backend.answer("/publish", OK)
    broker: Broker = await start_broker([hooks(backend, "connect", "publish")])
    client = await connect(broker)
    for n in range(20):
        await client.request({"op": "publish", "topic": "t", "data": n, "id": n})
    assert len(backend.calls) == 21
    assert {call.connection for call in backend.calls} == {1}

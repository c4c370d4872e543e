"""Webhooks against a real backend (tests/backend_server.py): signed batches, the events'
order and shapes, retries through a failing backend, the queue's bound."""

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from broker import Broker
from tests.backend_server import HANG, HOLD, Backend, Call
from tests.conftest import Connect, StartBroker, make_config, make_pipeline

SECRET = "webhook-secret-for-tests"
OK: Any = (200, {})


@pytest.fixture
def backend() -> Iterator[Backend]:
    with Backend().running() as running:
        yield running


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "webhook-secret"
    path.write_text(SECRET + "\n")
    return str(path)


def webhooks(backend: Backend, secret_file: str, **more: Any) -> dict[str, Any]:
    return {"url": backend.url("/events"), "secret_file": secret_file, "batch_delay": 0, **more}


def events_of(calls: list[Call]) -> list[dict[str, Any]]:
    """Every event posted, in order, without their times (checked to be there)."""
    events = []
    for call in calls:
        expected = hmac.new(SECRET.encode(), call.raw, hashlib.sha256).hexdigest()
        assert call.headers["x-trio-broker-signature"] == f"sha256={expected}"
        assert isinstance(call.body["time_ms"], int)
        for event in map(dict, call.body["events"]):
            assert isinstance(event.pop("time_ms"), int)
            events.append(event)
    return events


async def wait_for_events(backend: Backend, count: int) -> list[dict[str, Any]]:
    """The first ``count`` events posted to a backend that takes them all (a batch may
    hold several)."""
    calls = 1
    while True:
        events = events_of(await backend.wait_for_calls("/events", calls))
        if len(events) >= count:
            return events[:count]
        calls = len(backend.calls_to("/events")) + 1


async def test_a_clients_life_in_signed_batches_in_order(
    start_broker: StartBroker, connect: Connect, backend: Backend, secret_file: str
) -> None:
    backend.answer("/events", OK)
    everything = ["connect", "disconnect", "subscribe", "unsubscribe"]
    everything += ["occupied", "vacated", "join", "leave"]
    broker = await start_broker(
        webhooks=webhooks(backend, secret_file, events=everything),
        topics=[{"filter": "room", "presence": True}],
    )
    client = await connect(broker, welcome=False)
    client_id = (await client.recv())["client_id"]
    await client.request({"op": "subscribe", "topic": "room", "id": 1})
    await client.request({"op": "subscribe", "topic": "news/#", "id": 2})
    await client.request({"op": "unsubscribe", "topic": "news/#", "id": 3})
    await client.aclose()
    who = {"client_id": client_id, "user": None}
    events = await wait_for_events(backend, 12)
    assert events == [
        {"event": "connect", **who, "remote": events[0]["remote"]},
        {"event": "occupied", "topic": "room"},
        {"event": "subscribe", **who, "topic": "room"},
        {"event": "join", **who, "topic": "room"},
        {"event": "occupied", "topic": "news/#"},
        {"event": "subscribe", **who, "topic": "news/#"},
        {"event": "unsubscribe", **who, "topic": "news/#"},
        {"event": "vacated", "topic": "news/#"},
        {"event": "unsubscribe", **who, "topic": "room"},
        {"event": "vacated", "topic": "room"},
        {"event": "leave", **who, "topic": "room"},
        {"event": "disconnect", **who, "code": 1000},
    ]
    assert events[0]["remote"].startswith("127.0.0.1:")


async def test_occupied_and_vacated_once_per_transition(
    start_broker: StartBroker, connect: Connect, backend: Backend, secret_file: str
) -> None:
    backend.answer("/events", OK)
    broker = await start_broker(webhooks=webhooks(backend, secret_file))
    first, second = await connect(broker), await connect(broker)
    for client in (first, second):
        await client.request({"op": "subscribe", "topic": "chat/+", "id": 1})
    for client in (first, second):
        await client.request({"op": "unsubscribe", "topic": "chat/+", "id": 2})
    await first.request({"op": "subscribe", "topic": "chat/+", "id": 3})
    events = await wait_for_events(backend, 3)
    assert [(e["event"], e["topic"]) for e in events] == [
        ("occupied", "chat/+"),
        ("vacated", "chat/+"),
        ("occupied", "chat/+"),
    ]


async def test_a_failing_backend_gets_the_batch_again_until_it_takes_it(
    nursery: trio.Nursery,
    connect: Connect,
    backend: Backend,
    secret_file: str,
) -> None:
    backend.answer("/events", (500, b"down"), HANG, (503, b"busy"), OK)
    config = make_config(webhooks=webhooks(backend, secret_file, timeout=0.3, events=["occupied"]))
    broker = Broker(config, make_pipeline(config))
    async with trio.open_nursery() as running:
        await running.start(broker.serve)
        client = await connect(broker)
        await client.request({"op": "subscribe", "topic": "a", "id": 1})
        calls = await backend.wait_for_calls("/events", 4)
        # The same signed body each time, until it is taken; then the next events.
        assert calls[0].raw == calls[1].raw == calls[2].raw == calls[3].raw
        await client.request({"op": "subscribe", "topic": "b", "id": 2})
        calls = await backend.wait_for_calls("/events", 5)
        events = events_of([calls[3], calls[4]])
        assert [(e["event"], e["topic"]) for e in events] == [("occupied", "a"), ("occupied", "b")]
        await client.aclose()
        broker.stop()
    assert broker.stats.webhook_posts_failed == 3
    assert broker.stats.webhook_events_sent == 2


async def test_a_post_under_way_at_shutdown_is_finished_not_sent_twice(
    connect: Connect, backend: Backend, secret_file: str
) -> None:
    # Cut off mid-POST, the batch would go again in the drain: the backend may have taken
    # it already (here it has; it only holds its answer).
    backend.answer("/events", HOLD, OK)
    config = make_config(webhooks=webhooks(backend, secret_file, timeout=5, events=["occupied"]))
    broker = Broker(config, make_pipeline(config))
    async with trio.open_nursery() as running:
        await running.start(broker.serve)
        client = await connect(broker)
        await client.request({"op": "subscribe", "topic": "a", "id": 1})
        await backend.wait_for_calls("/events", 1)
        await client.aclose()
        broker.stop()
        await trio.testing.wait_all_tasks_blocked()  # as far as the shutdown goes on its own
        backend.let_go()
    (call,) = backend.calls_to("/events")
    assert [e["topic"] for e in events_of([call])] == ["a"]
    assert broker.stats.webhook_events_sent == 1


async def test_a_hung_post_holds_the_shutdown_no_longer_than_the_drain(
    connect: Connect, backend: Backend, secret_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import broker.node.broker
    import broker.node.webhooks

    for module in (broker.node.broker, broker.node.webhooks):
        monkeypatch.setattr(module, "DRAIN_SECONDS", 0.2)
    backend.answer("/events", HANG)
    config = make_config(webhooks=webhooks(backend, secret_file, timeout=300, events=["occupied"]))
    server = Broker(config, make_pipeline(config))
    with trio.fail_after(5):  # not the POST's 300 s
        async with trio.open_nursery() as running:
            await running.start(server.serve)
            client = await connect(server)
            await client.request({"op": "subscribe", "topic": "a", "id": 1})
            await backend.wait_for_calls("/events", 1)
            await client.aclose()
            server.stop()
    assert server.stats.webhook_events_sent == 0


async def test_beyond_max_queued_the_oldest_events_are_dropped_and_counted(
    nursery: trio.Nursery, connect: Connect, backend: Backend, secret_file: str
) -> None:
    # The first POST hangs (and is given up at once): meanwhile the queue overflows.
    backend.answer("/events", HANG, OK)
    config = make_config(
        webhooks=webhooks(
            backend, secret_file, timeout=0.5, retry_for=0, max_queued=2, events=["occupied"]
        )
    )
    broker = Broker(config, make_pipeline(config))
    async with trio.open_nursery() as running:
        await running.start(broker.serve)
        client = await connect(broker)
        await client.request({"op": "subscribe", "topic": "first", "id": 0})
        await backend.wait_for_calls("/events", 1)  # hanging, with "first"
        for n in range(1, 6):
            await client.request({"op": "subscribe", "topic": f"t{n}", "id": n})
        calls = await backend.wait_for_calls("/events", 2)
        assert [e["topic"] for e in events_of(calls[1:])] == ["t4", "t5"]
        await client.aclose()
        broker.stop()
    assert broker.stats.webhook_events_dropped == 1 + 3  # "first" given up, t1-t3 dropped
    assert broker.stats.webhook_events_sent == 2


async def test_an_unreadable_secret_file_is_a_config_error(
    start_broker: StartBroker, backend: Backend, tmp_path: Path
) -> None:
    from broker.config.schema import ConfigError

    with pytest.raises(ConfigError, match=r"webhooks\.secret_file"):
        await start_broker(webhooks=webhooks(backend, str(tmp_path / "absent")))


async def test_the_signature_check_in_the_docs_accepts_a_real_batch_and_nothing_else(
    start_broker: StartBroker, connect: Connect, backend: Backend, secret_file: str
) -> None:
    import textwrap

    from tests.conftest import ROOT

    docs = (ROOT / "docs" / "operations.md").read_text()
    snippet = docs.split("```python\n", 1)[1].split("```", 1)[0]
    assert "def signed(" in snippet
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(snippet), namespace)
    backend.answer("/events", OK)
    broker = await start_broker(webhooks=webhooks(backend, secret_file))
    await (await connect(broker)).request({"op": "subscribe", "topic": "t", "id": 1})
    (call,) = await backend.wait_for_calls("/events", 1)
    header = call.headers["x-trio-broker-signature"]
    assert namespace["signed"](call.raw, header, SECRET.encode())
    assert not namespace["signed"](call.raw + b" ", header, SECRET.encode())
    assert not namespace["signed"](call.raw, header, b"another secret")

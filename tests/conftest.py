import collections
import contextlib
import os
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from broker import Broker, Config
from broker.config.schema import config_from_mapping
from broker.plugin_host.loader import build_pipeline
from broker.plugin_host.pipeline import Pipeline
from tests.wsclient import WsClient

if TYPE_CHECKING:
    from tests.redis_server import RedisServer

StartBroker = Callable[..., Awaitable[Broker]]
Connect = Callable[..., Awaitable[WsClient]]

ROOT = Path(__file__).parent.parent
# Set by .ci/run: tests needing a real service (Chromium, ...) fail instead of skipping.
SERVICES_REQUIRED = os.environ.get("TRIO_BROKER_REQUIRE_SERVICES") == "1"


def require_service(name: str, found: bool, install: str) -> None:
    """Skip (or, where services are required, fail) a test whose service is missing."""
    if found:
        return
    message = f"{name} is not installed: {install}"
    if SERVICES_REQUIRED:
        pytest.fail(f"{message} (TRIO_BROKER_REQUIRE_SERVICES=1 makes it mandatory)")
    pytest.skip(message)


def doc_block(path: Path, marker: str, language: str) -> str:
    """The code block of ``language`` that follows ``<!-- marker ... -->`` in ``path``."""
    text = path.read_text()
    found = re.search(rf"<!-- {marker}.*?-->\n```{language}\n(.*?)```", text, re.DOTALL)
    assert found, f"no {language} block marked {marker!r} in {path}"
    return found.group(1)


def make_config(plugins: list[dict[str, Any]] | None = None, **sections: Any) -> Config:
    """A config on 127.0.0.1, a free port, with the given sections' keys overridden
    (an array of tables, such as ``topics``, is given whole)."""
    data: dict[str, Any] = {"server": {"host": "127.0.0.1", "port": 0}}
    for name, values in sections.items():
        if isinstance(values, list):
            data[name] = values
        else:
            data.setdefault(name, {}).update(values)
    if plugins is not None:
        data["plugins"] = plugins
    return config_from_mapping(data, "<test>")


def make_pipeline(config: Config) -> Pipeline:
    return build_pipeline(config, "<test>")


# A valid upgrade request, without the blank line that ends it (add headers, then b"\r\n").
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


async def http_exchange(target: Broker | int, request: bytes) -> bytes:
    """Send raw bytes in place of a handshake (to the broker's port or another port);
    return all the broker answers before it closes."""
    port = target if isinstance(target, int) else target.port
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    response = b""
    async with stream:
        await stream.send_all(request)
        with trio.fail_after(5), contextlib.suppress(trio.BrokenResourceError):
            while chunk := await stream.receive_some(4096):
                response += chunk
    return response


async def upgrade_all_at_once(
    port: int, headers: list[bytes], *, timeout: float = 60
) -> collections.Counter[int]:
    """Open one socket per entry of ``headers`` (extra header lines) at once, send each an
    upgrade request, hold every socket open until all were answered; count the statuses."""
    statuses: collections.Counter[int] = collections.Counter()
    answered = trio.Event()
    pending = len(headers)

    async def upgrade(extra: bytes) -> None:
        nonlocal pending
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(UPGRADE + extra + b"\r\n")
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = await stream.receive_some(4096)
                assert chunk, f"closed after {response!r}"
                response += chunk
            statuses[int(response.split(b" ", 2)[1])] += 1
            pending -= 1
            if not pending:
                answered.set()
            await answered.wait()

    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:
            for extra in headers:
                nursery.start_soon(upgrade, extra)
    return statuses


def url(broker: Broker, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{broker.port}{path}"


@pytest.fixture
async def start_broker(nursery: trio.Nursery) -> StartBroker:
    """Start an in-process broker; it is cancelled with the test's nursery."""

    async def start(
        plugins: list[dict[str, Any]] | None = None, **sections: dict[str, Any]
    ) -> Broker:
        config = make_config(plugins, **sections)
        broker = Broker(config, make_pipeline(config))
        await nursery.start(broker.serve)
        return broker

    return start


@pytest.fixture
async def broker(start_broker: StartBroker) -> Broker:
    return await start_broker()


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open clients that are closed at the end of the test; `welcome=True` reads the welcome."""
    clients: list[WsClient] = []

    async def open_client(
        target: Broker | str,
        *,
        welcome: bool = True,
        headers: dict[str, str] | None = None,
        receive_buffer: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        compression: bool = False,
        subprotocols: list[str] | None = None,
    ) -> WsClient:
        address = target if isinstance(target, str) else url(target)
        client = await WsClient.connect(
            address,
            headers=headers,
            receive_buffer=receive_buffer,
            ssl_context=ssl_context,
            compression=compression,
            subprotocols=subprotocols,
        )
        clients.append(client)
        if welcome:
            msgpack = client.protocol.subprotocol == "trio-broker.msgpack"
            hello = await (client.recv_msgpack() if msgpack else client.recv())
            assert hello["op"] == "welcome"
        return client

    yield open_client
    for client in clients:
        await trio.aclose_forcefully(client.stream)


@pytest.fixture
async def opened() -> AsyncIterator[list[WsClient]]:
    """Clients to close at the end of the test."""
    clients: list[WsClient] = []
    yield clients
    for client in clients:
        await trio.aclose_forcefully(client.stream)


async def open_clients(url: str, count: int, clients: list[WsClient]) -> list[WsClient]:
    """Open ``count`` clients (a multiple of 20) 20 at a time; each has had its welcome."""

    async def open_some(n: int) -> None:
        for _ in range(n):
            client = await WsClient.connect(url, timeout=30)
            assert (await client.recv())["op"] == "welcome"
            clients.append(client)

    before = len(clients)
    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(open_some, count // 20)
    return clients[before:]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator["RedisServer"]:
    """A redis-server of the test's own. A plain (not async) fixture: where there is no
    redis-server the test skips with its reason before Trio runs it."""
    from tests.redis_server import redis_server

    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


StartNode = Callable[..., Awaitable[Broker]]


@pytest.fixture
def start_node(start_broker: StartBroker, redis: "RedisServer") -> StartNode:
    """Start an in-process broker node of a cluster on the test's Redis."""

    async def start(plugins: list[dict[str, Any]] | None = None, **sections: Any) -> Broker:
        cluster = {"engine": "redis", "redis_url": redis.url, **sections.pop("cluster", {})}
        return await start_broker(plugins, cluster=cluster, **sections)

    return start


def with_engine(request: pytest.FixtureRequest, start_broker: StartBroker) -> StartBroker:
    """``start_broker`` on the engine named by ``request.param``: "memory", or "redis" (a
    node of its own on the test's redis-server). For tests that must hold for both."""
    if request.param == "memory":
        return start_broker
    redis = request.getfixturevalue("redis")

    async def start(plugins: list[dict[str, Any]] | None = None, **sections: Any) -> Broker:
        cluster = {"engine": "redis", "redis_url": redis.url, **sections.pop("cluster", {})}
        return await start_broker(plugins, cluster=cluster, **sections)

    return start


@pytest.fixture(params=["memory", "redis"])
def either_engine(request: pytest.FixtureRequest, start_broker: StartBroker) -> StartBroker:
    """`start_broker` once on each engine, for the tests of a module that must hold for
    both (where not all of its tests must: else override `start_broker` as test_recovery
    does)."""
    return with_engine(request, start_broker)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the redis engine (a redis-server of their own) are slow too."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_redis = callspec is not None and "redis" in callspec.params.values()
        if on_redis or {"redis", "start_node"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

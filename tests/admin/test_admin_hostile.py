"""What HTTP clients of the admin listener cannot do: oversize, stall, flood, garble."""

import ssl
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from tests.admin.test_admin import ADMIN, AUTH, KEY, admin_url
from tests.conftest import StartBroker, http_exchange, make_config
from tests.connections.test_tls import issue

TIGHT = {**ADMIN, "max_request_size": 1024, "request_timeout": 0.5, "idle_timeout": 0.3}
PUBLISH = (
    b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n"
)


async def start(start_broker: StartBroker, **admin: object) -> int:
    broker = await start_broker(admin={**TIGHT, **admin})
    return broker.admin_port


async def test_a_body_over_the_limit_is_refused_before_it_is_read(
    start_broker: StartBroker,
) -> None:
    port = await start(start_broker)
    response = await http_exchange(port, PUBLISH + b"Content-Length: 100000000\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 413 ")
    assert b"larger than 1024 bytes" in response


async def test_a_chunked_body_over_the_limit_is_cut_off(start_broker: StartBroker) -> None:
    port = await start(start_broker)
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    request = PUBLISH + b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 2 + b"0\r\n\r\n"
    assert (await http_exchange(port, request)).startswith(b"HTTP/1.1 413 ")


async def test_oversized_headers_get_431(start_broker: StartBroker) -> None:
    port = await start(start_broker)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"j" * 10_000 + b"\r\n\r\n"
    assert (await http_exchange(port, request)).startswith(b"HTTP/1.1 431 ")


async def test_a_slow_body_gets_408(start_broker: StartBroker) -> None:
    port = await start(start_broker)
    started = trio.current_time()
    response = await http_exchange(port, PUBLISH + b"Content-Length: 100\r\n\r\n" + b"{" * 10)
    assert response.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert 0.4 <= trio.current_time() - started < 3


@pytest.mark.parametrize(
    "garbage",
    [b"HELLO\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET / HTTP/9\r\n\r\n"],
)
async def test_garbage_gets_400(start_broker: StartBroker, garbage: bytes) -> None:
    port = await start(start_broker)
    assert (await http_exchange(port, garbage)).startswith(b"HTTP/1.1 400 ")


async def test_an_idle_connection_is_closed(start_broker: StartBroker) -> None:
    port = await start(start_broker)
    started = trio.current_time()
    assert await http_exchange(port, b"") == b""
    assert 0.25 <= trio.current_time() - started < 3


async def test_keep_alive_serves_pipelined_requests_on_one_connection(
    start_broker: StartBroker,
) -> None:
    port = await start(start_broker)
    health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = await http_exchange(port, health * 3 + last)
    assert response.count(b"HTTP/1.1 200 OK\r\n") == 4
    assert response.endswith(b'{"status":"ready"}\n')


async def test_a_client_waiting_for_100_continue_gets_it(start_broker: StartBroker) -> None:
    port = await start(start_broker)
    body = b'{"topic":"t","data":1}'
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = PUBLISH + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        await stream.send_all(head)
        with trio.fail_after(5):
            assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 100 ")
            await stream.send_all(body)
            assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 200 OK\r\n")


async def test_per_address_and_total_connection_limits(start_broker: StartBroker) -> None:
    broker = await start_broker(
        admin={**TIGHT, "idle_timeout": 30, "max_connections": 2},
        limits={"max_connections_per_ip": 1},
    )
    held = await trio.open_tcp_stream("127.0.0.1", broker.admin_port)
    await trio.testing.wait_all_tasks_blocked()  # the broker counted it
    response = await http_exchange(broker.admin_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 429 ")
    await held.aclose()
    broker.reconfigure(make_config(admin={**TIGHT, "idle_timeout": 30, "max_connections": 2}))
    first = await trio.open_tcp_stream("127.0.0.1", broker.admin_port)
    second = await trio.open_tcp_stream("127.0.0.1", broker.admin_port)
    await trio.testing.wait_all_tasks_blocked()
    response = await http_exchange(broker.admin_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 503 ")
    for stream in (first, second):
        await stream.aclose()


async def test_https_on_the_admin_listener(start_broker: StartBroker, tmp_path: Path) -> None:
    ca = trustme.CA()
    broker = await start_broker(admin={**ADMIN, "tls": issue(ca, tmp_path / "admin")})
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with httpx.AsyncClient(verify=context) as client:
        address = admin_url(broker, "/api/stats").replace("http://", "https://")
        response = await client.get(address, headers=AUTH)
    assert response.status_code == 200

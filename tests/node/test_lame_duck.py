"""Lame duck (SIGUSR2) on the daemon: stop accepting, close clients spread out, exit 0."""

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import open_clients
from tests.daemon_process import Daemon, serving
from tests.wsclient import WsClient

pytestmark = pytest.mark.slow  # lame duck spread over seconds

CLIENTS = 500
DURATION = 4.0
CONFIG = f"""
[server]
host = "127.0.0.1"
port = 0
lame_duck_duration = {DURATION}
shutdown_timeout = 5.0

[admin]
enabled = true
port = 0
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    with serving(config, admin=True) as daemon:
        yield daemon


async def _readiness(daemon: Daemon) -> tuple[int, dict[str, str]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{daemon.admin_port}/readyz")
    return response.status_code, response.json()


async def _lame_duck(daemon: Daemon) -> None:
    """SIGUSR2, and wait until the broker started the drain."""
    daemon.send_signal(signal.SIGUSR2)
    await trio.to_thread.run_sync(daemon.wait_for, "lame duck: closing")


async def test_lame_duck_closes_every_client_spread_over_the_duration(
    daemon: Daemon, opened: list[WsClient]
) -> None:
    clients = await open_clients(daemon.url, CLIENTS, opened)
    assert await _readiness(daemon) == (200, {"status": "ready"})
    closed_after: list[float] = []
    codes: set[tuple[int | None, str | None]] = set()

    async def watch(client: WsClient) -> None:
        codes.add(await client.wait_closed(timeout=DURATION + 10))
        closed_after.append(trio.current_time() - started)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(watch, client)
        await _lame_duck(daemon)
        # At once, not after the drain; and no new clients: the listener is closed.
        assert await _readiness(daemon) == (503, {"status": "unavailable", "reason": "lame duck"})
        with pytest.raises(OSError):
            await WsClient.connect(daemon.url)
    assert codes == {(1001, "lame duck")}
    assert len(closed_after) == CLIENTS
    assert max(closed_after) < DURATION + 1
    # Spread out: a quarter of the clients per second, not all at first.
    assert sum(t < 1.0 for t in closed_after) < CLIENTS * 0.4
    assert sum(t > DURATION / 2 for t in closed_after) > CLIENTS * 0.3
    assert await trio.to_thread.run_sync(daemon.wait_exit) == 0
    assert not [line for line in daemon.log if "ERROR" in line or "Traceback" in line]


async def test_sigterm_during_lame_duck_stops_at_once(
    daemon: Daemon, opened: list[WsClient]
) -> None:
    clients = await open_clients(daemon.url, CLIENTS, opened)
    await _lame_duck(daemon)
    started = trio.current_time()
    daemon.send_signal(signal.SIGTERM)
    reasons = {(await client.wait_closed(timeout=10))[1] for client in clients}
    assert reasons <= {"lame duck", "server shutdown"}
    assert "server shutdown" in reasons
    assert await trio.to_thread.run_sync(daemon.wait_exit) == 0
    assert trio.current_time() - started < DURATION / 2

"""broker.node.accepting: the WebSocket listeners' accept loop, on real sockets."""

import json
import socket
from pathlib import Path

import trio
import trio.testing
from websockets.sync.client import connect

from broker.node import accepting
from tests.daemon_process import TIMEOUT, Daemon

# Few enough that a test's connections use them up; enough for the daemon to start.
FILE_LIMIT = 64
CONFIG = """
[server]
host = "127.0.0.1"
port = 0
[limits]
max_connections_per_ip = 0
handshake_rate_per_ip = 0
"""


async def test_every_waiting_connection_is_handled_beyond_one_batch() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    count = accepting.ACCEPT_BATCH * 3 + 1
    handled: list[bytes] = []
    all_handled = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        handled.append(await stream.receive_some(10))
        await stream.aclose()
        if len(handled) == count:
            all_handled.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as handlers:
            handlers.start_soon(accepting.accept_connections, listeners, handler, handlers)
            # All connected (in the backlog) before the loop takes any.
            clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(count)]
            for n, client in enumerate(clients):
                await client.send_all(b"%d" % n)
            await all_handled.wait()
            handlers.cancel_scope.cancel()
    assert sorted(handled) == sorted(b"%d" % n for n in range(count))
    for client in clients:
        await client.aclose()


async def test_cancelled_it_closes_its_listeners() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def handler(stream: trio.SocketStream) -> None:
        await stream.aclose()

    scope = trio.CancelScope()
    with trio.fail_after(5):
        async with trio.open_nursery() as handlers:
            handlers.start_soon(_serve_until, scope, listeners, handler, handlers)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    assert listeners[0].socket.fileno() == -1
    try:
        await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        pass
    else:
        raise AssertionError("the port still takes connections")


async def _serve_until(
    scope: trio.CancelScope,
    listeners: list[trio.SocketListener],
    handler: accepting.Handler,
    handlers: trio.Nursery,
) -> None:
    with scope:
        await accepting.accept_connections(listeners, handler, handlers)


def test_out_of_file_descriptors_it_says_so_and_serves_again(tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text(CONFIG)
    daemon = Daemon(config, max_open_files=FILE_LIMIT)
    try:
        port = daemon.wait_listening()
        # More connections than it has descriptors for: the rest wait in the backlog.
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(FILE_LIMIT)]
        daemon.wait_for(r"accept failed: EMFILE \(Too many open files\); trying again")
        for client in clients:
            client.close()
        with connect(daemon.url, open_timeout=TIMEOUT) as websocket:
            assert json.loads(websocket.recv(TIMEOUT))["op"] == "welcome"
    finally:
        daemon.kill()

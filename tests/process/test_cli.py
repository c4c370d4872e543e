"""The daemon as users run it: the CLI, signals, reloads and systemd notifications."""

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from broker import __version__
from broker.speedups import ENVIRONMENT
from broker.wire.deflate import isal_library
from tests.conftest import ROOT, require_service
from tests.daemon_process import TIMEOUT, Daemon, run_cli

pytestmark = pytest.mark.slow  # subprocesses: the daemon

SAMPLE = ROOT / "etc" / "trio-broker.toml"
BASE = '[server]\nhost = "127.0.0.1"\nport = 0\n'


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def start(daemons: list[Daemon], config: Path, env: dict[str, str] | None = None) -> Daemon:
    daemon = Daemon(config, env)
    daemons.append(daemon)
    daemon.wait_listening()
    return daemon


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def clients() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


def client(daemon: Daemon, clients: contextlib.ExitStack) -> ClientConnection:
    ws = clients.enter_context(connect(daemon.url, open_timeout=TIMEOUT))
    assert json.loads(ws.recv(timeout=TIMEOUT))["op"] == "welcome"
    return ws


def request(ws: ClientConnection, obj: dict[str, object]) -> dict[str, object]:
    ws.send(json.dumps(obj))
    reply: dict[str, object] = json.loads(ws.recv(timeout=TIMEOUT))
    return reply


# --- Commands --------------------------------------------------------------------------------


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"trio-broker {__version__}"


def test_check_config_accepts_the_sample() -> None:
    result = run_cli("check-config", "--config", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_warns_of_valid_but_unlikely_settings(tmp_path: Path) -> None:
    public = SAMPLE.read_text().replace('host = "127.0.0.1"', 'host = "0.0.0.0"')
    path = write(tmp_path / "public.toml", public)
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0
    assert f"{path}: warning: server.allowed_origins admits pages of developers'" in result.stderr


def test_check_config_lists_every_error(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", '[limits]\nmax_connections = "many"\nbogus = 1\n')
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 1
    assert f"{path}: limits.max_connections: must be an integer" in result.stderr
    assert f"{path}: limits.bogus: unknown key" in result.stderr


def test_check_config_reports_syntax_errors_with_position(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "[server\n")
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 1
    assert "line 1, column" in result.stderr


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "[server]\nport = 99999\n")
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 78
    assert "server.port: must be at most 65535" in result.stderr


def test_serve_reports_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(tmp_path / "c.toml", f'[server]\nhost = "127.0.0.1"\nport = {port}\n')
        result = run_cli("serve", "--config", str(path))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use (another" in result.stderr


# --- Serving and signals ---------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_closes_clients_with_1001_and_exits_0(
    tmp_path: Path, daemons: list[Daemon], clients: contextlib.ExitStack, signum: signal.Signals
) -> None:
    daemon = start(daemons, write(tmp_path / "c.toml", BASE + "shutdown_timeout = 5\n"))
    subscriber = client(daemon, clients)
    publisher = client(daemon, clients)
    assert request(subscriber, {"op": "subscribe", "topic": "t", "id": 1})["op"] == "ack"
    assert request(publisher, {"op": "publish", "topic": "t", "data": "hi", "id": 2})["op"] == "ack"
    assert json.loads(subscriber.recv(timeout=TIMEOUT))["data"] == "hi"
    started = time.monotonic()
    daemon.send_signal(signum)
    for ws in (subscriber, publisher):
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=TIMEOUT)
        assert caught.value.rcvd is not None
        assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (1001, "server shutdown")
    assert daemon.wait_exit() == 0
    assert time.monotonic() - started < 5
    assert any(f"{signum.name} received" in line for line in daemon.log)


def test_sighup_applies_new_limits_to_new_connections(
    tmp_path: Path, daemons: list[Daemon], clients: contextlib.ExitStack
) -> None:
    path = write(tmp_path / "c.toml", BASE)
    daemon = start(daemons, path)
    old = client(daemon, clients)
    write(path, BASE.replace("port = 0", "port = 1") + "[limits]\nmax_subscriptions = 1\n")
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("server.port changed; it takes effect after a restart")
    daemon.wait_for("configuration reloaded")
    new = client(daemon, clients)  # still on the old port
    assert request(new, {"op": "subscribe", "topic": "a", "id": 1})["op"] == "ack"
    assert request(new, {"op": "subscribe", "topic": "b", "id": 2})["code"] == "limit_exceeded"
    for n in range(3):
        assert request(old, {"op": "subscribe", "topic": f"t/{n}", "id": n})["op"] == "ack"
    for ws in (old, new):
        ws.close()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0


def test_sighup_with_a_broken_file_keeps_the_running_config(
    tmp_path: Path, daemons: list[Daemon], clients: contextlib.ExitStack
) -> None:
    path = write(tmp_path / "c.toml", BASE + "[limits]\nmax_subscriptions = 1\n")
    daemon = start(daemons, path)
    write(path, BASE + "[limits]\nmax_subscriptions = 'lots'\n")
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("reload failed, keeping the running configuration")
    daemon.wait_for("limits.max_subscriptions: must be an integer")
    ws = client(daemon, clients)
    assert request(ws, {"op": "subscribe", "topic": "a", "id": 1})["op"] == "ack"
    assert request(ws, {"op": "subscribe", "topic": "b", "id": 2})["code"] == "limit_exceeded"
    ws.close()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0


def test_check_config_validates_plugins(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", '[[plugins]]\nuse = "acl"\nrules = [{ publish = "a" }]\n')
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 1
    expected = (
        f"{path}: plugins[0] (acl): must be a list, got a string @ plugins[0].rules[0].publish"
    )
    assert expected in result.stderr


def test_sighup_swaps_plugins(
    tmp_path: Path, daemons: list[Daemon], clients: contextlib.ExitStack
) -> None:
    deny_all = BASE + '[[plugins]]\nuse = "acl"\ndefault = "deny"\n'
    path = write(tmp_path / "c.toml", deny_all)
    root = str(ROOT)
    daemon = start(daemons, path, {"PYTHONPATH": root})
    ws = client(daemon, clients)
    assert request(ws, {"op": "subscribe", "topic": "t", "id": 1})["code"] == "forbidden"
    # A broken pipeline keeps the running one.
    write(path, BASE + '[[plugins]]\nuse = "acl"\ndefault = "maybe"\n')
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("reload failed, keeping the running configuration")
    assert request(ws, {"op": "subscribe", "topic": "t", "id": 2})["code"] == "forbidden"
    # A third-party plugin by dotted path replaces the acl, for the open connection too.
    write(path, BASE + '[[plugins]]\nuse = "tests.example_plugins:StampSender"\n')
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("configuration reloaded")
    assert request(ws, {"op": "subscribe", "topic": "t", "id": 3}) == {"op": "ack", "id": 3}
    ws.send(json.dumps({"op": "publish", "topic": "t", "data": 1}))
    assert json.loads(ws.recv(timeout=TIMEOUT)) == {
        "op": "message",
        "topic": "t",
        "data": 1,
        "from": None,
    }
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0


# --- systemd ---------------------------------------------------------------------------------


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    else:
        name = f"trio-broker-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + name)
        address = "@" + name
    sock.settimeout(TIMEOUT)
    with sock:
        yield sock, address


def _next_notification(sock: socket.socket) -> dict[str, str]:
    """The next message other than a watchdog ping."""
    while True:
        message = sock.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in message.splitlines())
        if fields != {"WATCHDOG": "1"}:
            return fields


def test_sd_notify_lifecycle(
    tmp_path: Path, daemons: list[Daemon], notify_socket: tuple[socket.socket, str]
) -> None:
    sock, address = notify_socket
    path = write(tmp_path / "c.toml", BASE)
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
    daemon = start(daemons, path, env)
    ready = _next_notification(sock)
    assert ready["READY"] == "1"
    assert ready["STATUS"] == f"listening on 127.0.0.1:{daemon.port}"
    # WATCHDOG_USEC asks for pings at half that interval.
    assert sock.recv(4096) == b"WATCHDOG=1"
    daemon.send_signal(signal.SIGHUP)
    reloading = _next_notification(sock)
    assert reloading["RELOADING"] == "1"
    assert abs(int(reloading["MONOTONIC_USEC"]) - time.monotonic_ns() // 1000) < 60_000_000
    assert _next_notification(sock)["READY"] == "1"
    daemon.send_signal(signal.SIGTERM)
    assert _next_notification(sock) == {"STOPPING": "1"}
    assert daemon.wait_exit() == 0


def test_watchdog_is_off_for_another_pid(
    tmp_path: Path, daemons: list[Daemon], notify_socket: tuple[socket.socket, str]
) -> None:
    sock, address = notify_socket
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    daemon = start(daemons, write(tmp_path / "c.toml", BASE), env)
    assert sock.recv(4096).startswith(b"READY=1")
    daemon.send_signal(signal.SIGTERM)
    assert sock.recv(4096) == b"STOPPING=1"
    assert daemon.wait_exit() == 0


# --- Logging ---------------------------------------------------------------------------------


def test_text_logs_have_timestamps_except_under_journald(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    path = write(tmp_path / "c.toml", BASE)
    plain = start(daemons, path)
    journal = start(daemons, path, {"JOURNAL_STREAM": "8:1234"})
    for daemon in (plain, journal):
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
    assert plain.log[0][:2] == "20"  # an ISO date
    assert journal.log[0].startswith("INFO broker.daemon: listening on")


def test_json_logs(tmp_path: Path, daemons: list[Daemon]) -> None:
    daemon = start(daemons, write(tmp_path / "c.toml", BASE + '[log]\nformat = "json"\n'))
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    entries = [json.loads(line) for line in daemon.log]
    assert entries[0]["level"] == "info"
    assert entries[0]["logger"] == "broker.daemon"
    assert entries[0]["message"].startswith("listening on 127.0.0.1:")
    assert "time" in entries[0]


def test_the_log_says_what_compresses(tmp_path: Path, daemons: list[Daemon]) -> None:
    require_service("isal", isal_library() is not None, "pip install isal (make test does)")
    path = write(tmp_path / "c.toml", BASE + "compression = true\n")
    fast = start(daemons, path, {ENVIRONMENT: "0"})
    fast.wait_for(r"permessage-deflate with ISA-L \(isal [0-9.]+\)")
    plain = start(daemons, path, {ENVIRONMENT: "1"})
    plain.wait_for(r"permessage-deflate with zlib [0-9.]+")
    off = start(daemons, write(tmp_path / "off.toml", BASE))
    off.send_signal(signal.SIGTERM)
    assert off.wait_exit() == 0
    assert not any("deflate" in line for line in off.log)

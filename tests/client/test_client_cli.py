"""`trio-broker sub` and `pub` as a person runs them: subprocesses against the daemon."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from broker.client import connect
from tests.daemon_process import Daemon, cli, serving
from tests.tcp_proxy import CuttableProxy

pytestmark = pytest.mark.slow  # subprocesses: the daemon and the CLI

CONFIG = """
[server]
port = 0
[[topics]]
filter = "chat/#"
history_size = 10000
[[plugins]]
use = "token_auth"
required = false
tokens = [{ token = "secret-token-of-bob", user = "bob" }]
[[plugins]]
use = "acl"
rules = [{ user = "bob", publish = ["chat/#"], subscribe = ["#"] }, { subscribe = ["chat/#"] }]
"""
TIMEOUT = 30


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    config = tmp_path / "broker.toml"
    config.write_text(CONFIG)
    with serving(config) as running:
        yield running


def env(daemon: Daemon, **extra: str) -> dict[str, str]:
    return {**os.environ, "TRIO_BROKER_URL": daemon.url, **extra}


def run(
    args: list[str], environment: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=TIMEOUT,
    )


# As from a terminal, where Ctrl-C reaches the command: SIGINT's default action, even
# where the tests run with SIGINT ignored (a background job of a script inherits that, and
# Python then never raises KeyboardInterrupt). The exec keeps it for the command.
AS_FROM_A_TERMINAL = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


@contextmanager
def subscriber(args: list[str], environment: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A `trio-broker sub` running for the block, killed after."""
    with subprocess.Popen(
        [*AS_FROM_A_TERMINAL, *cli(), "sub", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=environment,
    ) as process:
        try:
            yield process
        finally:
            process.kill()


def lines(process: subprocess.Popen[str], count: int) -> list[dict[str, object]]:
    assert process.stdout is not None and process.stderr is not None
    got = []
    for _ in range(count):
        line = process.stdout.readline()
        assert line, f"sub exited {process.wait()}: {process.stderr.read()}"
        got.append(json.loads(line))
    return got


BOB = {"TRIO_BROKER_TOKEN": "secret-token-of-bob"}


def position_now(daemon: Daemon) -> str:
    """Where the stream is: a `sub --since` from here replays all that follows, however
    long the subprocess takes to start (no race with the publishes)."""

    async def ask() -> str:
        async with connect(daemon.url) as client:
            position = (await client.subscribe("chat/#")).pos
        assert position is not None
        return position

    return asyncio.run(ask())


def test_sub_prints_what_pub_publishes_as_json_lines(daemon: Daemon) -> None:
    since = position_now(daemon)
    for data in ("ready?", '{"text": "hi"}', "42"):
        result = run(["pub", "chat/room", data], env(daemon, **BOB))
        assert (result.returncode, result.stderr) == (0, "")
    with subscriber(["--count", "3", "--since", since, "chat/#"], env(daemon)) as sub:
        got = lines(sub, 3)
        assert got[0] == {"topic": "chat/room", "data": "ready?", "pos": got[0]["pos"]}
        assert [m["data"] for m in got[1:]] == [{"text": "hi"}, 42]
        assert sub.wait(TIMEOUT) == 0  # --count 3 reached


def test_sub_prints_binary_data_as_data_b64(daemon: Daemon) -> None:
    since = position_now(daemon)

    async def publish() -> None:
        async with connect(daemon.url, token=BOB["TRIO_BROKER_TOKEN"]) as client:
            await client.publish("chat/bin", b"\x00\xff")

    asyncio.run(publish())
    with subscriber(["--count", "1", "--since", since, "chat/#"], env(daemon)) as sub:
        (got,) = lines(sub, 1)
        assert (got["data_b64"], "data" in got) == ("AP8=", False)
        assert sub.wait(TIMEOUT) == 0


def test_pub_reads_stdin_fast_with_pipelined_acks(daemon: Daemon) -> None:
    count = 5000
    since = position_now(daemon)
    # Numbers, an empty line (skipped), a bare word (sent as a string).
    stdin = "".join(f"{n}\n" for n in range(1, count)) + "\nnot json\n"
    result = run(["pub", "chat/lines"], env(daemon, **BOB), stdin)
    assert (result.returncode, result.stderr) == (0, "")
    with subscriber(["--count", str(count), "--since", since, "chat/lines"], env(daemon)) as sub:
        got = [m["data"] for m in lines(sub, count)]
        assert got == [*range(1, count), "not json"]
        assert sub.wait(TIMEOUT) == 0


def test_errors_say_why_and_exit_1(daemon: Daemon) -> None:
    refused = run(["pub", "chat/x", "1"], env(daemon))  # anonymous may not publish
    assert refused.returncode == 1
    assert refused.stderr.startswith("trio-broker pub: forbidden: ")
    reserved = run(["pub", "$x", "1"], env(daemon, **BOB))
    assert reserved.returncode == 1 and "forbidden" in reserved.stderr
    bad_token = run(["sub", "--count", "1", "chat/#"], env(daemon, TRIO_BROKER_TOKEN="wrong" * 4))
    assert bad_token.returncode == 1 and "401" in bad_token.stderr
    not_allowed = run(["sub", "--count", "1", "other/#"], env(daemon))
    assert not_allowed.returncode == 1 and "forbidden" in not_allowed.stderr
    nobody = run(["sub", "--url", "ws://127.0.0.1:1/ws", "x"], env(daemon))
    assert nobody.returncode == 1 and nobody.stderr.startswith(
        "trio-broker sub: ws://127.0.0.1:1/ws: "
    )
    for result in (refused, reserved, bad_token, not_allowed, nobody):
        assert "Traceback" not in result.stderr


def test_ctrl_c_exits_130_without_a_traceback(daemon: Daemon) -> None:
    since = position_now(daemon)
    assert run(["pub", "chat/a", "x"], env(daemon, **BOB)).returncode == 0
    with subscriber(["--since", since, "chat/#"], env(daemon)) as sub:
        assert lines(sub, 1)[0]["data"] == "x"  # running, and subscribed
        sub.send_signal(signal.SIGINT)
        assert sub.wait(TIMEOUT) == 130
        assert sub.stderr is not None and sub.stderr.read() == ""


def test_help_documents_each_command() -> None:
    for command in ("sub", "pub"):
        result = subprocess.run([*cli(), command, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "--url" in result.stdout and "--token" in result.stdout
        assert "TRIO_BROKER_URL" in result.stdout


async def test_sub_reconnects_and_recovers_what_it_missed(daemon: Daemon) -> None:
    def publish(data: str) -> None:
        assert run(["pub", "chat/a", data], env(daemon, **BOB)).returncode == 0

    since = await trio.to_thread.run_sync(position_now, daemon)
    await trio.to_thread.run_sync(publish, "before")
    async with CuttableProxy(daemon.port) as proxy:
        arguments = ["--count", "4", "--since", since, "chat/#"]
        with subscriber(arguments, env(daemon, TRIO_BROKER_URL=proxy.url)) as sub:
            (first,) = await trio.to_thread.run_sync(lines, sub, 1)
            assert first["data"] == "before"
            proxy.cut()
            for data in ("missed 1", "missed 2", "missed 3"):
                await trio.to_thread.run_sync(publish, data)
            got = await trio.to_thread.run_sync(lines, sub, 3)
            assert [m["data"] for m in got] == ["missed 1", "missed 2", "missed 3"]
            assert await trio.to_thread.run_sync(sub.wait, TIMEOUT) == 0


async def test_sub_without_reconnect_says_in_one_line_that_the_connection_was_lost(
    daemon: Daemon,
) -> None:
    def publish(data: str) -> None:
        assert run(["pub", "chat/a", data], env(daemon, **BOB)).returncode == 0

    since = await trio.to_thread.run_sync(position_now, daemon)
    await trio.to_thread.run_sync(publish, "before")
    async with CuttableProxy(daemon.port) as proxy:
        arguments = ["--no-reconnect", "--since", since, "chat/#"]
        with subscriber(arguments, env(daemon, TRIO_BROKER_URL=proxy.url)) as sub:
            (first,) = await trio.to_thread.run_sync(lines, sub, 1)
            assert first["data"] == "before"
            proxy.cut()
            assert await trio.to_thread.run_sync(sub.wait, TIMEOUT) == 1
            assert sub.stderr is not None
            stderr = sub.stderr.read()
    assert stderr == f"trio-broker sub: {proxy.url}: the connection was lost\n", stderr


async def test_sub_stops_with_the_reason_when_the_backend_says_not_to_come_back(
    tmp_path: Path,
) -> None:
    import httpx

    key = "admin-key-for-the-cli-test"
    config = tmp_path / "broker.toml"
    config.write_text(
        CONFIG + f'[admin]\nenabled = true\nport = 0\napi_keys = [{{ key = "{key}", '
        'user = "backend", roles = ["admin"] }]\n'
    )
    with serving(config) as daemon:
        admin = f"http://127.0.0.1:{daemon.wait_admin_listening()}"
        since = await trio.to_thread.run_sync(position_now, daemon)
        published = run(["pub", "chat/a", "hello"], env(daemon, **BOB))
        assert published.returncode == 0, published.stderr
        with subscriber(["--since", since, "chat/#"], env(daemon, **BOB)) as sub:
            (hello,) = await trio.to_thread.run_sync(lines, sub, 1)  # it is connected
            assert hello["data"] == "hello"
            async with httpx.AsyncClient() as http:
                response = await http.post(
                    f"{admin}/api/disconnect",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"user": "bob", "reason": "banned"},
                )
            assert response.json() == {"disconnected": 1}
            assert await trio.to_thread.run_sync(sub.wait, TIMEOUT) == 1
            assert sub.stderr is not None
            stderr = sub.stderr.read()
    assert stderr.endswith("closed by the server: 4003 banned\n"), stderr

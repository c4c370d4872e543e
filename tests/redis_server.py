"""A private redis-server for the tests: its own unix socket, no persistence, killed after.

Fault tests `kill` it (SIGKILL, as a crash) and `start` it again on the same socket. The
Sentinel tests run servers on TCP ports of their own (`tcp_port`), some of them sentinels
(`redis-server FILE --sentinel`): tests/redis_sentinel.py.
"""

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import require_service

INSTALL = "apt-get install redis-server (Debian)"
START_TIMEOUT = 10.0
READY = b"ready to accept connections"
# Ports below Linux's ephemeral range (32768 and up), where the tests' own listeners
# (port 0) and client sockets never land.
FIXED_PORTS = range(21000, 32000)


class RedisServer:
    def __init__(
        self,
        binary: str,
        directory: Path,
        *,
        port: int | None = None,
        arguments: Sequence[str] = (),
        ready: bytes = READY,
    ) -> None:
        """On a unix socket in ``directory``, or on 127.0.0.1:``port``; ``arguments``
        first (a sentinel's config file and --sentinel), ``ready`` what its log says once
        it serves."""
        self.binary = binary
        self.directory = directory
        self.port = port
        self.arguments = list(arguments)
        self.ready = ready
        self.socket_path = directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self._drainer: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}"
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        assert self.process is None, "already running"
        if self.port is None:
            listen = ["--port", "0", "--unixsocket", str(self.socket_path)]  # no TCP at all
            listen += ["--unixsocketperm", "700"]
        else:
            listen = ["--port", str(self.port), "--bind", "127.0.0.1"]
        self.process = subprocess.Popen(
            [
                self.binary,
                *self.arguments,
                *listen,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "LC_ALL": "C"},
        )
        try:
            self._drainer = _wait_ready(self.process, self.ready)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """Stop it as a crash would: at once, without a word to its clients."""
        process, self.process = self.process, None
        if process is None:
            return
        process.kill()
        process.wait(10)
        if self._drainer is not None:
            self._drainer.join(10)
            self._drainer = None
        elif process.stdout is not None:
            process.stdout.close()


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports of 127.0.0.1 nobody listens on, outside the ephemeral range."""
    ports: list[int] = []
    for port in FIXED_PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"not {count} free ports in {FIXED_PORTS}")


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    require_service("redis-server", binary is not None, INSTALL)
    assert binary is not None
    return binary


def _wait_ready(process: subprocess.Popen[bytes], ready: bytes) -> threading.Thread:
    """Read redis-server's log until it says ``ready``; a thread drains the rest (and
    closes the pipe at the end)."""
    assert process.stdout is not None
    killer = threading.Timer(START_TIMEOUT, process.kill)  # a server that never gets ready
    killer.start()
    try:
        for line in process.stdout:
            if ready in line.lower():
                break
        else:
            raise RuntimeError(f"redis-server did not start (exit {process.wait()})")
    finally:
        killer.cancel()
    stdout = process.stdout

    def drain() -> None:
        with stdout:
            stdout.read()

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    return drainer


@contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """Start redis-server listening on a unix socket in ``directory`` only."""
    binary = redis_binary()
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(binary, directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()

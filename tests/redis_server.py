"""A private redis-server for the tests: its own unix socket, no persistence, killed after."""

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

from tests.conftest import require_service

INSTALL = "apt-get install redis-server (Debian)"
START_TIMEOUT = 10.0


@attrs.frozen
class RedisServer:
    process: subprocess.Popen[bytes]
    socket_path: Path

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"


def _wait_ready(process: subprocess.Popen[bytes]) -> threading.Thread:
    """Read redis-server's log until it says it accepts connections; a thread drains the
    rest (and closes the pipe at the end)."""
    assert process.stdout is not None
    killer = threading.Timer(START_TIMEOUT, process.kill)  # a server that never gets ready
    killer.start()
    try:
        for line in process.stdout:
            if b"ready to accept connections" in line.lower():
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
    binary = shutil.which("redis-server")
    require_service("redis-server", binary is not None, INSTALL)
    assert binary is not None
    path = directory / "redis.sock"
    process = subprocess.Popen(
        [
            binary,
            "--port",
            "0",  # no TCP at all
            "--unixsocket",
            str(path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "LC_ALL": "C"},
    )
    drainer = None
    try:
        drainer = _wait_ready(process)
        yield RedisServer(process, path)
    finally:
        process.kill()
        process.wait(10)
        if drainer is not None:
            drainer.join(10)
        elif process.stdout is not None:
            process.stdout.close()

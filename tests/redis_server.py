"""A private redis-server for the tests: its own unix socket, no persistence, killed after.

Fault tests `kill` it (SIGKILL, as a crash) and `start` it again on the same socket.
"""

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import require_service

INSTALL = "apt-get install redis-server (Debian)"
START_TIMEOUT = 10.0


class RedisServer:
    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.socket_path = directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self._drainer: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                "0",  # no TCP at all
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
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
            self._drainer = _wait_ready(self.process)
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
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(binary, directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()

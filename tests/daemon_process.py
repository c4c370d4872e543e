"""Run `trio-broker serve` as a subprocess and follow its log."""

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TIMEOUT = 15.0


def cli() -> list[str]:
    script = Path(sys.executable).parent / "trio-broker"
    if script.exists():
        return [str(script)]
    found = shutil.which("trio-broker")
    return [found] if found else [sys.executable, "-m", "broker"]


def make_run_config(directory: Path) -> Path:
    """`make run`'s config (etc/trio-broker.toml) as it is, but on free ports."""
    sample = (Path(__file__).parent.parent / "etc" / "trio-broker.toml").read_text()
    config, replaced = re.subn(r"(?m)^port = 808[01]$", "port = 0", sample)
    assert replaced == 2, "etc/trio-broker.toml no longer sets port = 8080 and 8081"
    path = directory / "make-run.toml"
    path.write_text(config)
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli(), *args], capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False
    )


class Daemon:
    """A `trio-broker serve` process; its stderr lines are collected by a thread."""

    def __init__(
        self, config: Path, env: dict[str, str] | None = None, *, max_open_files: int = 0
    ) -> None:
        """``max_open_files``: the process's file descriptor limit (RLIMIT_NOFILE), if not 0."""
        full_env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        full_env.update(env or {})

        command = [*cli(), "serve", "--config", str(config)]
        if max_open_files:
            # Set in a process of its own that then becomes the daemon (preexec_fn is not
            # safe in this test process, which runs threads).
            files = (max_open_files, max_open_files)
            limit = (
                "import os, resource, sys; "
                f"resource.setrlimit(resource.RLIMIT_NOFILE, {files}); "
                "os.execv(sys.argv[1], sys.argv[1:])"
            )
            command = [sys.executable, "-c", limit, *command]
        self.process = subprocess.Popen(
            command,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            env=full_env,
        )
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0
        self.admin_port = 0

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """The first new log line matching ``pattern``."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no log line matching {pattern!r}; log: {self.log}") from None
            if line is None:
                raise AssertionError(f"daemon exited before logging {pattern!r}; log: {self.log}")
            self.log.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def wait_listening(self) -> int:
        self.port = int(self.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        return self.port

    def wait_admin_listening(self) -> int:
        """Call after `wait_listening`: the admin listener is logged next."""
        self.admin_port = int(self.wait_for(r"admin listening on 127\.0\.0\.1:(\d+)").group(1))
        return self.admin_port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def send_signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout)
        while (line := self._lines.get_nowait() if not self._lines.empty() else None) is not None:
            self.log.append(line)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        # Its children (workers) may hold the pipe a moment longer: the reader ends at EOF.
        self._reader.join(TIMEOUT)
        if self.process.stderr is not None:
            self.process.stderr.close()


@contextmanager
def serving(config: Path, *, admin: bool = False) -> Iterator[Daemon]:
    """A daemon listening (and its admin listener, with ``admin``), killed at the end."""
    daemon = Daemon(config)
    try:
        daemon.wait_listening()
        if admin:
            daemon.wait_admin_listening()
        yield daemon
    finally:
        daemon.kill()

"""``[server] workers = N``: N worker processes share the WebSocket port, one node.

Each worker is a whole broker (``trio-broker serve`` again, told its role by the
environment) listening with SO_REUSEPORT, and the workers meet through the cluster
engine like nodes do. This process, the supervisor, holds the port, starts the
workers and starts again one that dies (with backoff), passes SIGHUP, SIGTERM,
SIGINT and SIGUSR2 on, tells systemd READY once every worker listens, and serves the
node's admin listener: `/metrics`, `/readyz` and `/api/stats` add up its workers'
numbers (asked over each one's control channel), the HTTP publish API publishes
through its own engine.
"""

import logging
import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import trio

from ..config.schema import Config
from ..core.stats import Snapshot
from ..node.broker import Broker
from ..node.reuse_port import reserve_port
from ..plugin_host.pipeline import Pipeline
from .control import WORKER_ENV, Channel, WorkerRole
from .daemon import log_admin_listening, reload, watchdog
from .sdnotify import Notifier, watchdog_interval

log = logging.getLogger("broker.supervisor")

SNAPSHOT_TIMEOUT = 2.0
START_TIMEOUT = 60.0
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
# Beyond the workers' own shutdown_timeout: then they are killed.
STOP_GRACE = 5.0
# Only the supervisor talks to systemd.
_SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: trio.Process | None = None
        self.channel: Channel | None = None
        self.listening = trio.Event()
        self._lock = trio.Lock()  # one request at a time on the channel

    @property
    def name(self) -> str:
        return f"worker {self.index}"

    async def snapshot(self) -> Snapshot | None:
        channel = self.channel
        if channel is None or not self.listening.is_set():
            return None
        async with self._lock:
            with trio.move_on_after(SNAPSHOT_TIMEOUT):
                try:
                    await channel.send({"snapshot": True})
                    reply = await channel.receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
                    return None
                return None if reply is None else Snapshot.from_json(reply["snapshot"])
        return None

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)


class Supervisor:
    def __init__(self, path: Path, config: Config, pipeline: Pipeline) -> None:
        self.path = path
        self.config = config
        self.broker = Broker(config, pipeline, config_file=str(path), websocket=False)
        self.broker.workers = self
        self.workers = [Worker(index) for index in range(config.server.workers)]
        self._stopping = False
        self._lame_duck = False

    async def node_snapshot(self, own: Snapshot) -> Snapshot:
        total = Snapshot.from_json(own.to_json())  # a copy: ours keeps counting
        total.links = [attrs.evolve(link, name=f"supervisor/{link.name}") for link in total.links]
        if self._lame_duck and total.unready_reason is None:
            total.unready_reason = "lame duck"
        snapshots: dict[int, Snapshot | None] = {}

        async def ask(worker: Worker) -> None:
            snapshots[worker.index] = await worker.snapshot()

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(ask, worker)
        for worker in self.workers:
            snapshot = snapshots[worker.index]
            if snapshot is None:
                if total.unready_reason is None:
                    total.unready_reason = f"{worker.name} is not running"
            else:
                total.add(snapshot, worker.name)
        return total

    async def run(self) -> None:
        server = self.config.server
        reserved = reserve_port(server.host, server.port)
        try:
            await self._serve(reserved[0].getsockname()[1])
        finally:
            for sock in reserved:
                sock.close()
        log.info("stopped")

    async def _serve(self, port: int) -> None:
        self.broker.shared_port = port
        notifier = Notifier.from_environment()
        signums = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)
        with trio.open_signal_receiver(*signums) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.broker.serve)
                for worker in self.workers:
                    nursery.start_soon(self._supervise, worker, port)
                with trio.fail_after(START_TIMEOUT):
                    for worker in self.workers:
                        await worker.listening.wait()
                server = self.config.server
                log.info(
                    "listening on %s:%d, path %s, with %d workers",
                    server.host,
                    port,
                    server.path,
                    len(self.workers),
                )
                log_admin_listening(self.broker)
                notifier.ready(f"listening on port {port} with {len(self.workers)} workers")
                interval = watchdog_interval()
                if interval is not None:
                    nursery.start_soon(watchdog, notifier, interval)
                await self._follow_signals(signals, notifier, nursery)

    async def _follow_signals(
        self, signals: AsyncIterator[int], notifier: Notifier, nursery: trio.Nursery
    ) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                reload(self.path, self.broker, notifier)
                self.config = self.broker.config
                self._tell_workers(signum)
                continue
            if signum == signal.SIGUSR2:
                log.info("SIGUSR2 received: lame duck, passed on to the workers")
                notifier.notify("STOPPING=1", "STATUS=lame duck: closing clients")
                self._lame_duck = self._stopping = True
                self._tell_workers(signum)
                nursery.start_soon(self._stop_when_workers_exit, nursery, math.inf)
                continue
            log.info("%s received, shutting down the workers", signal.Signals(signum).name)
            notifier.stopping()
            self._stopping = True
            self._tell_workers(signal.SIGTERM)
            grace = self.config.server.shutdown_timeout + STOP_GRACE
            nursery.start_soon(self._stop_when_workers_exit, nursery, grace)

    def _tell_workers(self, signum: int) -> None:
        for worker in self.workers:
            worker.signal(signum)

    async def _stop_when_workers_exit(self, nursery: trio.Nursery, grace: float) -> None:
        with trio.move_on_after(grace):
            for worker in self.workers:
                while worker.process is not None and worker.process.returncode is None:
                    await worker.process.wait()
        for worker in self.workers:
            worker.signal(signal.SIGKILL)
        nursery.cancel_scope.cancel()

    async def _supervise(self, worker: Worker, port: int) -> None:
        backoff = FIRST_BACKOFF
        while not self._stopping:
            started = trio.current_time()
            code = await self._run_worker(worker, port)
            if self._stopping:
                return
            if trio.current_time() - started > 2 * MAX_BACKOFF:
                backoff = FIRST_BACKOFF  # it ran a good while: not a crash loop
            log.error(
                "%s exited (%s); starting it again in %g s", worker.name, _exit(code), backoff
            )
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _run_worker(self, worker: Worker, port: int) -> int:
        ours, theirs = socket.socketpair()
        role = WorkerRole(worker.index, port, theirs.fileno())
        env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_ENV}
        env[WORKER_ENV] = role.encode()
        command = [sys.executable, "-m", "broker", "serve", "--config", str(self.path)]
        try:
            process = await trio.lowlevel.open_process(
                command, env=env, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL
            )
        finally:
            theirs.close()
        worker.process = process
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        worker.channel = Channel(stream)
        try:
            await self._wait_listening(worker, process)
            return await process.wait()
        finally:
            worker.channel = None
            worker.listening = trio.Event()
            await trio.aclose_forcefully(stream)
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()

    async def _wait_listening(self, worker: Worker, process: trio.Process) -> None:
        assert worker.channel is not None
        with trio.move_on_after(START_TIMEOUT):
            try:
                hello = await worker.channel.receive()
            except (trio.BrokenResourceError, ValueError):
                hello = None
            if hello is not None and hello.get("listening"):
                worker.listening.set()
                log.info("%s (pid %d) listening", worker.name, process.pid)
                return
        log.error("%s did not start listening; stopping it", worker.name)
        process.kill()


def _exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"

"""`trio-broker serve`: the broker plus signals, reloads and systemd notifications."""

import logging
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from .. import speedups
from ..config.schema import Config, ConfigError, config_warnings, restart_required
from ..node.broker import Broker
from ..node.config_file import load
from ..plugin_host.pipeline import Pipeline
from .control import Channel, WorkerRole
from .logs import configure_logging
from .sdnotify import Notifier, watchdog_interval

log = logging.getLogger("broker.daemon")


def reload(
    path: Path,
    broker: Broker,
    notifier: Notifier,
    adapt: Callable[[Config], Config] = lambda config: config,
) -> None:
    """Read ``path`` again (``adapt`` makes a worker's config of it) and apply it."""
    notifier.reloading()
    try:
        old = broker.config
        try:
            new, pipeline = load(path)
            new = adapt(new)
            broker.reconfigure(new, pipeline)  # changes nothing if it raises
        except ConfigError as error:
            log.error("reload failed, keeping the running configuration:\n%s", error)
            return
        configure_logging(new.log.level, new.log.format)
        for warning in config_warnings(new):
            log.warning("%s: %s", path, warning)
        for key in restart_required(old, new):
            log.warning("%s changed; it takes effect after a restart", key)
        log.info("configuration reloaded from %s", path)
    finally:
        notifier.ready("reloaded")


async def watchdog(notifier: Notifier, interval: float) -> None:
    while True:
        notifier.watchdog()
        await trio.sleep(interval)


async def _serve(
    broker: Broker, nursery: trio.Nursery, *, task_status: trio.TaskStatus[None]
) -> None:
    await broker.serve(task_status=task_status)
    nursery.cancel_scope.cancel()  # the broker is done: so are the watchdog and signal loop


async def run(
    path: Path, config: Config, pipeline: Pipeline, worker: WorkerRole | None = None
) -> None:
    """Serve until SIGTERM or SIGINT; SIGHUP reloads ``path``. A ``worker`` listens on
    its supervisor's port beside the other workers and answers it on its channel."""
    notifier = Notifier.from_environment()
    adapt: Callable[[Config], Config] = lambda config: config  # noqa: E731
    if worker is not None:
        port = worker.port
        adapt = lambda config: worker_config(config, port)  # noqa: E731
    broker = Broker(adapt(config), pipeline, config_file=str(path), reuse_port=worker is not None)
    signums = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)
    with trio.open_signal_receiver(*signums) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(_serve, broker, nursery)
            addresses = ", ".join(f"{host}:{port}" for host, port in broker.addresses)
            log.info("listening on %s, path %s", addresses, config.server.path)
            log.info("speedups: %s", speedups.describe())
            if broker.deflate_library is not None:
                log.info("permessage-deflate with %s", broker.deflate_library)
            log_admin_listening(broker)
            notifier.ready(f"listening on {addresses}")
            if worker is not None:
                nursery.start_soon(_answer_supervisor, worker, broker)
            interval = watchdog_interval()
            if interval is not None:
                nursery.start_soon(watchdog, notifier, interval)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    reload(path, broker, notifier, adapt)
                    continue
                if signum == signal.SIGUSR2:
                    log.info("SIGUSR2 received: lame duck")
                    notifier.notify("STOPPING=1", "STATUS=lame duck: closing clients")
                    broker.enter_lame_duck()
                    continue
                log.info("%s received, shutting down", signal.Signals(signum).name)
                notifier.stopping()
                break
            broker.stop()
    log.info("stopped")


def log_admin_listening(broker: Broker) -> None:
    if broker.admin_listeners:
        admin = ", ".join(f"{h}:{p}" for h, p in broker.admin_addresses)
        log.info("admin listening on %s (/healthz, /readyz, /metrics, /api/)", admin)
        if broker.config.admin.ui:
            host, port = broker.admin_addresses[0]
            host = f"[{host}]" if ":" in host else host
            scheme = "https" if broker.config.admin.tls else "http"
            log.info("demo chat: %s://%s:%d/ui/chat.html (open it in two tabs)", scheme, host, port)
            log.info("dashboard: %s://%s:%d/ui/dashboard.html", scheme, host, port)


def worker_config(config: Config, port: int) -> Config:
    """What a worker runs: the node's config on its supervisor's port, no admin listener
    (the supervisor serves the node's)."""
    return attrs.evolve(
        config,
        server=attrs.evolve(config.server, port=port, workers=1),
        admin=attrs.evolve(config.admin, enabled=False),
    )


async def _answer_supervisor(worker: WorkerRole, broker: Broker) -> None:
    """Say it listens, answer requests; without its supervisor (EOF) a worker stops."""
    sock = socket.socket(fileno=worker.fd)
    async with trio.SocketStream(trio.socket.from_stdlib_socket(sock)) as stream:
        channel = Channel(stream)
        try:
            await channel.send({"listening": True})
            while (request := await channel.receive()) is not None:
                if request.get("snapshot"):
                    await channel.send({"snapshot": broker.snapshot().to_json()})
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as error:
            log.debug("control channel broke: %r", error)
    log.warning("worker %d: the supervisor is gone; stopping", worker.index)
    broker.stop()

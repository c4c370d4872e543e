"""`trio-broker serve`: the broker plus signals, reloads and systemd notifications."""

import logging
import signal
from pathlib import Path

import trio

from .config import Config, ConfigError, config_warnings, restart_required
from .logs import configure_logging
from .pipeline import Pipeline
from .plugin_loader import load
from .sdnotify import Notifier, watchdog_interval
from .server import Broker

log = logging.getLogger("broker.daemon")


def _reload(path: Path, broker: Broker, notifier: Notifier) -> None:
    notifier.reloading()
    try:
        old = broker.config
        try:
            new, pipeline = load(path)
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


async def _watchdog(notifier: Notifier, interval: float) -> None:
    while True:
        notifier.watchdog()
        await trio.sleep(interval)


async def _serve(
    broker: Broker, nursery: trio.Nursery, *, task_status: trio.TaskStatus[None]
) -> None:
    await broker.serve(task_status=task_status)
    nursery.cancel_scope.cancel()  # the broker is done: so are the watchdog and signal loop


async def run(path: Path, config: Config, pipeline: Pipeline) -> None:
    """Serve until SIGTERM or SIGINT; SIGHUP reloads ``path``."""
    notifier = Notifier.from_environment()
    broker = Broker(config, pipeline, config_file=str(path))
    signums = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2)
    with trio.open_signal_receiver(*signums) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(_serve, broker, nursery)
            addresses = ", ".join(f"{host}:{port}" for host, port in broker.addresses)
            log.info("listening on %s, path %s", addresses, config.server.path)
            if broker.admin_listeners:
                admin = ", ".join(f"{h}:{p}" for h, p in broker.admin_addresses)
                log.info("admin listening on %s (/healthz, /readyz, /metrics, /api/)", admin)
            notifier.ready(f"listening on {addresses}")
            interval = watchdog_interval()
            if interval is not None:
                nursery.start_soon(_watchdog, notifier, interval)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    _reload(path, broker, notifier)
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

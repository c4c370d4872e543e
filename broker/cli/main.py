"""The `trio-broker` command line."""

import argparse
import logging
import sys
from pathlib import Path

import trio

from ..config.schema import ConfigError, config_warnings
from ..node.broker import ListenError
from ..node.config_file import load
from ..process import daemon, gc_tuning
from ..process.control import WorkerRole
from ..process.logs import configure_logging
from ..process.supervisor import Supervisor
from ..version import __version__
from . import client_commands as client_cli

DEFAULT_CONFIG = "/etc/trio-broker/trio-broker.toml"
# sysexits.h EX_CONFIG: the unit file tells systemd not to restart on it.
EXIT_CONFIG = 78

log = logging.getLogger("broker.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-broker", description="A pub/sub message broker for WebSocket clients."
    )
    parser.add_argument("--version", action="version", version=f"trio-broker {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in (
        ("serve", "run the broker until SIGTERM or SIGINT; SIGHUP reloads the config"),
        ("check-config", "validate a config file: exit 0 if valid, 1 with the errors"),
    ):
        command = commands.add_parser(name, help=summary, description=summary)
        command.add_argument(
            "--config",
            "-c",
            metavar="FILE",
            default=DEFAULT_CONFIG,
            help=f"the TOML config file (default: {DEFAULT_CONFIG})",
        )
    client_cli.add_commands(commands)
    return parser


def _leaves(group: BaseExceptionGroup[ListenError]) -> list[ListenError]:
    return [
        leaf
        for error in group.exceptions
        for leaf in (_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    ]


def _check_config(path: str) -> int:
    try:
        config, _ = load(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    for warning in config_warnings(config):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    print(f"{path}: OK")
    return 0


def _serve(path: str) -> int:
    try:
        config, pipeline = load(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.log.level, config.log.format)
    for warning in config_warnings(config):
        log.warning("%s: %s", path, warning)
    failed = False
    worker = WorkerRole.from_environment()
    gc_tuning.tune()
    try:
        if worker is None and config.server.workers > 1:
            trio.run(Supervisor(Path(path), config, pipeline).run)
        else:
            trio.run(daemon.run, Path(path), config, pipeline, worker)
    except* ListenError as group:
        for failure in _leaves(group):
            log.error("%s", failure.strerror)
        failed = True
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command in ("sub", "pub"):
        return client_cli.run(args)
    return _serve(args.config)


if __name__ == "__main__":
    sys.exit(main())

"""trio-broker: a pub/sub message broker for WebSocket clients, built on Trio.

The public API for running a broker in-process::

    config = broker.parse_config(text)   # or load_config(path), or Config()
    async with broker.open_broker(config) as running:
        print(running.port)

The names below are loaded when first used, not when the package is: an application that
imports only the client (`broker.client`, on asyncio or Trio) loads neither Trio nor the
server's dependencies (websockets keeps its package lazy for the same reason).

The subpackages, each importing only those listed after it: ``cli``, ``process``,
``node``, ``admin``, ``connections``, ``requests``, ``cluster``, ``engine``,
``plugin_host``, the public plugin API (``broker.plugin``), ``config``, ``handshake``, the
client (``broker.client``), ``core``, ``wire``. docs/design.md.
"""

from typing import TYPE_CHECKING, Any

# First: it decides whether the compiled modules load, before any is imported.
from . import speedups as _speedups  # noqa: F401
from .version import __version__

if TYPE_CHECKING:
    from .config.schema import (
        Config,
        ConfigError,
        LimitsConfig,
        LogConfig,
        ServerConfig,
        load_config,
        parse_config,
    )
    from .node.broker import Broker, open_broker

_WHERE = {
    "Broker": "node.broker",
    "open_broker": "node.broker",
    "Config": "config.schema",
    "ConfigError": "config.schema",
    "LimitsConfig": "config.schema",
    "LogConfig": "config.schema",
    "ServerConfig": "config.schema",
    "load_config": "config.schema",
    "parse_config": "config.schema",
}

__all__ = [
    "Broker",
    "Config",
    "ConfigError",
    "LimitsConfig",
    "LogConfig",
    "ServerConfig",
    "__version__",
    "load_config",
    "open_broker",
    "parse_config",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'broker' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

"""trio-broker: a pub/sub message broker for WebSocket clients, built on Trio.

The public API for running a broker in-process::

    config = broker.parse_config(text)   # or load_config(path), or Config()
    async with broker.open_broker(config) as running:
        print(running.port)
"""

from .config import Config, ConfigError, LimitsConfig, LogConfig, ServerConfig, load_config
from .config import parse_config as parse_config
from .server import Broker, open_broker
from .version import __version__

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

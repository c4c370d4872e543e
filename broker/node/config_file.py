"""A config file as a node needs it: valid, with its plugins, TLS and key files."""

from pathlib import Path

from ..admin.api_keys import load_api_keys
from ..config.schema import Config, load_config
from ..plugin_host.loader import build_pipeline
from ..plugin_host.pipeline import Pipeline
from . import tls
from .webhooks import webhook_secret


def load(path: str | Path) -> tuple[Config, Pipeline]:
    """Read and validate a config file (TLS and key files included), build its pipeline."""
    config = load_config(path)
    pipeline = build_pipeline(config, str(path))
    if config.server.tls is not None:
        tls.server_context(config.server.tls, str(path))
    if config.admin.tls is not None:
        tls.server_context(config.admin.tls, str(path), key="admin.tls")
    load_api_keys(config.admin, str(path))
    webhook_secret(config)
    return config, pipeline

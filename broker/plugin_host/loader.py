"""Turn ``[[plugins]]`` tables into plugin instances, with errors naming plugin and key."""

import importlib
from importlib.metadata import entry_points

from ..config.options import OptionsError, structure_options
from ..config.schema import Config, ConfigError, PluginSpec
from ..plugin import Plugin
from .pipeline import Pipeline

ENTRY_POINT_GROUP = "trio_broker.plugins"

BUILTIN = {
    "acl": "plugins.acl:Acl",
    "content_filter": "plugins.content_filter:ContentFilter",
    "http_hooks": "plugins.http_hooks:HttpHooks",
    "jwt_auth": "plugins.jwt_auth:JwtAuth",
    "rate_limit": "plugins.rate_limit:RateLimit",
    "token_auth": "plugins.token_auth:TokenAuth",
}


class PluginLoadError(Exception):
    pass


def resolve(use: str) -> type[Plugin]:
    """The plugin class named by ``use``: a built-in, an entry point or 'module:Class'."""
    target = BUILTIN.get(use)
    if target is None and ":" not in use:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == use]
        if not found:
            builtins = ", ".join(BUILTIN)
            raise PluginLoadError(
                f"unknown plugin {use!r}: not a built-in ({builtins}), not an entry point of "
                f"{ENTRY_POINT_GROUP!r}, and not 'package.module:Class'"
            )
        loaded = found[0].load()
    else:
        module_name, _, attribute = (target or use).partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginLoadError(f"cannot import {module_name!r}: {exc}") from exc
        loaded = getattr(module, attribute, None)
        if loaded is None:
            raise PluginLoadError(f"module {module_name!r} has no attribute {attribute!r}")
    if not (isinstance(loaded, type) and issubclass(loaded, Plugin)):
        raise PluginLoadError(f"{use!r} is not a subclass of broker.plugin.Plugin")
    return loaded


def load_plugin(spec: PluginSpec, index: int) -> Plugin:
    path = f"plugins[{index}]"
    cls = resolve(spec.use)
    try:
        options = structure_options(spec.options, cls.Options, path)
        plugin = cls(options)
    except OptionsError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        # Plugins check what attrs cannot (files exist, keys parse) when constructed.
        raise OptionsError([f"{exc} @ {path}"]) from exc
    plugin.name = spec.use
    return plugin


def load_plugins(config: Config, source: str) -> list[Plugin]:
    """Every configured plugin, in order; ConfigError lists every problem."""
    plugins: list[Plugin] = []
    errors: list[str] = []
    for index, spec in enumerate(config.plugins):
        try:
            plugins.append(load_plugin(spec, index))
        except PluginLoadError as exc:
            errors.append(f"plugins[{index}] ({spec.use}): {exc}")
        except OptionsError as exc:
            errors.extend(f"plugins[{index}] ({spec.use}): {error}" for error in exc.errors)
    if errors:
        raise ConfigError(source, errors)
    return plugins


def build_pipeline(config: Config, source: str = "<config>") -> Pipeline:
    """The pipeline of ``config.plugins``; ConfigError lists every problem."""
    return Pipeline(load_plugins(config, source), timeout=config.server.plugin_timeout)

"""The TOML configuration: plain attrs classes, validated with every error reported.

The classes are structured by the validator plugin options use (`broker.config.options`),
with the rules of each key (bounds, choices, checks) given in its `_setting` and
applied by a field hook; errors name the key (``server.port: ...``) and show the value
unless it is a secret.

The sample file ``etc/trio-broker.toml`` documents every key; keep them in step.
"""

import ipaddress
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)

from ..core.topics import TopicError, check_filter
from ..handshake import forwarding, origins
from . import redis_urls
from .options import TYPE_NAMES, Hook, WrongType, make_converter, problems


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` lists every problem found."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__("\n".join(f"{source}: {error}" for error in errors))


def _setting(
    default: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    positive: bool = False,
    choices: tuple[str, ...] = (),
    check: Any = None,
    section: type[Any] | None = None,
    tables: type[Any] | None = None,
    optional: bool = False,
    secret: bool = False,
) -> Any:
    """A key; ``default`` None makes it required unless ``optional``.

    ``section``: a table of that class; ``tables``: an array of tables of that class.
    A ``secret`` value never appears in an error message.
    """
    required = default is None and section is None and not optional
    return attrs.field(
        default=attrs.NOTHING if required else default,
        repr=not secret,
        metadata={
            "min": min,
            "max": max,
            "positive": positive,
            "choices": choices,
            "check": check,
            "section": section,
            "tables": tables,
            "optional": optional,
            "secret": secret,
        },
    )


def _check_path(value: str) -> str | None:
    if not value.startswith("/"):
        return "must start with '/'"
    if any(ch in value for ch in "?# ") or not value.isascii():
        return "must be a plain ASCII URL path without query, fragment or spaces"
    return None


def _check_nonempty(value: str) -> str | None:
    return None if value else "must not be empty"


def _check_origins(value: tuple[str, ...]) -> str | None:
    for origin in value:
        if not origins.is_valid_pattern(origin):
            return f"{origin[:80]!r} is not an origin: {origins.PATTERN_HELP}"
    return None


def _check_networks(value: tuple[str, ...]) -> str | None:
    for entry in value:
        try:
            forwarding.TrustedProxies([entry])
        except ValueError as error:
            return f"{entry[:80]!r} is not an address or network (10.0.0.0/8, ::1): {error}"
    return None


@attrs.frozen
class TlsConfig:
    cert_file: str = _setting(None, check=_check_nonempty)
    key_file: str = _setting(None, check=_check_nonempty)


@attrs.frozen
class ServerConfig:
    host: str = _setting("127.0.0.1", check=_check_nonempty)
    port: int = _setting(8080, min=0, max=65535)
    path: str = _setting("/ws", check=_check_path)
    shutdown_timeout: float = _setting(10.0, positive=True, max=3600)
    handshake_timeout: float = _setting(10.0, positive=True, max=3600)
    heartbeat_interval: float = _setting(30.0, min=0, max=86400)
    heartbeat_timeout: float = _setting(10.0, positive=True, max=3600)
    close_timeout: float = _setting(5.0, positive=True, max=3600)
    plugin_timeout: float = _setting(5.0, positive=True, max=3600)
    lame_duck_duration: float = _setting(30.0, positive=True, max=86400)
    allowed_origins: tuple[str, ...] = _setting((), check=_check_origins)
    trusted_proxies: tuple[str, ...] = _setting((), check=_check_networks)
    proxy_header: str = _setting("X-Forwarded-For", choices=forwarding.HEADERS)
    tls: TlsConfig | None = _setting(None, section=TlsConfig)
    # Processes sharing the port (SO_REUSEPORT), meeting through the cluster engine.
    workers: int = _setting(1, min=1, max=1024)
    # permessage-deflate (RFC 7692) for clients that offer it (broker.wire.deflate).
    compression: bool = _setting(False)
    compression_level: int = _setting(1, min=1, max=9)
    compression_min_size: int = _setting(256, min=0, max=1 << 30)


def _check_topic_filter(value: str) -> str | None:
    try:
        check_filter(value, 65_536)
    except TopicError as error:
        return str(error)
    return None


@attrs.frozen
class TopicConfig:
    """One ``[[topics]]`` table: options for the topics its ``filter`` matches."""

    filter: str = _setting(None, check=_check_topic_filter)
    history_size: int = _setting(0, min=0, max=1_000_000)
    history_ttl: float = _setting(0.0, min=0, max=365 * 86400)
    presence: bool = _setting(False)
    join_leave: bool = _setting(False)


@attrs.frozen
class ApiKey:
    """One ``[admin] api_keys`` entry: a key (inline or in a file) and whom it stands for."""

    user: str = _setting(None, check=_check_nonempty)
    roles: tuple[str, ...] = _setting(())
    key: str | None = _setting(None, optional=True, secret=True)
    key_file: str | None = _setting(None, optional=True, check=_check_nonempty)

    def __attrs_post_init__(self) -> None:
        if (self.key is None) == (self.key_file is None):
            raise ValueError(f"set exactly one of 'key' and 'key_file' for user {self.user!r}")


@attrs.frozen
class AdminConfig:
    enabled: bool = _setting(False)
    host: str = _setting("127.0.0.1", check=_check_nonempty)
    port: int = _setting(8081, min=0, max=65535)
    # Demo pages at /ui/ (a chat on the browser client).
    ui: bool = _setting(False)
    api_keys: tuple[ApiKey, ...] = _setting((), tables=ApiKey)
    # Bounds on what one HTTP client may make the broker hold.
    max_connections: int = _setting(100, min=1, max=1_000_000)
    max_request_size: int = _setting(1_048_576, min=1024, max=2**30)
    request_timeout: float = _setting(10.0, positive=True, max=3600)
    idle_timeout: float = _setting(60.0, positive=True, max=86400)
    tls: TlsConfig | None = _setting(None, section=TlsConfig)


@attrs.frozen
class LimitsConfig:
    max_connections: int = _setting(10_000, min=1, max=10_000_000)
    # Off, or generous: one address may be a NAT or a proxy in front of thousands of users.
    max_connections_per_ip: int = _setting(0, min=0, max=10_000_000)
    # Connections one (authenticated) user may hold across the cluster; 0: no limit.
    max_connections_per_user: int = _setting(0, min=0, max=10_000_000)
    handshake_rate_per_ip: float = _setting(100.0, min=0, max=1_000_000)
    handshake_burst_per_ip: int = _setting(10_000, min=1, max=10_000_000)
    max_message_size: int = _setting(65_536, min=256, max=64 * 1024 * 1024)
    max_subscriptions: int = _setting(100, min=1, max=1_000_000)
    max_topic_length: int = _setting(256, min=1, max=65_536)
    max_queued_messages: int = _setting(1000, min=1, max=1_000_000)
    max_queued_bytes: int = _setting(1_048_576, min=1024, max=2**40)
    slow_consumer_timeout: float = _setting(5.0, positive=True, max=3600)
    max_incoming_rate: float = _setting(10_000.0, min=0, max=10_000_000)
    incoming_burst: int = _setting(10_000, min=1, max=10_000_000)
    max_history_bytes: int = _setting(64 * 2**20, min=0, max=2**40)
    max_history_request: int = _setting(1000, min=1, max=1_000_000)

    @property
    def per_address(self) -> tuple[int, float, int]:
        """As `AddressLimits` takes them: connections, handshake rate and burst."""
        return (
            self.max_connections_per_ip,
            self.handshake_rate_per_ip,
            self.handshake_burst_per_ip,
        )


def _check_redis_url(value: str) -> str | None:
    try:
        redis_urls.check(value)
    except redis_urls.UrlError as error:
        return str(error)
    return None


def _check_redis_urls(value: tuple[str, ...]) -> str | None:
    for url in value:
        problem = _check_redis_url(url)
        if problem:
            return f"{redact_url(url)!r}: {problem}"
    if len(set(value)) != len(value):
        return "the same shard is listed twice"
    return None


def _check_prefix(value: str) -> str | None:
    if not value or not value.isascii() or any(ch in value for ch in " *?[]\\:"):
        return "must be non-empty ASCII without spaces, ':' or glob characters (*?[]\\)"
    return None


def redact_url(url: str) -> str:
    """``url`` without the password it may carry (for logs and errors)."""
    scheme, separator, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not separator or not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


@attrs.frozen
class ClusterConfig:
    """``[cluster]``: where nodes and workers meet (docs/cluster.md)."""

    engine: str = _setting("memory", choices=("memory", "redis"))
    redis_url: str | None = _setting(None, optional=True, check=_check_redis_url, secret=True)
    redis_shards: tuple[str, ...] = _setting((), check=_check_redis_urls, secret=True)
    redis_password_file: str | None = _setting(None, optional=True, check=_check_nonempty)
    # The sentinels' own password (redis+sentinel:// URLs), when they require one.
    redis_sentinel_password_file: str | None = _setting(None, optional=True, check=_check_nonempty)
    prefix: str = _setting("trio-broker", check=_check_prefix)
    # Seconds one Redis command may take; then the request answers "unavailable".
    redis_timeout: float = _setting(5.0, positive=True, max=3600)
    # Seconds a node's presence entries outlive it if it dies without removing them.
    presence_ttl: float = _setting(60.0, min=3, max=86400)
    # Messages from Redis waiting for this node; beyond, it resubscribes (docs/cluster.md).
    max_backlog: int = _setting(100_000, min=100, max=10_000_000)

    def __attrs_post_init__(self) -> None:
        if self.redis_url is not None and self.redis_shards:
            raise ValueError("set redis_url or redis_shards, not both")

    @property
    def redis_urls(self) -> tuple[str, ...]:
        return self.redis_shards or ((self.redis_url,) if self.redis_url else ())


# What a webhook may report (docs/operations.md).
WEBHOOK_EVENTS = (
    "connect",
    "disconnect",
    "subscribe",
    "unsubscribe",
    "occupied",
    "vacated",
    "join",
    "leave",
)


def _check_http_url(value: str) -> str | None:
    if not value.startswith(("http://", "https://")) or len(value) > 2048:
        return "must be an http:// or https:// URL"
    return None


def _check_webhook_events(value: tuple[str, ...]) -> str | None:
    unknown = [event for event in value if event not in WEBHOOK_EVENTS]
    if unknown:
        named = ", ".join(map(repr, unknown))[:200]
        return f"unknown event(s) {named} (known: {', '.join(WEBHOOK_EVENTS)})"
    if not value:
        return "name at least one event"
    return None


@attrs.frozen
class WebhooksConfig:
    """``[webhooks]``: the broker tells the application's backend what happened."""

    url: str = _setting(None, check=_check_http_url)
    # The HMAC-SHA256 key of the signature: the file's first line.
    secret_file: str = _setting(None, check=_check_nonempty)
    events: tuple[str, ...] = _setting(("occupied", "vacated"), check=_check_webhook_events)
    batch_max: int = _setting(100, min=1, max=10_000)
    batch_delay: float = _setting(0.1, min=0, max=60)
    retry_for: float = _setting(300.0, min=0, max=7 * 86400)
    max_queued: int = _setting(10_000, min=1, max=10_000_000)
    # Seconds one POST may take; then it counts as failed (and is retried).
    timeout: float = _setting(5.0, positive=True, max=300)


@attrs.frozen
class LogConfig:
    level: str = _setting("info", choices=("debug", "info", "warning", "error"))
    format: str = _setting("text", choices=("text", "json"))


@attrs.frozen
class PluginSpec:
    """One ``[[plugins]]`` table: ``use`` names the plugin, the rest are its options."""

    use: str
    options: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Config:
    server: ServerConfig = attrs.field(factory=ServerConfig)
    admin: AdminConfig = attrs.field(factory=AdminConfig)
    limits: LimitsConfig = attrs.field(factory=LimitsConfig)
    log: LogConfig = attrs.field(factory=LogConfig)
    cluster: ClusterConfig = attrs.field(factory=ClusterConfig)
    webhooks: WebhooksConfig | None = _setting(None, section=WebhooksConfig)
    topics: tuple[TopicConfig, ...] = _setting((), tables=TopicConfig)
    plugins: tuple[PluginSpec, ...] = _setting((), tables=PluginSpec)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _broken_rule(meta: Mapping[str, Any], value: Any) -> str | None:
    """What a valid value of the key's type breaks of its rules, if anything."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if meta["positive"] and value <= 0:
        return "must be greater than 0"
    if meta["min"] is not None and value < meta["min"]:
        return f"must be at least {meta['min']}"
    if meta["max"] is not None and value > meta["max"]:
        return f"must be at most {meta['max']}"
    if meta["choices"] and value not in meta["choices"]:
        allowed = ", ".join(repr(choice) for choice in meta["choices"])
        return f"must be one of {allowed}"
    check = meta["check"]
    return None if check is None else check(value)


def _rules_hook(field: "attrs.Attribute[Any]", converter: cattrs.Converter) -> Hook | None:
    """A `_setting`'s structure hook: the converter's type check, worded with the value
    (unless secret), then the key's rules."""
    meta = field.metadata
    if "check" not in meta or meta["section"] is not None:
        return None  # not a setting, or a table: the converter's own hook
    kind: Any = field.type
    if meta["optional"]:
        (kind,) = (member for member in get_args(kind) if member is not type(None))
    if meta["tables"] is not None:
        expected = "an array of tables"
    else:
        expected = TYPE_NAMES.get(kind) or "an array of strings"  # the only other kind

    def problem(text: str, value: Any) -> ValueError:
        return ValueError(text if meta["secret"] else f"{text}, got {_describe(value)}")

    def structure(value: Any, _: Any) -> Any:
        if meta["tables"] is not None:
            if not isinstance(value, list):
                raise problem(f"must be {expected}", value)
            return converter.structure(value, kind)  # each table's errors, with its index
        try:
            converted = converter.structure(value, kind)
        except (TypeError, ValueError, ClassValidationError, IterableValidationError):
            raise problem(f"must be {expected}", value) from None
        broken = _broken_rule(meta, converted)
        if broken:
            raise problem(broken, value)
        return converted

    return structure


def _plugin_spec(value: Any, _: Any) -> PluginSpec:
    if not isinstance(value, Mapping):
        raise ValueError("must be a table")
    use = value.get("use")
    if not isinstance(use, str) or not use:
        missing = ValueError("required, the plugin's name or 'module:Class'")
        missing.__notes__ = [AttributeValidationNote("the plugin to use", "use", str)]
        raise ClassValidationError("a [[plugins]] table", [missing], PluginSpec)
    # Validated when the plugins are loaded (`broker.plugin_host.loader`).
    return PluginSpec(use, {key: item for key, item in value.items() if key != "use"})


_converter = make_converter(_rules_hook)
_converter.register_structure_hook(PluginSpec, _plugin_spec)


def _messages(path: str, error: BaseException) -> list[str]:
    """``path: what is wrong``, as users of the config file read it."""
    if isinstance(error, ForbiddenExtraKeysError):
        known = ", ".join(field.name for field in attrs.fields(error.cl))
        if not path:
            return [
                f"[{key}]: unknown section (known sections: {known})"
                for key in sorted(error.extra_fields)
            ]
        return [
            f"{path}.{key}: unknown key (known keys: {known})" for key in sorted(error.extra_fields)
        ]
    if isinstance(error, KeyError):
        return [f"{path}: required"]
    if isinstance(error, WrongType):  # a table that is not one: the others are worded above
        return [f"[{path}] must be {error.expected}, got {_describe(error.value)}"]
    message = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    return [f"{path}: {message}"]


def config_from_mapping(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate parsed TOML; raise ConfigError listing every problem.

    Plugin options are validated when the plugins are loaded (`broker.plugin_host.loader`).
    """
    try:
        config = _converter.structure(data, Config)
    except (ClassValidationError, IterableValidationError) as exc:
        errors = [
            message
            for path, error in problems(exc, "")
            for message in _messages(path.removeprefix("."), error)
        ]
        raise ConfigError(source, errors) from None
    errors = _cross_section_errors(config)
    if errors:
        raise ConfigError(source, errors)
    return config


def _cross_section_errors(config: Config) -> list[str]:
    cluster = config.cluster
    errors = []
    if cluster.engine == "redis" and not cluster.redis_urls:
        errors.append('cluster.redis_url: required with engine = "redis" (or redis_shards)')
    if cluster.engine == "memory" and config.server.workers > 1:
        errors.append(
            f'server.workers = {config.server.workers} needs [cluster] engine = "redis": '
            "with the memory engine each worker would be a broker of its own, and a message "
            "published to one would never reach subscribers of another"
        )
    return errors


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message carries "(at line L, column C)".
        raise ConfigError(source, [f"invalid TOML: {exc}"]) from None
    return config_from_mapping(data, source)


def load_config(path: str | Path) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc}"]) from None
    return parse_config(text, str(path))


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The sample config's key, for `make run`: published, so never to be trusted.
SAMPLE_API_KEY = "dev-key-from-the-sample-config"


def config_warnings(config: Config) -> list[str]:
    """What is valid but probably not meant: logged at start and reload, shown by check-config."""
    warnings = []
    server = config.server
    development = [o for o in server.allowed_origins if origins.is_development_pattern(o)]
    if development and not _is_loopback(server.host):
        listed = ", ".join(repr(entry) for entry in development)
        warnings.append(
            f"server.allowed_origins admits pages of developers' machines ({listed}) while "
            f"server.host = {server.host!r} is reachable from other machines: in production, "
            "list only your application's origins"
        )
    cluster = config.cluster
    if cluster.redis_sentinel_password_file is not None and not any(
        map(redis_urls.is_sentinel, cluster.redis_urls)
    ):
        warnings.append(
            "cluster.redis_sentinel_password_file is set but no Redis is a redis+sentinel:// "
            "URL: it is not used"
        )
    if cluster.engine == "redis":
        for index, table in enumerate(config.topics):
            if table.history_size and not table.history_ttl:
                warnings.append(
                    f"topics[{index}] ({table.filter!r}) keeps history without history_ttl: with "
                    "the redis engine every topic it matches keeps a stream in Redis until Redis "
                    "evicts it (max_history_bytes bounds the memory engine only)"
                )
    for index, key in enumerate(config.admin.api_keys):
        if key.key == SAMPLE_API_KEY:
            warnings.append(
                f"admin.api_keys[{index}] is the sample config's development key, which "
                "anyone can read: use a key_file of your own outside development"
            )
    return warnings


def restart_required(old: Config, new: Config) -> list[str]:
    """Keys whose new value only takes effect after a restart."""
    changed = [
        f"server.{key}"
        for key in ("host", "port", "workers")
        if getattr(old.server, key) != getattr(new.server, key)
    ]
    changed += [
        f"admin.{key}"
        for key in ("enabled", "host", "port")
        if getattr(old.admin, key) != getattr(new.admin, key)
    ]
    return changed + [
        f"cluster.{field.name}"
        for field in attrs.fields(ClusterConfig)
        if getattr(old.cluster, field.name) != getattr(new.cluster, field.name)
    ]

import json
import tomllib
from pathlib import Path

import attrs
import pytest

from broker.config.redis_urls import SentinelUrl, parse_sentinel
from broker.config.schema import (
    SAMPLE_API_KEY,
    ClusterConfig,
    Config,
    ConfigError,
    TopicConfig,
    WebhooksConfig,
    config_warnings,
    load_config,
    parse_config,
    redact_url,
    restart_required,
)
from broker.handshake.origins import is_development_pattern
from tests.conftest import ROOT

SAMPLE = ROOT / "etc" / "trio-broker.toml"


def test_empty_file_is_the_defaults() -> None:
    assert parse_config("") == Config()


def test_sample_config_names_every_key_with_its_default() -> None:
    data = tomllib.loads(SAMPLE.read_text())
    defaults = json.loads(json.dumps(attrs.asdict(Config())))  # tuples as TOML arrays
    assert defaults.pop("plugins") == []
    # The sample enables one plugin, for the demo chat's refused room; others are comments.
    assert [plugin["use"] for plugin in data.pop("plugins")] == ["acl"]
    assert defaults["server"].pop("tls") is None  # and [server.tls]
    assert defaults["admin"].pop("tls") is None
    # [webhooks] is off by default; the sample shows every key of it, commented out.
    assert defaults.pop("webhooks") is None
    commented = SAMPLE.read_text().split("# [webhooks]\n")[1].split("\n\n")[0]
    webhooks = tomllib.loads(
        "".join(line.removeprefix("# ") + "\n" for line in commented.splitlines())
    )
    assert webhooks.keys() == attrs.asdict(WebhooksConfig(url="http://x", secret_file="/x")).keys()
    # and the Redis, which has no default.
    assert defaults["cluster"].pop("redis_url") is None
    assert defaults["cluster"].pop("redis_password_file") is None
    assert defaults["cluster"].pop("redis_sentinel_password_file") is None
    # Except, on purpose, what `make run` needs: it serves pages of the developer's own
    # machine, and the admin listener with a development key.
    development = data["server"].pop("allowed_origins")
    assert defaults["server"].pop("allowed_origins") == []
    assert development and all(map(is_development_pattern, development))
    assert (data["admin"].pop("enabled"), defaults["admin"].pop("enabled")) == (True, False)
    assert (data["admin"].pop("ui"), defaults["admin"].pop("ui")) == (True, False)
    (key,) = data["admin"].pop("api_keys")
    assert defaults["admin"].pop("api_keys") == []
    assert key["key"] == SAMPLE_API_KEY
    # and examples of [[topics]], with every key.
    for example in data.pop("topics"):
        assert example.keys() == attrs.asdict(TopicConfig(filter="x")).keys()
    assert defaults.pop("topics") == []
    assert data == defaults
    sample = load_config(SAMPLE)
    assert (
        attrs.evolve(
            sample,
            server=attrs.evolve(sample.server, allowed_origins=()),
            admin=attrs.evolve(sample.admin, enabled=False, api_keys=(), ui=False),
            topics=(),
            plugins=(),
        )
        == Config()
    )


def test_values_are_read() -> None:
    config = parse_config('[server]\nport = 9000\nshutdown_timeout = 3\n[log]\nformat = "json"')
    assert config.server.port == 9000
    assert config.server.shutdown_timeout == 3.0
    assert isinstance(config.server.shutdown_timeout, float)
    assert config.log.format == "json"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[server]\nprot = 1", "server.prot: unknown key"),
        ("[sever]\nport = 1", "[sever]: unknown section"),
        ("server = 5", "[server] must be a table"),
        ('[server]\nport = "80"', "server.port: must be an integer, got '80'"),
        ("[server]\nport = true", "server.port: must be an integer, got True"),
        ("[server]\nport = 1.5", "server.port: must be an integer"),
        ("[server]\nport = 70000", "server.port: must be at most 65535, got 70000"),
        ("[server]\nport = -1", "server.port: must be at least 0"),
        ('[server]\npath = "ws"', "server.path: must start with '/'"),
        ('[server]\npath = "/ws?x"', "server.path: must be a plain ASCII URL path"),
        (
            '[server]\ntrusted_proxies = ["10.0.0.1/8"]',
            "server.trusted_proxies: '10.0.0.1/8' is not an address or network",
        ),
        (
            '[server]\ntrusted_proxies = ["proxy.internal"]',
            "server.trusted_proxies: 'proxy.internal' is not an address or network",
        ),
        ('[[topics]]\nfilter = "a/#/b"', "topics[0].filter: '#' must be the whole last level"),
        ("[[topics]]\nhistory_size = 5", "topics[0].filter: required"),
        (
            '[[topics]]\nfilter = "a"\nhistory_size = -1',
            "topics[0].history_size: must be at least 0",
        ),
        ('[[topics]]\nfilter = "a"\npresence = "yes"', "topics[0].presence: must be a boolean"),
        ('[[topics]]\nfilter = "a"\nhistory = 5', "topics[0].history: unknown key"),
        ("topics = 5", "topics: must be an array of tables"),
        (
            '[server]\nproxy_header = "X-Real-IP"',
            "server.proxy_header: must be one of 'X-Forwarded-For', 'Forwarded'",
        ),
        ('[server]\nhost = ""', "server.host: must not be empty"),
        ("[server]\nshutdown_timeout = 0", "server.shutdown_timeout: must be greater than 0"),
        ("[server]\nheartbeat_timeout = nan", "must be a finite number"),
        ("[server]\nheartbeat_interval = -1", "server.heartbeat_interval: must be at least 0"),
        ('[server]\nheartbeat_interval = "1"', "must be a number"),
        ("[limits]\nmax_connections = 0", "limits.max_connections: must be at least 1"),
        ("[limits]\nmax_message_size = 10", "limits.max_message_size: must be at least 256"),
        ('[log]\nlevel = "loud"', "log.level: must be one of 'debug', 'info'"),
        ('[log]\nformat = "xml"', "log.format: must be one of 'text', 'json'"),
    ],
)
def test_errors_name_the_key(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "my.toml")
    assert error in str(caught.value)
    assert str(caught.value).startswith("my.toml: ")


def test_every_error_is_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[server]\nport = 'x'\npath = 'y'\n[limits]\nfoo = 1\n")
    assert len(caught.value.errors) == 3


def test_parse_errors_give_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = 80\nhost = \n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid TOML")
    assert "line 3, column" in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "absent.toml")


def test_restart_required_lists_listener_changes() -> None:
    old = parse_config("")
    assert restart_required(old, parse_config("[limits]\nmax_connections = 5")) == []
    assert restart_required(old, parse_config("[server]\nport = 1\nhost = '::1'")) == [
        "server.host",
        "server.port",
    ]


def test_development_origins_on_a_public_address_are_warned_about() -> None:
    sample = SAMPLE.read_text()
    (development_key,) = config_warnings(load_config(SAMPLE))  # on 127.0.0.1: only the key
    assert "admin.api_keys[0] is the sample config's development key" in development_key
    public = parse_config(sample.replace('host = "127.0.0.1"', 'host = "0.0.0.0"'))
    warning, _ = config_warnings(public)
    assert "server.allowed_origins admits pages of developers' machines ('null'" in warning
    production = '[server]\nhost = "0.0.0.0"\nallowed_origins = ["https://app.example.com"]'
    assert config_warnings(parse_config(production)) == []


def test_cluster_settings_are_checked_together() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("[server]\nworkers = 4\n")
    (error,) = raised.value.errors
    assert error.startswith('server.workers = 4 needs [cluster] engine = "redis"')
    with pytest.raises(ConfigError) as raised:
        parse_config('[cluster]\nengine = "redis"\n')
    assert raised.value.errors == [
        'cluster.redis_url: required with engine = "redis" (or redis_shards)'
    ]
    with pytest.raises(ConfigError) as raised:
        parse_config('[cluster]\nredis_url = "redis://a"\nredis_shards = ["redis://b"]\n')
    assert raised.value.errors == ["cluster: set redis_url or redis_shards, not both"]
    with pytest.raises(ConfigError) as raised:
        parse_config('[cluster]\nredis_url = "http://user:hunter2@host"\nprefix = "a:b"\n')
    text = str(raised.value)
    assert "hunter2" not in text and "cluster.redis_url: must be redis://" in text
    assert "cluster.prefix: must be non-empty ASCII without spaces, ':'" in text
    with pytest.raises(ConfigError) as raised:
        parse_config('[cluster]\nredis_shards = ["redis://:hunter2@a", "redis://:hunter2@a"]\n')
    assert "hunter2" not in str(raised.value) and "the same shard is listed twice" in str(
        raised.value
    )
    config = parse_config(
        '[server]\nworkers = 2\n[cluster]\nengine = "redis"\nredis_shards = ["redis://a", "unix:///b"]\n'
    )
    assert config.cluster.redis_urls == ("redis://a", "unix:///b")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://a:26379/", "names no master"),
        ("redis+sentinel://a/m", "sentinel 'a' must be HOST:PORT"),
        ("redis+sentinel://a:0/m", "the port must be 1 to 65535"),
        ("redis+sentinel://[::1/m", "must be [ADDRESS]:PORT"),
        ("redis+sentinel://:hunter2@a:1/m", "carries no password"),
        ("redis+sentinel://a:1,a:1/m", "names a sentinel twice"),
        ("redis+sentinel://a:1/m/x", "database 'x' is not a number"),
        ("redis+sentinel://a:1/m?db=1", "no query"),
        ("redis+sentinel://a:1/my master", "spaces"),
    ],
)
def test_sentinel_urls_are_checked(url: str, problem: str) -> None:
    for section in (f'redis_url = "{url}"', f'redis_shards = ["{url}"]'):
        with pytest.raises(ConfigError) as raised:
            parse_config(f"[cluster]\n{section}\n")
        text = str(raised.value)
        assert "cluster.redis_" in text and problem in text and "hunter2" not in text


def test_sentinel_urls_name_the_sentinels_and_the_master() -> None:
    url = "redis+sentinel://10.0.0.5:26379,[::1]:26380,s3.example:26379/mymaster/2"
    parsed = parse_sentinel(url)
    sentinels = (("10.0.0.5", 26379), ("::1", 26380), ("s3.example", 26379))
    assert parsed == SentinelUrl(sentinels, "mymaster", 2)
    assert str(parsed) == url
    shards = '["redis+sentinel://a:1/m1", "redis+sentinel://a:1/m2"]'
    config = parse_config(
        f'[cluster]\nengine = "redis"\nredis_shards = {shards}\n'
        'redis_sentinel_password_file = "/etc/x"\n'
    )
    assert config.cluster.redis_urls == ("redis+sentinel://a:1/m1", "redis+sentinel://a:1/m2")
    assert config_warnings(config) == []
    (unused,) = config_warnings(parse_config('[cluster]\nredis_sentinel_password_file = "/x"\n'))
    assert "redis_sentinel_password_file is set but no Redis is a redis+sentinel://" in unused


def test_redis_passwords_stay_out_of_logs() -> None:
    assert redact_url("redis://:hunter2@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("rediss://user:hunter2@host") == "rediss://user:***@host"
    assert redact_url("redis://host:6379") == "redis://host:6379"
    assert redact_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_history_without_a_ttl_in_redis_is_warned_about() -> None:
    config = parse_config(
        '[cluster]\nengine = "redis"\nredis_url = "redis://h"\n'
        '[[topics]]\nfilter = "a/#"\nhistory_size = 10\n'
        '[[topics]]\nfilter = "b/#"\nhistory_size = 10\nhistory_ttl = 60\n'
    )
    (warning,) = config_warnings(config)
    assert warning.startswith("topics[0] ('a/#') keeps history without history_ttl")
    assert config_warnings(attrs.evolve(config, cluster=ClusterConfig())) == []

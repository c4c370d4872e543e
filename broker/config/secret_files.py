"""Secrets kept in files of their own, named by the config (never in it, never logged)."""

from pathlib import Path

from .schema import ConfigError


def first_line(key: str, path: str | None) -> str | None:
    """The first line of the file that the config key ``key`` (``cluster.x_file``) names;
    ConfigError that says why it cannot be read, never what it holds."""
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()[0]
    except (OSError, UnicodeDecodeError, IndexError) as error:
        reason = getattr(error, "strerror", None) or "empty or unreadable"
        raise ConfigError("<config>", [f"{key}: {path!r}: {reason}"]) from None

"""The admin API's keys (``[admin] api_keys``): read, checked, and mapped to identities."""

from pathlib import Path

from ..config.schema import AdminConfig, ConfigError
from ..core.keys import DuplicateKey, KeyTable
from ..plugin import Identity

MIN_KEY_LENGTH = 16


def load_api_keys(admin: AdminConfig, source: str = "<config>") -> KeyTable[Identity]:
    """The keys, key files read; ConfigError (never quoting a key) if any is unusable."""
    errors: list[str] = []
    entries: list[tuple[str, Identity]] = []
    for index, entry in enumerate(admin.api_keys):
        where = f"admin.api_keys[{index}]"
        key = entry.key
        if entry.key_file is not None:
            try:
                key = Path(entry.key_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as error:
                reason = getattr(error, "strerror", None) or error
                errors.append(f"{where}.key_file: cannot read {entry.key_file!r}: {reason}")
                continue
        assert key is not None
        if len(key) < MIN_KEY_LENGTH:
            errors.append(f"{where}: the key must be at least {MIN_KEY_LENGTH} characters long")
            continue
        entries.append((key, Identity(user=entry.user, roles=frozenset(entry.roles))))
    try:
        table = KeyTable(entries)
    except DuplicateKey as twins:
        errors.append(
            f"admin.api_keys: entries {twins.first} and {twins.second} are the same key: "
            "give each backend its own"
        )
    if errors:
        raise ConfigError(source, errors)
    return table

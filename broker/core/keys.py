"""Secrets (API keys, tokens) mapped to what they grant, looked up in constant time.

Only SHA-256 digests are kept and compared, each against every known one without an
early exit, so neither the comparison nor the lookup tells by its timing how much of a
guess was right.
"""

import hashlib
import hmac
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class DuplicateKey(ValueError):
    def __init__(self, first: int, second: int) -> None:
        super().__init__(f"entries {first} and {second} are the same secret")
        self.first = first
        self.second = second


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class KeyTable(Generic[T]):
    def __init__(self, entries: Iterable[tuple[str, T]]) -> None:
        """Raises DuplicateKey when two entries share a secret: only one could ever win."""
        self._known: list[tuple[bytes, T]] = []
        seen: dict[bytes, int] = {}
        for index, (secret, value) in enumerate(entries):
            digest = _digest(secret)
            if digest in seen:
                raise DuplicateKey(seen[digest], index)
            seen[digest] = index
            self._known.append((digest, value))

    def __len__(self) -> int:
        return len(self._known)

    def lookup(self, presented: str) -> T | None:
        digest = _digest(presented)
        found = None
        for known, value in self._known:  # no early exit: constant time
            if hmac.compare_digest(known, digest):
                found = value
        return found

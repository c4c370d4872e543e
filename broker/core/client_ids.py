"""Client ids: 96 random bits from the OS's CSPRNG, URL-safe (as secrets.token_urlsafe(12)).

Drawn in batches: one getrandom call per connection was a noticeable part of a
reconnect storm's handshakes.
"""

import base64
import os

ID_BYTES = 12
BATCH = 1024  # ids per call to the OS


class ClientIds:
    __slots__ = ("_offset", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._offset = 0

    def next(self) -> str:
        if self._offset >= len(self._pool):
            self._pool = os.urandom(ID_BYTES * BATCH)
            self._offset = 0
        start = self._offset
        self._offset = start + ID_BYTES
        return base64.urlsafe_b64encode(self._pool[start : start + ID_BYTES]).decode()

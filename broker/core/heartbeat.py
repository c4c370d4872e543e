"""When to ping a client, and when its silence means it is gone (no I/O here).

A ping goes out ``interval`` seconds after the last pong (or the connection's
start). The client then has ``timeout`` seconds to answer. A pong can be queued
behind data still moving either way, or sit unread while one of the client's
publishes is held up by backpressure: neither is the client's fault, so either
restarts the wait instead of closing.
"""

import enum


class Beat(enum.Enum):
    WAIT = "wait"  # nothing to do until `Heartbeat.due`
    PING = "ping"  # send a ping now
    DEAD = "dead"  # no pong and no progress: close the connection


class Heartbeat:
    __slots__ = ("_awaiting_since", "due", "interval", "timeout")

    def __init__(self, interval: float, timeout: float, now: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.due = now + interval  # when `check` has something to decide
        self._awaiting_since: float | None = None  # start of the current wait for a pong

    @property
    def awaiting_pong(self) -> bool:
        return self._awaiting_since is not None

    def pong(self, now: float) -> None:
        if self._awaiting_since is not None:
            self._awaiting_since = None
            self.due = now + self.interval

    def check(self, now: float, last_progress: float, held: bool) -> Beat:
        """Call at `due` (or later); ``last_progress`` is when data last moved."""
        if now < self.due:
            return Beat.WAIT
        if self._awaiting_since is None:
            self._awaiting_since = now
            self.due = now + self.timeout
            return Beat.PING
        if last_progress >= self._awaiting_since or held:
            self._awaiting_since = now
            self.due = now + self.timeout
            return Beat.WAIT
        return Beat.DEAD

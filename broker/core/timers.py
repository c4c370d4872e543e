"""Deadlines for every connection, kept by one task instead of a sleeping task each.

Heartbeats and credential expiry need a timer per connection. A sleeping Trio task
costs about 2 KiB; an entry in `TimerQueue` costs a small list and a heap slot. The
queue is plain data (tested without Trio); `Timers.run` is the one task that sleeps
until the earliest deadline and calls what is due.
"""

import heapq
import itertools
import logging
import math
from collections.abc import Callable

import trio

log = logging.getLogger("broker.timers")


class Timer:
    """A scheduled call; `cancel` drops it (and what it refers to) at once."""

    __slots__ = ("callback", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        self.callback = None

    @property
    def cancelled(self) -> bool:
        return self.callback is None


class TimerQueue:
    def __init__(self) -> None:
        # The counter breaks ties in insertion order and keeps timers out of comparisons.
        self._heap: list[tuple[float, int, Timer]] = []
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._heap, (when, next(self._counter), timer))
        return timer

    @property
    def next_deadline(self) -> float:
        """When the earliest live timer is due (inf when there is none)."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def pop_due(self, now: float) -> list[Callable[[], None]]:
        """Remove every timer due at ``now`` and return their callbacks, earliest first."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            callback = heapq.heappop(heap)[2].callback
            if callback is not None:
                due.append(callback)
        return due


class Timers:
    """The queue and the task that fires it (run it in the broker's nursery)."""

    def __init__(self) -> None:
        self.queue = TimerQueue()
        self._sleep = trio.CancelScope()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback`` at ``when`` (Trio's clock); it runs in the timer task."""
        timer = self.queue.schedule(when, callback)
        if when < self._sleep.deadline:
            self._sleep.deadline = when  # wakes the task early
        return timer

    async def run(self) -> None:
        while True:
            self._sleep = trio.CancelScope(deadline=self.queue.next_deadline)
            with self._sleep:
                await trio.sleep_forever()
            for callback in self.queue.pop_due(trio.current_time()):
                try:
                    callback()
                except Exception:  # one connection's bug must not stop every timer
                    log.exception("error in timer callback %r", callback)

import math

import pytest
import trio
import trio.testing

from broker.core.timers import TimerQueue, Timers


def test_due_timers_come_out_earliest_first_and_ties_in_order() -> None:
    queue = TimerQueue()
    calls: list[str] = []
    for when, name in [(3.0, "c"), (1.0, "a"), (2.0, "b1"), (2.0, "b2"), (9.0, "later")]:
        queue.schedule(when, lambda name=name: calls.append(name))
    assert queue.next_deadline == 1.0
    for callback in queue.pop_due(3.0):
        callback()
    assert calls == ["a", "b1", "b2", "c"]
    assert queue.next_deadline == 9.0


def test_a_cancelled_timer_never_fires_and_lets_go_of_its_callback() -> None:
    queue = TimerQueue()
    fired: list[int] = []
    first = queue.schedule(1.0, lambda: fired.append(1))
    queue.schedule(2.0, lambda: fired.append(2))
    first.cancel()
    assert first.callback is None
    assert queue.next_deadline == 2.0, "skips the cancelled one"
    for callback in queue.pop_due(5.0):
        callback()
    assert fired == [2]
    assert queue.next_deadline == math.inf
    assert len(queue) == 0


async def test_timers_fire_on_time_even_when_scheduled_earlier_than_the_current_sleep(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timers = Timers()
    fired: list[tuple[str, float]] = []
    start = trio.current_time()

    def record(name: str) -> None:
        fired.append((name, trio.current_time() - start))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        timers.call_at(start + 10, lambda: record("ten"))
        await trio.sleep(1)  # the task now sleeps until +10
        timers.call_at(start + 3, lambda: record("three"))
        cancelled = timers.call_at(start + 5, lambda: record("cancelled"))
        cancelled.cancel()
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert fired == [("three", 3.0), ("ten", 10.0)]


async def test_a_failing_callback_is_logged_and_the_others_still_fire(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    timers = Timers()
    fired: list[str] = []

    def broken() -> None:
        raise RuntimeError("bug")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        now = trio.current_time()
        timers.call_at(now + 1, broken)
        timers.call_at(now + 1, lambda: fired.append("same time"))
        timers.call_at(now + 2, lambda: fired.append("later"))
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert fired == ["same time", "later"]
    assert "error in timer callback" in caplog.text

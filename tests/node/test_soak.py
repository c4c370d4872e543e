"""A scaled-down run of bench/soak.py: a few hundred connections churning for seconds."""

import pytest
import trio

from bench.soak import check, soak
from broker.connections.flusher import Flusher

pytestmark = pytest.mark.slow  # a soak: thousands of clients


async def test_churn_loses_nothing_leaks_nothing_and_the_daemon_exits_0() -> None:
    report = await soak(connections=300, duration=4.0, seed=7)
    assert check(report) == [], report
    assert report["churn_cycles"] > 300, "the churn really churned"
    assert report["steady_deliveries_checked"] > 1000


class Broken:
    def flush(self) -> None:
        raise RuntimeError("bug")


class Counting:
    def __init__(self) -> None:
        self.flushed = trio.Event()

    def flush(self) -> None:
        self.flushed.set()


async def test_a_failing_flush_is_logged_and_the_flusher_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flusher = Flusher()
    good = Counting()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flusher.run)
        flusher.schedule(Broken())
        flusher.schedule(good)
        await good.flushed.wait()
        later = Counting()
        flusher.schedule(later)
        await later.flushed.wait()
        nursery.cancel_scope.cancel()
    assert "error flushing" in caplog.text

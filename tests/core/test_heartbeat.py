from broker.core.heartbeat import Beat, Heartbeat

NEVER = float("-inf")


def test_pings_after_the_interval_and_again_an_interval_after_the_pong() -> None:
    heartbeat = Heartbeat(interval=30, timeout=10, now=0)
    assert heartbeat.due == 30
    assert heartbeat.check(29, NEVER, held=False) is Beat.WAIT
    assert heartbeat.check(30, NEVER, held=False) is Beat.PING
    assert heartbeat.awaiting_pong and heartbeat.due == 40
    heartbeat.pong(31)
    assert not heartbeat.awaiting_pong
    assert heartbeat.check(40, NEVER, held=False) is Beat.WAIT, "the pong came: nothing due"
    assert heartbeat.due == 61
    assert heartbeat.check(61, NEVER, held=False) is Beat.PING


def test_no_pong_and_no_progress_within_the_timeout_is_death() -> None:
    heartbeat = Heartbeat(interval=30, timeout=10, now=0)
    assert heartbeat.check(30, NEVER, held=False) is Beat.PING
    assert heartbeat.check(40, last_progress=29, held=False) is Beat.DEAD


def test_data_moving_during_the_wait_restarts_it() -> None:
    heartbeat = Heartbeat(interval=30, timeout=10, now=0)
    heartbeat.check(30, NEVER, held=False)
    assert heartbeat.check(40, last_progress=35, held=False) is Beat.WAIT
    assert heartbeat.due == 50
    assert heartbeat.check(50, last_progress=35, held=False) is Beat.DEAD


def test_a_client_held_by_backpressure_is_not_blamed_for_a_late_pong() -> None:
    heartbeat = Heartbeat(interval=30, timeout=10, now=0)
    heartbeat.check(30, NEVER, held=False)
    assert heartbeat.check(40, NEVER, held=True) is Beat.WAIT
    assert heartbeat.check(50, NEVER, held=False) is Beat.DEAD


def test_a_pong_nobody_asked_for_changes_nothing() -> None:
    heartbeat = Heartbeat(interval=30, timeout=10, now=0)
    heartbeat.pong(5)
    assert heartbeat.due == 30

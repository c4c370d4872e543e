"""Which upgrade requests are refused before any plugin sees them (no sockets)."""

from broker.handshake.refusals import endpoint_refusal, limit_refusal, origin_refusal
from broker.handshake.upgrade import Refusal


def refused(path: str = "/ws", *, stopping: bool = False, taken: int = 0) -> Refusal:
    refusal = endpoint_refusal(path, "/ws", stopping=stopping, taken=taken, max_connections=2)
    assert refusal is not None
    return refusal


def test_the_endpoint_refuses_other_paths_a_stopping_broker_and_a_full_one() -> None:
    assert endpoint_refusal("/ws", "/ws", stopping=False, taken=1, max_connections=2) is None
    not_found = refused("/" + "x" * 500)
    assert not_found.status == 404 and not_found.reason.startswith("no WebSocket endpoint at")
    assert len(not_found.reason) < 150  # the path is cut
    assert (refused(stopping=True).status, refused(stopping=True).reason) == (
        503,
        "the server is shutting down",
    )
    assert refused(taken=2).reason == "too many connections"
    # The path first: a wrong one is a 404 even while stopping.
    assert refused("/x", stopping=True).status == 404


def test_an_origin_refusal_says_which_origin_and_what_the_policy_is() -> None:
    assert origin_refusal(None, "h:1", ()) is None  # not a browser
    assert origin_refusal("http://h:1", "h:1", ()) is None  # same host
    refusal = origin_refusal("http://evil.example", "h:1", ())
    assert refusal is not None and refusal.status == 403
    assert refusal.reason.startswith("origin 'http://evil.example' is not allowed by [server] ")
    assert "empty: same host as the request's Host 'h:1' only" in refusal.reason
    listed = origin_refusal("http://evil.example", "h:1", ("https://app.example.com",) * 30)
    assert listed is not None and "'https://app.example.com'" in listed.reason
    assert len(listed.reason) < 400  # a long policy is cut


def test_an_address_over_its_limits_may_come_back_in_a_second() -> None:
    refusal = limit_refusal("too many handshakes from 10.0.0.1")
    assert (refusal.status, refusal.headers) == (429, (("Retry-After", "1"),))

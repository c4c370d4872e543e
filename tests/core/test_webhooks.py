"""Webhook events before they leave (broker.core.webhooks): bounded, ordered, signed."""

import hashlib
import hmac
import json

import pytest

from broker.core.webhooks import Events, Retry, WebhookQueue, encode_batch, signature


def test_the_queue_keeps_order_and_drops_the_oldest_beyond_its_bound() -> None:
    queue = WebhookQueue(3)
    for n in range(5):
        queue.add({"n": n})
    assert (len(queue), queue.dropped) == (3, 2)
    assert queue.take(2) == [{"n": 2}, {"n": 3}]
    assert queue.take(10) == [{"n": 4}]
    assert queue.take(10) == []


def test_the_signature_is_hmac_sha256_of_the_body() -> None:
    body = encode_batch([{"event": "occupied", "topic": "t", "time_ms": 1}], 2)
    assert json.loads(body) == {
        "time_ms": 2,
        "events": [{"event": "occupied", "topic": "t", "time_ms": 1}],
    }
    expected = hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert signature(b"key", body) == f"sha256={expected}"


def test_a_failing_batch_backs_off_exponentially_until_retry_for_is_spent() -> None:
    retry = Retry(retry_for=1.0, first=0.1, ceiling=0.4)
    assert retry.next_delay(10.0) == 0.1
    assert retry.next_delay(10.1) == 0.2
    assert retry.next_delay(10.3) == 0.4
    assert retry.next_delay(10.7) == pytest.approx(0.3)  # not past the end: 11.0
    assert retry.next_delay(11.0) is None
    assert Retry(retry_for=0).next_delay(5.0) is None  # no retries at all


def test_only_wanted_events_are_kept_in_their_shapes() -> None:
    events = Events()
    events.connected("c1", "alice", "10.0.0.1")  # nothing wanted yet: nothing kept
    assert len(events.queue) == 0
    events.configure(["connect", "subscribe", "occupied", "disconnect"], 100)
    events.connected("c1", "alice", "10.0.0.1")
    events.subscription("subscribe", "c1", "alice", "chat/#")
    events.subscription("join", "c1", "alice", "chat/lobby")  # not wanted
    events.filter("occupied", "chat/#")
    events.disconnected("c1", "alice", 1000)
    kept = events.queue.take(10)
    assert all(isinstance(event.pop("time_ms"), int) for event in kept)
    assert kept == [
        {"event": "connect", "client_id": "c1", "user": "alice", "remote": "10.0.0.1"},
        {"event": "subscribe", "client_id": "c1", "user": "alice", "topic": "chat/#"},
        {"event": "occupied", "topic": "chat/#"},
        {"event": "disconnect", "client_id": "c1", "user": "alice", "code": 1000},
    ]

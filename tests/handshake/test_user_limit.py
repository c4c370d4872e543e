"""[limits] max_connections_per_user: a user past it is refused at the handshake with 429,
on one node here and across nodes (tests/cluster/test_cluster_control.py)."""

import pytest
import trio

from tests.conftest import Connect, StartBroker
from tests.wsclient import Rejected

HEADER_AUTH = {"use": "tests.example_plugins:HeaderAuth", "required": False}


async def test_a_user_past_the_limit_is_refused_until_one_leaves(
    start_broker: StartBroker, connect: Connect
) -> None:
    broker = await start_broker([HEADER_AUTH], limits={"max_connections_per_user": 2})
    alices = [await connect(broker, headers={"X-User": "alice"}) for _ in range(2)]
    with pytest.raises(Rejected) as caught:
        await connect(broker, headers={"X-User": "alice"})
    assert caught.value.status == 429
    assert b"user 'alice' has 2 connections already" in caught.value.body
    await connect(broker, headers={"X-User": "bob"})  # others are not held back
    for _ in range(3):
        await connect(broker)  # nor anonymous clients: they are nobody in particular
    await alices[0].aclose()
    # Admitted again once the broker saw that connection end (its count says when).
    with trio.fail_after(5):
        while broker.connection_count > 5:  # noqa: ASYNC110 (the close is the broker's own)
            await trio.sleep(0.01)
    await connect(broker, headers={"X-User": "alice"})

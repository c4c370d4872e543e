import re

from broker.core.client_ids import BATCH, ClientIds


def test_client_ids_are_url_safe_distinct_and_drawn_again_after_a_batch() -> None:
    ids = ClientIds()
    drawn = [ids.next() for _ in range(BATCH * 2 + 5)]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", i) for i in drawn)
    assert len(set(drawn)) == len(drawn)

"""The client's decoding of what the broker sends (no connection needed)."""

from broker.client import events


def test_a_delivery_keeps_the_fields_plugins_added_apart() -> None:
    fields = events.decode(
        '{"op": "message", "topic": "t", "data": [1], "pos": "3-0", "sender": "alice"}'
    )
    assert events.message(fields) == events.Message("t", [1], "3-0", {"sender": "alice"})


def test_a_history_entry_decodes_as_a_delivery_does() -> None:
    # History replies hold messages without "op": the same path reads them.
    assert events.message({"topic": "t", "data": None}) == events.Message("t", None)


def test_a_membership_event_names_the_client() -> None:
    fields = events.decode(
        '{"op": "join", "topic": "room", "client": {"client_id": "c1", "user": null}}'
    )
    assert events.membership(fields) == events.Membership("join", "room", "c1", None)

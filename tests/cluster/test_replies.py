"""The Lua scripts' replies read into named fields (no Redis)."""

from broker.cluster.replies import Newest, Recovered, StreamRead, members


def test_recover_names_the_position_the_clock_and_each_stream() -> None:
    reply = [b"e1", b"300", b"1700", 1, 1, 2, b"101", b"m1", b"102", b"m2", 0, 1, 0, 1, 0, 1]
    reply += [b"150", b"m3"]
    assert Recovered.parse(reply) == Recovered(
        "e1",
        300,
        1700,
        [
            StreamRead(True, True, [(101, b"m1"), (102, b"m2")]),
            StreamRead(False, True, []),
            StreamRead(True, False, [(150, b"m3")]),
        ],
    )
    assert Recovered.parse([b"e1", b"0", b"5"]).streams == []  # no stream asked for


def test_newest_gives_the_position_and_every_streams_newest() -> None:
    reply = [b"e2", b"9", 2, b"8", b"a8", b"7", b"a7", 0, 1, b"5", b"c5"]
    assert Newest.parse(reply, 3) == Newest("e2:9", [(8, b"a8"), (7, b"a7"), (5, b"c5")])


def test_members_are_client_ids_and_users() -> None:
    assert members([b"c1", b'"alice"', b"c2", b"null"]) == [
        {"client_id": "c1", "user": "alice"},
        {"client_id": "c2", "user": None},
    ]

"""Property tests of the sans-IO protocol layer: whatever a client sends, the parser answers
with a request or with its own ProtocolError, and what it accepts survives a round trip."""

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from broker.core.topics import TopicError, _check_common, check_filter, check_topic, matches
from broker.wire import protocol
from broker.wire.protocol import MAX_JSON_DEPTH, ErrorCode, ProtocolError

settings.register_profile("broker", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("broker")

# Any text, lone surrogates included (JSON can carry them as \ud800 escapes).
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(any_text, children, max_size=5)
    ),
    max_leaves=30,
)


def parse(text: str) -> protocol.Request | None:
    """The request, or None for a ProtocolError; anything else escapes and fails the test."""
    try:
        return protocol.parse_request(text)
    except ProtocolError as error:
        assert isinstance(error.code, ErrorCode)
        assert error.message
        return None


@given(st.text(max_size=200))
def test_arbitrary_text_is_a_request_or_a_protocol_error(text: str) -> None:
    parse(text)


@given(json_values)
def test_arbitrary_json_is_a_request_or_a_protocol_error(value: Any) -> None:
    parse(json.dumps(value))


@given(
    st.dictionaries(
        st.sampled_from(["op", "id", "topic", "data", "extra"]),
        st.sampled_from(["publish", "subscribe", "unsubscribe", "ping", "a/b", "#"]) | json_values,
        max_size=5,
    )
)
def test_request_shaped_objects_are_a_request_or_a_protocol_error(obj: dict[str, Any]) -> None:
    parse(json.dumps(obj))


def equal_json(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: -0.0 == 0.0, and ints and floats compare by value."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@given(
    topic=any_text,
    data=json_values,
    request_id=st.none() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=128),
)
def test_an_accepted_publish_round_trips_to_the_delivery(
    topic: str, data: Any, request_id: int | str | None
) -> None:
    obj: dict[str, Any] = {"op": "publish", "topic": topic, "data": data}
    if request_id is not None:
        obj["id"] = request_id
    request = parse(protocol.encode_json(obj).decode("utf-8", "surrogatepass"))
    assert isinstance(request, protocol.Publish), "every JSON value is valid data"
    assert (request.topic, request.id) == (topic, request_id)
    assert equal_json(request.data, data)
    delivered = json.loads(protocol.encode_message(request.topic, request.data))
    assert delivered["op"] == "message"
    assert delivered["topic"] == topic
    assert equal_json(delivered["data"], data)


@given(any_text, st.integers(1, 300))
def test_topic_checks_raise_only_topic_error(name: str, max_bytes: int) -> None:
    for check in (check_topic, check_filter):
        try:
            check(name, max_bytes)
        except TopicError as error:
            assert str(error)


@given(any_text)
def test_a_valid_topic_is_a_filter_that_matches_itself(topic: str) -> None:
    try:
        check_topic(topic, 1000)
    except TopicError:
        assume(False)
    check_filter(topic, 1000)
    assert matches(topic, topic)


@pytest.mark.parametrize(("opener", "closer"), [("[", "]"), ('{"a":', "}")])
def test_nesting_is_capped_and_says_so(opener: str, closer: str) -> None:
    def publish(levels: int) -> str:
        """A publish whose data nests ``levels`` arrays or objects (the request is one more)."""
        data = opener * levels + "1" + closer * levels
        return '{"op":"publish","topic":"t","data":' + data + "}"

    assert isinstance(parse(publish(MAX_JSON_DEPTH - 1)), protocol.Publish)
    for levels in (MAX_JSON_DEPTH, 5000, 100_000):
        with pytest.raises(ProtocolError, match=f"more than {MAX_JSON_DEPTH} deep"):
            protocol.parse_request(publish(levels))


def test_many_brackets_without_depth_are_fine() -> None:
    data = "[" + ",".join(["[]"] * 1000) + "]"
    request = protocol.parse_request('{"op":"publish","topic":"t","data":' + data + "}")
    assert isinstance(request, protocol.Publish)
    assert len(request.data) == 1000


@pytest.mark.parametrize(
    "text",
    [
        '{"op":"publish","topic":"a","topic":"b","data":1}',
        '{"op":"subscribe","op":"publish","topic":"a","data":1}',
        '{"op":"publish","topic":"a","data":{"k":1,"k":2}}',
        '{"op":"publish","topic":"a","data":[{"x":{"k":1,"k":1}}]}',
    ],
)
def test_duplicate_keys_at_any_level_are_refused(text: str) -> None:
    with pytest.raises(ProtocolError, match="duplicate key"):
        protocol.parse_request(text)


@pytest.mark.parametrize(
    "number",
    ["1e400", "-1e400", "1" * 5000, "NaN", "Infinity", "-Infinity"],
)
def test_numbers_json_cannot_carry_are_refused(number: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_request('{"op":"publish","topic":"t","data":' + number + "}")
    assert caught.value.code is ErrorCode.BAD_REQUEST


def test_huge_but_finite_numbers_are_delivered_as_they_parse() -> None:
    request = protocol.parse_request(
        '{"op":"publish","topic":"t","data":[1e308,123456789012345678901234567890]}'
    )
    assert isinstance(request, protocol.Publish)
    assert request.data[0] == 1e308 and not math.isinf(request.data[0])
    assert json.loads(protocol.encode_message("t", request.data))["data"] == request.data


def test_lone_surrogates_are_delivered_escaped() -> None:
    request = protocol.parse_request('{"op":"publish","topic":"t","data":"a\\ud800b"}')
    assert isinstance(request, protocol.Publish)
    encoded = protocol.encode_message("t", request.data)
    assert b"\\ud800" in encoded
    encoded.decode("utf-8")  # valid UTF-8 on the wire
    assert json.loads(encoded)["data"] == "a\ud800b"


@given(any_text, json_values, st.none() | any_text)
def test_a_delivery_is_encoded_as_the_generic_encoder_would(
    topic: str, data: Any, pos: str | None
) -> None:
    # encode_message assembles the envelope by hand, for speed: byte for byte the same.
    envelope = {"op": "message", "topic": topic, "data": data}
    if pos is not None:
        envelope["pos"] = pos
    assert protocol.encode_message(topic, data, None, pos) == protocol.encode_json(envelope)


topic_like = st.text(st.sampled_from("ab/+#$\x00é \ud800"), max_size=12) | any_text


@given(topic_like, st.integers(1, 20))
def test_the_fast_topic_check_agrees_with_the_level_by_level_one(name: str, max_bytes: int) -> None:
    def by_levels() -> None:
        _check_common(name, max_bytes)
        if "+" in name or "#" in name:
            raise TopicError("wildcard")

    outcomes = []
    for check in (lambda: check_topic(name, max_bytes), by_levels):
        try:
            check()
            outcomes.append(True)
        except TopicError:
            outcomes.append(False)
    assert outcomes[0] == outcomes[1]

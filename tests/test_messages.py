import pytest
from wsproto.events import BytesMessage, TextMessage

from broker.messages import MessageAssembler, MessageTooBig, Received


def test_fragments_are_joined() -> None:
    assembler = MessageAssembler(100)
    assert assembler.feed(TextMessage(data="ab", message_finished=False)) is None
    assert assembler.feed(TextMessage(data="cd", message_finished=True)) == Received("abcd")
    assert assembler.feed(BytesMessage(data=b"\x00", message_finished=True)) == Received(b"\x00")


def test_limit_is_enforced_across_fragments() -> None:
    assembler = MessageAssembler(10)
    for _ in range(5):
        assembler.feed(TextMessage(data="ab", message_finished=False))
    with pytest.raises(MessageTooBig):
        assembler.feed(TextMessage(data="c", message_finished=False))


def test_limit_counts_utf8_bytes() -> None:
    assert MessageAssembler(10).feed(TextMessage(data="é" * 5)) == Received("é" * 5)
    with pytest.raises(MessageTooBig):
        MessageAssembler(10).feed(TextMessage(data="é" * 6))

"""What nodes ask each other through Redis pub/sub for the control API (no I/O).

A command goes to every node on ``PREFIX:ctl``: ``{"id", "from", "command"}``; each node
answers on the asking node's ``PREFIX:ans:NODE``: ``{"id", "node", "answer"}``. Anything
else on those channels (another program, another version) is ignored.
"""

import json
from typing import Any

import attrs


@attrs.frozen
class Command:
    request_id: str
    sender: str  # the node that asks, where answers go
    command: dict[str, Any]


@attrs.frozen
class Answer:
    request_id: str
    node: str
    answer: dict[str, Any]


def encode_command(command: Command) -> bytes:
    fields = {"id": command.request_id, "from": command.sender, "command": command.command}
    return json.dumps(fields, separators=(",", ":")).encode()


def encode_answer(answer: Answer) -> bytes:
    fields = {"id": answer.request_id, "node": answer.node, "answer": answer.answer}
    return json.dumps(fields, separators=(",", ":")).encode()


def _object(data: bytes) -> dict[str, Any] | None:
    try:
        fields = json.loads(data)
    except ValueError:
        return None
    return fields if isinstance(fields, dict) else None


def parse_command(data: bytes) -> Command | None:
    fields = _object(data)
    if fields is None:
        return None
    request_id, sender, command = fields.get("id"), fields.get("from"), fields.get("command")
    if not (isinstance(request_id, str) and isinstance(sender, str) and isinstance(command, dict)):
        return None
    return Command(request_id, sender, command)


def parse_answer(data: bytes) -> Answer | None:
    fields = _object(data)
    if fields is None:
        return None
    request_id, node, answer = fields.get("id"), fields.get("node"), fields.get("answer")
    if not (isinstance(request_id, str) and isinstance(node, str) and isinstance(answer, dict)):
        return None
    return Answer(request_id, node, answer)

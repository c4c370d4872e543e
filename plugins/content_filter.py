"""content_filter: size limits, JSON Schema validation and word redaction, per topic filter.

Every rule whose ``topic`` filter matches a publish applies, in order: the size of
``data`` (JSON, UTF-8; binary data: its bytes) must not exceed ``max_data_bytes``;
``data`` must match the JSON Schema (``schema`` inline or ``schema_file``), and binary
data, which no JSON Schema describes, is refused by a rule with a schema unless it says
``allow_binary``; the words in ``redact`` are replaced, whole words and ignoring case,
in every string inside ``data``. A refusal is ``forbidden`` with a message saying why.
"""

import json
import re
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from broker.plugin import Client, Plugin, Publication, Refuse, TopicError, check_filter, matches

MAX_REASON = 200


def _check_topic(instance: Any, attribute: Any, value: str) -> None:
    try:
        check_filter(value, 65_536)
    except TopicError as error:
        raise ValueError(f"topic {value!r}: {error}") from None


@attrs.frozen
class Rule:
    topic: str = attrs.field(validator=_check_topic)
    max_data_bytes: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    schema: dict[str, Any] | None = None
    schema_file: str | None = None
    redact: list[str] = attrs.field(factory=list)
    # Binary data (bytes, published with data_b64) passes this rule's schema.
    allow_binary: bool = False


@attrs.frozen
class _CompiledRule:
    rule: Rule
    validator: Any
    redaction: re.Pattern[str] | None


def _compile(rule: Rule) -> _CompiledRule:
    if not rule.redact and all(
        check is None for check in (rule.max_data_bytes, rule.schema, rule.schema_file)
    ):
        raise ValueError(
            f"rule for {rule.topic!r} checks nothing: "
            "set max_data_bytes, schema, schema_file or redact"
        )
    if "" in rule.redact:
        # An empty word matches at every word boundary.
        raise ValueError(f"rule for {rule.topic!r}: redact holds an empty word")
    schema = rule.schema
    if rule.schema_file is not None:
        if schema is not None:
            raise ValueError(f"rule for {rule.topic!r}: set 'schema' or 'schema_file', not both")
        schema = json.loads(Path(rule.schema_file).read_text(encoding="utf-8"))
    validator = None
    if schema is not None:
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.exceptions.SchemaError as error:
            raise ValueError(f"rule for {rule.topic!r}: invalid schema: {error.message}") from None
        validator = cls(schema)
    redaction = None
    if rule.redact:
        words = "|".join(re.escape(word) for word in rule.redact)
        redaction = re.compile(rf"\b(?:{words})\b", re.IGNORECASE)
    return _CompiledRule(rule, validator, redaction)


def _redact(value: Any, pattern: re.Pattern[str], replacement: str) -> Any:
    if isinstance(value, str):
        return pattern.sub(replacement, value)
    if isinstance(value, list):
        return [_redact(item, pattern, replacement) for item in value]
    if isinstance(value, dict):
        return {key: _redact(item, pattern, replacement) for key, item in value.items()}
    return value


class ContentFilter(Plugin):
    @attrs.frozen
    class Options:
        rules: list[Rule]
        replacement: str = "***"

    options: Options

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self._rules = [_compile(rule) for rule in options.rules]

    def authorize_publish(self, client: Client, publication: Publication) -> Publication:
        data = publication.data
        for compiled in self._rules:
            rule = compiled.rule
            if not matches(rule.topic, publication.topic):
                continue
            binary = isinstance(data, bytes)
            if rule.max_data_bytes is not None:
                size = (
                    len(data)
                    if binary
                    else len(json.dumps(data, ensure_ascii=False).encode("utf-8", "replace"))
                )
                if size > rule.max_data_bytes:
                    raise Refuse(
                        f"data is {size} bytes; at most {rule.max_data_bytes} on {rule.topic!r}"
                    )
            if compiled.validator is not None and binary:
                if not rule.allow_binary:
                    raise Refuse(f"binary data is not allowed on {rule.topic!r}")
            elif compiled.validator is not None:
                error = jsonschema.exceptions.best_match(compiled.validator.iter_errors(data))
                if error is not None:
                    where = "/".join(str(part) for part in error.absolute_path) or "data"
                    reason = f"{where}: {error.message}"[:MAX_REASON]
                    raise Refuse(f"data does not match the schema for {rule.topic!r}: {reason}")
            if compiled.redaction is not None:
                data = _redact(data, compiled.redaction, self.options.replacement)
        if data is publication.data:
            return publication
        return attrs.evolve(publication, data=data)

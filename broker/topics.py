"""Topic names and subscription filters: validation and matching (MQTT rules).

A topic is a non-empty string of ``/``-separated, non-empty levels. A filter may
use ``+`` for exactly one whole level and ``#`` as the whole last level, which
matches its parent level and everything below it. Topics starting with ``$``
are reserved for the broker; a filter whose first level is a wildcard does not
match them.
"""

SEPARATOR = "/"
SINGLE_LEVEL = "+"
MULTI_LEVEL = "#"
RESERVED_PREFIX = "$"


class TopicError(ValueError):
    """A topic or filter is malformed; the message says why."""


def is_reserved(topic: str) -> bool:
    return topic.startswith(RESERVED_PREFIX)


def _check_common(name: str, max_bytes: int) -> list[str]:
    if not isinstance(name, str) or not name:
        raise TopicError("topic must be a non-empty string")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise TopicError("topic is not valid UTF-8") from None
    if size > max_bytes:
        raise TopicError(f"topic is {size} bytes long, the limit is {max_bytes}")
    if "\x00" in name:
        raise TopicError("topic must not contain NUL characters")
    levels = name.split(SEPARATOR)
    if "" in levels:
        raise TopicError("topic must not have an empty level")
    return levels


def check_topic(topic: str, max_bytes: int) -> None:
    """Validate a concrete topic, as used for publishing."""
    _check_common(topic, max_bytes)
    if SINGLE_LEVEL in topic or MULTI_LEVEL in topic:
        raise TopicError("wildcards '+' and '#' are not allowed in a publish topic")


def check_filter(topic_filter: str, max_bytes: int) -> None:
    """Validate a subscription filter, which may contain wildcards."""
    levels = _check_common(topic_filter, max_bytes)
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if SINGLE_LEVEL in level and level != SINGLE_LEVEL:
            raise TopicError("'+' must occupy a whole level")
        if MULTI_LEVEL in level and (level != MULTI_LEVEL or index != last):
            raise TopicError("'#' must be the whole last level")


def has_wildcard(topic_filter: str) -> bool:
    return SINGLE_LEVEL in topic_filter or MULTI_LEVEL in topic_filter


def matches(topic_filter: str, topic: str) -> bool:
    """Whether a (valid) filter matches a (valid) topic.

    The reference definition; `broker.subscriptions` does the same faster.
    """
    filter_levels = topic_filter.split(SEPARATOR)
    topic_levels = topic.split(SEPARATOR)
    if is_reserved(topic) and filter_levels[0] in (SINGLE_LEVEL, MULTI_LEVEL):
        return False
    for index, level in enumerate(filter_levels):
        if level == MULTI_LEVEL:
            return True
        if index >= len(topic_levels):
            return False
        if level != SINGLE_LEVEL and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)

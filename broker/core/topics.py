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
    if (  # the common case, checked once per publish without building a list of levels
        type(topic) is str
        and topic.isascii()
        and 0 < len(topic) <= max_bytes
        and topic[0] != SEPARATOR
        and topic[-1] != SEPARATOR
        and "//" not in topic
        and "\x00" not in topic
        and SINGLE_LEVEL not in topic
        and MULTI_LEVEL not in topic
    ):
        return
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

    The reference definition; `broker.core.subscriptions` does the same faster.
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


def _reserved_mismatch(wide: list[str], narrow: list[str]) -> bool:
    """A filter starting with a wildcard never matches a $ topic another filter names."""
    return wide[0] in (SINGLE_LEVEL, MULTI_LEVEL) and is_reserved(narrow[0])


def covers(general: str, specific: str) -> bool:
    """Whether every topic the (valid) filter ``specific`` matches, ``general`` matches too.

    Used to grant a subscription: a wildcard in ``specific`` must not widen what
    ``general`` allows (``a/+`` does not cover ``a/#``, ``+`` does not cover ``$SYS``).
    """
    wide, narrow = general.split(SEPARATOR), specific.split(SEPARATOR)
    if _reserved_mismatch(wide, narrow):
        return False
    for index, level in enumerate(wide):
        if level == MULTI_LEVEL:
            return True  # "a/#" also matches "a" itself, so any depth >= index is covered
        if index >= len(narrow):
            return False
        if narrow[index] == MULTI_LEVEL:
            # "#" also matches its parent level, except at the top, where there is no
            # empty topic: there "+/#" matches as much as "#".
            return index == 0 and level == SINGLE_LEVEL and wide[1:] == [MULTI_LEVEL]
        if level != SINGLE_LEVEL and level != narrow[index]:
            return False
    return len(narrow) == len(wide)


def overlaps(first: str, second: str) -> bool:
    """Whether some topic is matched by both (valid) filters."""
    a, b = first.split(SEPARATOR), second.split(SEPARATOR)
    if _reserved_mismatch(a, b) or _reserved_mismatch(b, a):
        return False
    for index in range(max(len(a), len(b))):
        x = a[index] if index < len(a) else None
        y = b[index] if index < len(b) else None
        if x == MULTI_LEVEL or y == MULTI_LEVEL:
            return True
        if x is None or y is None:
            return False
        if x != y and SINGLE_LEVEL not in (x, y):
            return False
    return True

"""acl: ordered allow/deny rules on topic filters, per user and role.

Each rule applies to a client when its ``user`` and ``role`` (each optional) match;
``user = "*"`` matches every authenticated client, ``role = "*"`` every client with a role.
For a request, the first applicable rule that speaks about it decides:

- an ``allow`` rule (the default action) decides when one of its filters covers the
  request: for a publish, matches the topic; for a subscription, matches *every*
  topic the requested filter can match, so a wildcard never widens access;
- a ``deny`` rule decides when one of its filters overlaps the request: a
  subscription that could receive a single denied topic is refused.

No rule deciding means ``default``. ``{user}`` in a filter stands for the client's
user name; a rule with ``{user}`` never applies to anonymous clients, nor to user
names containing ``/``, ``+`` or ``#``, which would change the filter's shape.
"""

import re
from typing import Any, Literal

import attrs

from broker.plugin import (
    Client,
    Plugin,
    Publication,
    Refuse,
    TopicError,
    check_filter,
    covers,
    matches,
    overlaps,
)

USER_PLACEHOLDER = "{user}"
# In a rule's user or role: any (authenticated user; role at all).
ANY = "*"
_PLACEHOLDER = re.compile(r"\{[^}]*\}")


def _check_filters(
    instance: object, attribute: "attrs.Attribute[list[str]]", value: list[str]
) -> None:
    for topic_filter in value:
        # A typo such as {username} would otherwise be a literal part of the topic.
        for placeholder in _PLACEHOLDER.findall(topic_filter):
            if placeholder != USER_PLACEHOLDER:
                raise ValueError(
                    f"{attribute.name}: {topic_filter!r}: unknown placeholder {placeholder} "
                    f"(only {USER_PLACEHOLDER} is substituted)"
                )
        try:
            check_filter(topic_filter.replace(USER_PLACEHOLDER, "u"), 65_536)
        except TopicError as error:
            raise ValueError(f"{attribute.name}: {topic_filter!r}: {error}") from None


def _check_name(instance: object, attribute: "attrs.Attribute[str | None]", value: Any) -> None:
    if value == "":
        raise ValueError(
            f"{attribute.name}: empty, which matches nobody; leave it out for every client, "
            f'or write "*" for every authenticated one'
        )


@attrs.frozen
class Rule:
    user: str | None = attrs.field(default=None, validator=_check_name)
    role: str | None = attrs.field(default=None, validator=_check_name)
    action: Literal["allow", "deny"] = attrs.field(
        default="allow", validator=attrs.validators.in_(["allow", "deny"])
    )
    subscribe: list[str] = attrs.field(factory=list, validator=_check_filters)
    publish: list[str] = attrs.field(factory=list, validator=_check_filters)

    def __attrs_post_init__(self) -> None:
        if not self.subscribe and not self.publish:
            raise ValueError(
                "a rule lists no 'subscribe' and no 'publish' filters, so it decides nothing; "
                'to make it allow everything, write subscribe = ["#"], publish = ["#"]'
            )

    def applies_to(self, user: str | None, roles: frozenset[str]) -> bool:
        if self.user is not None and (user is None or (self.user != ANY and self.user != user)):
            return False
        return self.role is None or (bool(roles) if self.role == ANY else self.role in roles)


def _user_filters(filters: list[str], user: str | None) -> list[str]:
    """The filters with ``{user}`` substituted; those where that is unsafe are left out."""
    if not user or any(ch in user for ch in "/+#"):
        return [f for f in filters if USER_PLACEHOLDER not in f]
    return [f.replace(USER_PLACEHOLDER, user) for f in filters]


class Acl(Plugin):
    @attrs.frozen
    class Options:
        rules: list[Rule] = attrs.field(factory=list)
        default: Literal["allow", "deny"] = attrs.field(
            default="deny", validator=attrs.validators.in_(["allow", "deny"])
        )

    options: Options

    def _decide(self, client: Client, kind: Literal["subscribe", "publish"], target: str) -> bool:
        identity = client.identity
        for rule in self.options.rules:
            if not rule.applies_to(identity.user, identity.roles):
                continue
            filters = _user_filters(getattr(rule, kind), identity.user)
            if not filters:
                continue
            if rule.action == "deny":
                if any(overlaps(f, target) for f in filters):
                    return False
            elif kind == "publish":
                if any(matches(f, target) for f in filters):
                    return True
            elif any(covers(f, target) for f in filters):
                return True
        return self.options.default == "allow"

    def authorize_subscribe(self, client: Client, topic_filter: str) -> None:
        if not self._decide(client, "subscribe", topic_filter):
            raise Refuse(f"not allowed to subscribe to {topic_filter!r}")

    def authorize_publish(self, client: Client, publication: Publication) -> Publication:
        if not self._decide(client, "publish", publication.topic):
            raise Refuse(f"not allowed to publish to {publication.topic!r}")
        return publication

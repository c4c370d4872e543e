"""jwt_auth: JSON Web Tokens (PyJWT), from ``Authorization: Bearer`` or ``?token=``.

The user is the ``sub`` claim, the roles the ``roles`` claim (a list of strings).
Optional ``subscribe`` and ``publish`` claims (lists of topic filters) restrict what
the token may do; a ``channels`` claim (filters too) subscribes the connection once it
is accepted (server-side subscriptions, which ``subscribe`` does not restrict). A
missing, invalid or expired token is refused with HTTP 401; a connection outliving its
token's ``exp`` is closed with 4001 "token expired", unless it sent a new token for the
same ``sub`` in a ``refresh`` request before.
"""

from pathlib import Path
from typing import Any

import attrs
import jwt

from broker.plugin import (
    Client,
    HandshakeRequest,
    Identity,
    Plugin,
    Publication,
    Refuse,
    TopicError,
    check_filter,
    covers,
    matches,
)

from .credentials import bearer_token

SYMMETRIC = {"HS256", "HS384", "HS512"}
ASYMMETRIC = {
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
}


def _check_algorithms(instance: Any, attribute: Any, value: list[str]) -> None:
    if not value:
        raise ValueError("algorithms: name at least one, e.g. ['HS256']")
    unknown = [a for a in value if a not in SYMMETRIC | ASYMMETRIC]
    if unknown:
        raise ValueError(f"algorithms: not supported: {unknown} ('none' never is)")
    if set(value) & SYMMETRIC and set(value) & ASYMMETRIC:
        raise ValueError("algorithms: do not mix HMAC (HS*) with public-key algorithms")


def _filters_claim(claims: dict[str, Any], name: str) -> list[str] | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise Refuse(f"invalid token: '{name}' must be a list of topic filters", status=401)
    for topic_filter in value:
        try:
            check_filter(topic_filter, 65_536)
        except TopicError:
            raise Refuse(f"invalid token: bad filter in '{name}'", status=401) from None
    return value


class JwtAuth(Plugin):
    @attrs.frozen
    class Options:
        algorithms: list[str] = attrs.field(validator=_check_algorithms)
        secret: str | None = attrs.field(default=None, repr=False)
        secret_file: str | None = None
        public_key_file: str | None = None
        audience: str | list[str] | None = None
        issuer: str | None = None
        leeway: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))

    options: Options

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        sources = [options.secret, options.secret_file, options.public_key_file]
        if options.audience == []:
            raise ValueError(
                "audience: an empty list accepts no token; leave it out to accept only tokens "
                "without 'aud'"
            )
        if sum(source is not None for source in sources) != 1:
            raise ValueError("set exactly one of 'secret', 'secret_file', 'public_key_file'")
        symmetric = bool(set(options.algorithms) & SYMMETRIC)
        if symmetric == (options.public_key_file is not None):
            raise ValueError(
                "HS* algorithms need 'secret' or 'secret_file'; "
                "public-key algorithms need 'public_key_file'"
            )
        key = options.secret
        if key is None:
            path = options.secret_file or options.public_key_file
            assert path is not None
            key = Path(path).read_text(encoding="utf-8").strip()
        if symmetric and len(key.encode()) < 32:
            raise ValueError("the HMAC secret must be at least 32 bytes long")
        self._key = key

    def authenticate(self, request: HandshakeRequest, identity: Identity) -> Identity:
        token = bearer_token(request)
        if token is None:
            raise Refuse("missing token", status=401)
        return self._identity(token)

    def refresh(self, client: Client, token: str) -> Identity:
        """A new token for the same ``sub``: its claims and expiry take over."""
        identity = self._identity(token)
        if identity.user != client.identity.user:
            raise Refuse("the new token is for another user")
        return identity

    def _identity(self, token: str) -> Identity:
        """Who the token says; Refuse (HTTP 401 at a handshake) if it says nothing valid."""
        options = self.options
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=options.algorithms,
                audience=options.audience,
                issuer=options.issuer,
                leeway=options.leeway,
                options={"require": ["sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Refuse("token expired", status=401) from None
        except jwt.InvalidTokenError as error:
            raise Refuse(f"invalid token: {type(error).__name__}", status=401) from None
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Refuse("invalid token: 'roles' must be a list of strings", status=401)
        for name in ("subscribe", "publish"):
            _filters_claim(claims, name)
        expires = claims.get("exp")
        return Identity(
            user=str(claims["sub"]),
            roles=frozenset(roles),
            claims=claims,
            expires_at=None if expires is None else float(expires) + options.leeway,
            channels=_filters_claim(claims, "channels") or (),
        )

    def authorize_subscribe(self, client: Client, topic_filter: str) -> None:
        allowed = client.identity.claims.get("subscribe")
        if allowed is not None and not any(covers(f, topic_filter) for f in allowed):
            raise Refuse(f"the token does not allow subscribing to {topic_filter!r}")

    def authorize_publish(self, client: Client, publication: Publication) -> Publication:
        allowed = client.identity.claims.get("publish")
        if allowed is not None and not any(matches(f, publication.topic) for f in allowed):
            raise Refuse(f"the token does not allow publishing to {publication.topic!r}")
        return publication

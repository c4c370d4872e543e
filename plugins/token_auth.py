"""token_auth: static API tokens, each mapped to a user and roles.

Tokens come from the ``tokens`` option and/or a TOML file (``tokens_file``, with the
same ``[[tokens]]`` tables), read when the config is loaded. The client sends one as
``Authorization: Bearer TOKEN`` or as the ``token`` query parameter. Tokens are
compared in constant time against every known token, and never logged.
"""

import hashlib
import hmac
import tomllib
from pathlib import Path

import attrs

from broker.options import OptionsError, structure_options
from broker.plugin import HandshakeRequest, Identity, Plugin, Refuse

from .credentials import bearer_token


@attrs.frozen
class Token:
    token: str = attrs.field(repr=False, validator=attrs.validators.min_len(16))
    user: str = attrs.field(validator=attrs.validators.min_len(1))
    roles: list[str] = attrs.field(factory=list)


@attrs.frozen
class TokensFile:
    tokens: list[Token]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenAuth(Plugin):
    @attrs.frozen
    class Options:
        tokens: list[Token] = attrs.field(factory=list)
        tokens_file: str | None = None
        # Without a token: refused with 401, or (required = false) let in anonymously.
        required: bool = True

    options: Options

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        tokens = list(options.tokens)
        if options.tokens_file is not None:
            tokens += self._read_file(Path(options.tokens_file))
        if not tokens:
            raise ValueError("no tokens: set 'tokens' or 'tokens_file'")
        self._known = [(_digest(t.token), t) for t in tokens]
        # Else one of the two entries would silently lose: which user is that token?
        seen: dict[bytes, int] = {}
        for index, (digest, _) in enumerate(self._known):
            if digest in seen:
                raise ValueError(
                    f"tokens {seen[digest]} and {index} are the same token "
                    "(counting 'tokens' first, then 'tokens_file'): give each client its own"
                )
            seen[digest] = index

    @staticmethod
    def _read_file(path: Path) -> list[Token]:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"tokens_file {str(path)!r}: invalid TOML: {error}") from None
        try:
            return structure_options(data, TokensFile, str(path)).tokens
        except OptionsError as error:
            raise ValueError(f"tokens_file: {error}") from None

    def _lookup(self, presented: str) -> Token | None:
        digest = _digest(presented)
        found = None
        for known_digest, token in self._known:  # no early exit: constant time
            if hmac.compare_digest(known_digest, digest):
                found = token
        return found

    async def authenticate(self, request: HandshakeRequest, identity: Identity) -> Identity | None:
        presented = bearer_token(request)
        if presented is None:
            if self.options.required:
                raise Refuse("missing token", status=401)
            return None
        token = self._lookup(presented)
        if token is None:
            raise Refuse("invalid token", status=401)
        return Identity(user=token.user, roles=frozenset(token.roles))

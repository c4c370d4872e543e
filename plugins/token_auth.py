"""token_auth: static API tokens, each mapped to a user and roles.

Tokens come from the ``tokens`` option and/or a TOML file (``tokens_file``, with the
same ``[[tokens]]`` tables), read when the config is loaded. The client sends one as
``Authorization: Bearer TOKEN`` or as the ``token`` query parameter. Tokens are
compared in constant time against every known token, and never logged.
"""

import tomllib
from pathlib import Path

import attrs

from broker.plugin import (
    DuplicateKey,
    HandshakeRequest,
    Identity,
    KeyTable,
    OptionsError,
    Plugin,
    Refuse,
    structure_options,
)

from .credentials import bearer_token


@attrs.frozen
class Token:
    token: str = attrs.field(repr=False, validator=attrs.validators.min_len(16))
    user: str = attrs.field(validator=attrs.validators.min_len(1))
    roles: list[str] = attrs.field(factory=list)


@attrs.frozen
class TokensFile:
    tokens: list[Token]


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
        try:
            self._known = KeyTable((t.token, t) for t in tokens)
        except DuplicateKey as twins:
            raise ValueError(
                f"tokens {twins.first} and {twins.second} are the same token "
                "(counting 'tokens' first, then 'tokens_file'): give each client its own"
            ) from None

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

    def authenticate(self, request: HandshakeRequest, identity: Identity) -> Identity | None:
        presented = bearer_token(request)
        if presented is None:
            if self.options.required:
                raise Refuse("missing token", status=401)
            return None
        token = self._known.lookup(presented)
        if token is None:
            raise Refuse("invalid token", status=401)
        return Identity(user=token.user, roles=frozenset(token.roles))

"""Bearer-token authentication for writes (and, optionally, reads).

Only SHA-256 digests of tokens are kept in memory, and a presented token is compared
against every digest with `hmac.compare_digest`, so neither timing nor a memory dump gives
a token away. Tokens never reach a log line: nothing here logs the Authorization header.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aiohttp import web

from service.domain.errors import Forbidden, InvalidInput, Unauthorized
from service.settings.model import AuthSettings

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READ, WRITE = "read", "write"
_CHALLENGE = 'Bearer realm="user-service"'


@dataclass(frozen=True, slots=True)
class _Grant:
    digest: bytes
    scopes: frozenset[str]


def _grant(entry: str, *, hashed: bool) -> _Grant:
    secret, read_only = (
        (entry[: -len(":read")], True) if entry.endswith(":read") else (entry, False)
    )
    digest = bytes.fromhex(secret) if hashed else hashlib.sha256(secret.encode()).digest()
    return _Grant(digest, frozenset({READ}) if read_only else frozenset({READ, WRITE}))


class TokenVerifier:
    def __init__(self, settings: AuthSettings) -> None:
        self.enabled = settings.configured
        self.protect_reads = settings.reads
        self._grants = [_grant(t, hashed=False) for t in settings.tokens] + [
            _grant(d, hashed=True) for d in settings.token_sha256
        ]

    def scopes_for(self, token: str) -> frozenset[str] | None:
        """The token's scopes, or None; every digest is compared, with no early exit."""
        presented = hashlib.sha256(token.encode()).digest()
        found: frozenset[str] | None = None
        for grant in self._grants:
            if hmac.compare_digest(grant.digest, presented):
                found = grant.scopes
        return found

    def required_scope(self, method: str) -> str | None:
        """The scope `method` needs on a route whose policy asks for a token."""
        if not self.enabled:
            return None
        if method in WRITE_METHODS:
            return WRITE
        return READ if self.protect_reads else None


def authorize(request: web.Request, verifier: TokenVerifier, needed: str) -> None:
    """Raise 401/403 unless the request's token has the `needed` scope (the middleware
    resolves it per route with `required_scope`, and calls this only when one is needed)."""
    presented = request.headers.getall("Authorization", ())
    if len(presented) > 1:
        # Which one counts is a guess a proxy in front may make differently: refuse both.
        raise InvalidInput(
            "Send one `Authorization` header; several are ambiguous.",
            errors=[{"pointer": "Authorization", "detail": "given more than once"}],
        )
    scheme, _, token = (presented[0] if presented else "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "This request needs an `Authorization: Bearer <token>` header.",
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    scopes = verifier.scopes_for(token)
    if scopes is None:
        raise Unauthorized(
            "The bearer token is not valid.",
            headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
        )
    if needed not in scopes:
        raise Forbidden(
            f"The bearer token lacks the {needed!r} scope.",
            headers={"WWW-Authenticate": f'{_CHALLENGE}, error="insufficient_scope"'},
        )

"""Paging cursors: a position, opaque to clients, signed with a secret from configuration.

A cursor is base64url(JSON position) + "." + base64url(HMAC-SHA256, 12 bytes). Without
the secret nobody can make one the service accepts, so a client cannot steer a query by
editing its position; the position is still validated as strictly as a request body
(types, bounds, no extra keys), in case the secret leaks. Cursors are signed with
`paging.cursor_secret` and accepted under it or `paging.cursor_secret_previous`, so a
secret can be rotated without breaking the pages clients are holding: set the old one as
previous, the new one as current, and drop the previous a page lifetime later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from typing import Annotated, Any, TypeVar

import msgspec

from service.domain.errors import InvalidInput
from service.domain.schemas import Id
from service.settings.model import PagingSettings

log = logging.getLogger(__name__)

_MAC_BYTES = 12
_YEAR_10000_MS = 253_402_300_800_000


class UserPosition(msgspec.Struct, forbid_unknown_fields=True):
    id: Id


class OrderPosition(msgspec.Struct, forbid_unknown_fields=True):
    t: Annotated[int, msgspec.Meta(ge=0, lt=_YEAR_10000_MS)]  # created_at, ms since the epoch
    id: Id


P = TypeVar("P", UserPosition, OrderPosition)


def _unpadded(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unbase64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Cursors:
    """Signs positions into cursors and reads back only the cursors it (or its
    predecessor secret) signed."""

    def __init__(self, secret: bytes, previous: bytes = b"") -> None:
        self._signing = secret
        self._accepted = (secret, previous) if previous else (secret,)

    def _mac(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, position: dict[str, Any]) -> str:
        payload = _unpadded(msgspec.json.encode(position)).encode()
        return f"{payload.decode()}.{_unpadded(self._mac(self._signing, payload))}"

    def decode(self, cursor: str, kind: type[P]) -> P:
        """The position in a cursor this service signed; anything else is a 400."""
        bad = InvalidInput(
            "The `after` cursor is not valid.",
            errors=[{"pointer": "after", "detail": "tampered or malformed"}],
        )
        payload, _, mac = cursor.partition(".")
        try:
            signed = payload.encode("ascii")
            given = _unbase64(mac)
            # Every accepted key is tried, so the time taken does not say which matched.
            matches = [hmac.compare_digest(self._mac(key, signed), given) for key in self._accepted]
            if not any(matches):
                raise bad
            return msgspec.json.decode(_unbase64(payload), type=kind)
        except (ValueError, msgspec.DecodeError):
            raise bad from None


def new_cursor_secret() -> str:
    """A random secret, for runs with none configured (development and test only)."""
    log.warning(
        "paging.cursor_secret (CURSOR_SECRET) is not set: cursors are signed with a secret "
        "generated for this process, so they stop working when it restarts and no other "
        "process accepts them"
    )
    return secrets.token_urlsafe(32)


def create_cursors(settings: PagingSettings) -> Cursors:
    """The cursor codec for these settings; production always has a secret (config.py)."""
    secret = settings.cursor_secret or new_cursor_secret()
    return Cursors(secret.encode(), settings.cursor_secret_previous.encode())

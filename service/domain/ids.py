"""Resource ids: opaque to clients, sortable by creation time for us.

24 characters of lower-case Crockford base32 (48 bits of milliseconds, 72 random bits):
string order is creation order, and every id fits the path rule `[A-Za-z0-9_-]{1,64}`.
"""

from __future__ import annotations

import re
import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ID_LENGTH = 24
# The path rule, in one place: schemas.py publishes it as the ids' pattern in OpenAPI.
PATH_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}\Z"
_PATH_ID = re.compile(PATH_ID_PATTERN)


def _encode(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(now_ms: int | None = None) -> str:
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    return _encode(millis & (2**48 - 1), 10) + _encode(secrets.randbits(70), 14)


def is_valid_path_id(value: str) -> bool:
    """Whether a path segment could be an id at all; anything else is a 404 without a query."""
    return _PATH_ID.match(value) is not None

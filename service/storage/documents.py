"""Stored documents to plain, JSON-ready data: the one place that knows BSON's shapes.

`_id` becomes `id`, datetimes (BSON keeps milliseconds, in UTC) become RFC 3339 strings, and
the bookkeeping fields the queries rely on stay inside.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.storage.indexes import IDEMPOTENCY_DIGEST, IDEMPOTENCY_KEY
from service.storage.mongo import Document

Plain = dict[str, Any]
# `version` drives ETags; `last_write` makes a retried update recognisable (UserQueries);
# the idempotency fields hold the key of the POST that created the document.
_HIDDEN_FIELDS = frozenset({"_id", "version", "last_write", IDEMPOTENCY_KEY, IDEMPOTENCY_DIGEST})


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds: the precision MongoDB stores."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> datetime:
    """The current time at the millisecond precision BSON keeps, so responses match storage."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def to_plain(document: Document) -> Plain:
    """`_id` becomes `id`, datetimes become RFC 3339 strings; bookkeeping fields stay inside."""
    plain: Plain = {"id": str(document["_id"])}
    for key, value in document.items():
        if key in _HIDDEN_FIELDS:
            continue
        plain[key] = format_time(value) if isinstance(value, datetime) else value
    return plain

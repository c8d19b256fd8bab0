"""What a response shows, and the entity tags that validate it.

A user's ETag is derived from the `version` its document carries (bumped by every write
that changes what `GET /users/{user_id}` shows); an order's from its id, as orders never
change. Bumping REPRESENTATION retires every tag handed out before a response shape changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.storage.documents import Plain
from service.storage.mongo import Document

ORDER_HISTORY_LIMIT = 100  # the newest orders `GET /users/{user_id}` lists with the user
REPRESENTATION = "1"  # bump when a response shape changes: old ETags then stop matching
ANY_TAG = "*"  # in a list of entity tags: any current representation


@dataclass(frozen=True, slots=True)
class Versioned:
    """A representation and its strong ETag."""

    data: Plain
    etag: str


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Plain]
    next: str | None


def user_etag(version: int) -> str:
    return f'"u{REPRESENTATION}-{version}"'


def order_etag(order_id: str) -> str:
    """Orders never change once written, so their id is a strong validator."""
    return f'"o{REPRESENTATION}-{order_id}"'


def versions_matching(tags: Sequence[str]) -> list[int]:
    """The user versions whose ETag is among `tags` (tags of other shapes match none)."""
    prefix = f'"u{REPRESENTATION}-'
    versions = []
    for tag in tags:
        if tag.startswith(prefix) and tag.endswith('"') and tag[len(prefix) : -1].isdigit():
            versions.append(int(tag[len(prefix) : -1]))
    return versions


def version_condition(
    if_match: Sequence[str] | None, if_none_match: Sequence[str] | None
) -> Document | None:
    """The filter on `version` that makes a write conditional; None for an unconditional one.

    `*` in If-Match asks only that the user exists (the write's own filter); `*` in
    If-None-Match asks that it does not, which no version of an existing user satisfies.
    """
    condition: Document = {}
    if if_match is not None and ANY_TAG not in if_match:
        condition["$in"] = versions_matching(if_match)
    if if_none_match is not None:
        if ANY_TAG in if_none_match:
            condition["$in"] = []
        else:
            condition["$nin"] = versions_matching(if_none_match)
    return condition or None

"""Idempotency-Key support: the key lives in the document its request creates.

A POST with a key writes the key and its request's digest into the new user or order, under a
unique index (indexes.py), so the outcome is exact however an attempt ends. A retry first looks
the key up: if any attempt's write landed, even one whose request already answered 503 or
lost its connection, that document is the answer. If none did, the retry writes it, and of
two writes racing with one key the index keeps the first. There is no record apart from the
write that an attempt dying at the wrong moment could leave behind, so no key can be stuck.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

from service.domain.errors import Unprocessable
from service.storage.indexes import IDEMPOTENCY_DIGEST, IDEMPOTENCY_KEY
from service.storage.mongo import Collection, Document, DuplicateKeyError


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's key and the digest of the request it came with (what a reuse must match)."""

    key: str
    digest: str

    @classmethod
    def of(cls, key: str, request: str, body: msgspec.Struct) -> IdempotencyKey:
        fingerprint = msgspec.json.encode([request, body], order="sorted")
        return cls(key, hashlib.sha256(fingerprint).hexdigest())

    def stamp(self) -> Document:
        return {IDEMPOTENCY_KEY: self.key, IDEMPOTENCY_DIGEST: self.digest}

    def query(self) -> Document:
        return {IDEMPOTENCY_KEY: self.key}

    def check(self, document: Document) -> Document:
        """The document this key created; 422 when the key came with another request."""
        if document.get(IDEMPOTENCY_DIGEST) != self.digest:
            raise Unprocessable("This Idempotency-Key was already used with a different request.")
        return document


async def insert_once(
    collection: Collection, document: Document, scope: Document
) -> Document | None:
    """Insert `document` and return what is stored: ours, or the document holding our key.

    A duplicate of our own fresh `_id` means an earlier attempt of this insert landed and
    its reply was lost. A duplicate key in `scope` means another attempt of the same request
    got there first. None: some other unique value (an email) belongs to someone else.
    """
    try:
        await collection.insert_one(document)
    except DuplicateKeyError:
        if await collection.find_one({"_id": document["_id"]}, {"_id": 1}):
            return document
        if IDEMPOTENCY_KEY not in document:
            return None
        holder: Document | None = await collection.find_one(
            {**scope, IDEMPOTENCY_KEY: document[IDEMPOTENCY_KEY]}
        )
        return holder
    return document

"""Demo data: deterministic ids, so that seeding twice inserts nothing new.

Bulk work is not request work. It runs on its own client whose timeouts fit a batch, not
a request (`bulk_settings`), it writes in batches of a bounded number of documents, and
what the data refuses (a demo email another user already has) is reported as skipped, with
the reason, never as a traceback. A user that cannot be inserted takes its orders with it:
the seed never leaves an order whose user does not exist.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from service.settings.model import MongoSettings
from service.storage.mongo import BulkWriteError, Collection, Document, Mongo

BATCH_DOCUMENTS = 500
# One batch of 500 small documents takes well under a second on a healthy server; these
# leave room for a slow or busy one without the 1.5 s meant for a request's reply.
BULK_SOCKET_TIMEOUT_MS = 60_000
BULK_SERVER_SELECTION_TIMEOUT_MS = 10_000
BULK_CONNECT_TIMEOUT_MS = 10_000
_DUPLICATE_KEY = 11000


def seed_id(kind: str, *numbers: int) -> str:
    digest = hashlib.sha256(f"{kind}:{':'.join(map(str, numbers))}".encode()).hexdigest()
    return f"{kind[0]}{digest[:23]}"


def bulk_settings(settings: MongoSettings) -> MongoSettings:
    """The service's database settings with timeouts for batches instead of requests."""
    return dataclasses.replace(
        settings,
        socket_timeout_ms=BULK_SOCKET_TIMEOUT_MS,
        server_selection_timeout_ms=BULK_SERVER_SELECTION_TIMEOUT_MS,
        connect_timeout_ms=BULK_CONNECT_TIMEOUT_MS,
    )


@dataclass(frozen=True, slots=True)
class Skipped:
    """A demo document the database refused, and why, in words for one line."""

    kind: str
    id: str
    reason: str


@dataclass
class SeedResult:
    users_inserted: int = 0
    orders_inserted: int = 0
    skipped: list[Skipped] = field(default_factory=list)


class Progress:
    """How far a long seed is: a bar redrawn in place on a terminal, otherwise a line
    every `every_seconds` (a log or a CI job keeps a readable record)."""

    BAR_WIDTH = 30

    def __init__(self, total: int, stream: TextIO, every_seconds: float = 5.0) -> None:
        self._total = max(total, 1)
        self._done = 0
        self._stream = stream
        self._terminal = stream.isatty()
        self._every = 0.1 if self._terminal else every_seconds
        self._last = time.monotonic()
        self._drawn = False

    def advance(self, count: int) -> None:
        self._done += count
        now = time.monotonic()
        if now - self._last < self._every and not (self._terminal and self._done >= self._total):
            return
        self._last = now
        share = min(1.0, self._done / self._total)
        counts = f"{self._done}/{self._total} documents"
        if self._terminal:
            filled = round(self.BAR_WIDTH * share)
            bar = "#" * filled + "." * (self.BAR_WIDTH - filled)
            self._stream.write(f"\rseed [{bar}] {share:4.0%} {counts}")
            self._drawn = True
        else:
            self._stream.write(f"seed: {share:.0%} ({counts})\n")
        self._stream.flush()

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()


def _user(number: int, base: datetime) -> Document:
    created = base + timedelta(minutes=number)
    return {
        "_id": seed_id("user", number),
        "name": f"Demo User {number}",
        "email": f"demo.user.{number}@example.com",
        "created_at": created,
        "updated_at": created,
    }


def _orders(number: int, count: int, user: Document) -> Iterator[Document]:
    for index in range(count):
        yield {
            "_id": seed_id("order", number, index),
            "user_id": user["_id"],
            "amount": 100 + (number * 37 + index * 101) % 99_900,
            "currency": "USD",
            "items": [{"sku": f"SKU-{(number + index) % 500:04d}", "quantity": 1 + index % 3}],
            "created_at": user["created_at"] + timedelta(hours=index + 1),
        }


def _batches(documents: Iterator[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for document in documents:
        batch.append(document)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _reason(error: dict[str, Any], document: Document) -> str:
    if error.get("code") == _DUPLICATE_KEY and "email" in (error.get("keyPattern") or {}):
        return f"its email {document['email']} belongs to another user"
    return f"the database refused it (code {error.get('code')}: {error.get('errmsg', '')})"


async def _insert_new(
    collection: Collection, documents: Sequence[Document]
) -> tuple[int, dict[str, str]]:
    """Insert the documents not stored yet: how many were inserted, and the ids refused
    with their reasons. An id that appeared meanwhile (another seed) is not refused."""
    ids = [document["_id"] for document in documents]
    existing = {doc["_id"] async for doc in collection.find({"_id": {"$in": ids}}, {"_id": 1})}
    fresh = [document for document in documents if document["_id"] not in existing]
    if not fresh:
        return 0, {}
    try:
        result = await collection.insert_many(fresh, ordered=False)
    except BulkWriteError as error:
        refused: dict[str, str] = {}
        for write_error in error.details.get("writeErrors", []):
            document = fresh[write_error["index"]]
            if "_id" in (write_error.get("keyPattern") or {}):
                continue
            refused[document["_id"]] = _reason(write_error, document)
        return int(error.details.get("nInserted", 0)), refused
    return len(result.inserted_ids), {}


async def seed(
    mongo: Mongo,
    users: int,
    orders_per_user: int,
    *,
    batch_documents: int = BATCH_DOCUMENTS,
    progress: Progress | None = None,
) -> SeedResult:
    """Insert demo users and their orders in batches, skipping those already there.

    The unique email index is created first: without it a demo user could take an email
    a real user has, instead of being skipped.
    """
    await mongo.ensure_indexes()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    result = SeedResult()
    users_per_batch = max(1, batch_documents // (1 + orders_per_user))
    for start in range(0, users, users_per_batch):
        numbers = range(start, min(users, start + users_per_batch))
        user_docs = [_user(number, base) for number in numbers]
        inserted, refused = await _insert_new(mongo.users, user_docs)
        result.users_inserted += inserted
        for user in user_docs:
            if user["_id"] in refused:
                reason = f"{refused[user['_id']]}; its {orders_per_user} orders skipped too"
                result.skipped.append(Skipped("user", user["_id"], reason))
        orders = (
            order
            for number, user in zip(numbers, user_docs, strict=True)
            if user["_id"] not in refused
            for order in _orders(number, orders_per_user, user)
        )
        for batch in _batches(orders, batch_documents):
            inserted, refused_orders = await _insert_new(mongo.orders, batch)
            result.orders_inserted += inserted
            result.skipped.extend(Skipped("order", i, why) for i, why in refused_orders.items())
            if progress is not None:
                progress.advance(len(batch))
        if progress is not None:
            progress.advance(len(user_docs) + len(refused) * orders_per_user)
    return result

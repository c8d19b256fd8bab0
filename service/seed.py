"""Demo data: deterministic ids so that seeding twice inserts nothing new."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from service.db import Collection, Document, Mongo

_BATCH = 1000


def seed_id(kind: str, *numbers: int) -> str:
    digest = hashlib.sha256(f"{kind}:{':'.join(map(str, numbers))}".encode()).hexdigest()
    return f"{kind[0]}{digest[:23]}"


@dataclass(frozen=True)
class SeedResult:
    users_inserted: int
    orders_inserted: int


async def _insert_new(collection: Collection, documents: list[Document]) -> int:
    """Insert the documents whose ids are not stored yet; return how many were inserted."""
    if not documents:
        return 0
    ids = [document["_id"] for document in documents]
    existing = {doc["_id"] async for doc in collection.find({"_id": {"$in": ids}}, {"_id": 1})}
    fresh = [document for document in documents if document["_id"] not in existing]
    if fresh:
        await collection.insert_many(fresh, ordered=False)
    return len(fresh)


async def seed(mongo: Mongo, users: int, orders_per_user: int) -> SeedResult:
    """Insert demo users and orders in bulk, skipping those already there."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    users_inserted = orders_inserted = 0
    for start in range(0, users, _BATCH):
        user_docs: list[Document] = []
        order_docs: list[Document] = []
        for number in range(start, min(users, start + _BATCH)):
            user_id = seed_id("user", number)
            created = base + timedelta(minutes=number)
            user_docs.append(
                {
                    "_id": user_id,
                    "name": f"Demo User {number}",
                    "email": f"demo.user.{number}@example.com",
                    "created_at": created,
                    "updated_at": created,
                }
            )
            for index in range(orders_per_user):
                order_docs.append(
                    {
                        "_id": seed_id("order", number, index),
                        "user_id": user_id,
                        "amount": 100 + (number * 37 + index * 101) % 99_900,
                        "currency": "USD",
                        "items": [
                            {"sku": f"SKU-{(number + index) % 500:04d}", "quantity": 1 + index % 3}
                        ],
                        "created_at": created + timedelta(hours=index + 1),
                    }
                )
        users_inserted += await _insert_new(mongo.users, user_docs)
        orders_inserted += await _insert_new(mongo.orders, order_docs)
    return SeedResult(users_inserted, orders_inserted)

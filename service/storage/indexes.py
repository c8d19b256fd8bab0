"""The indexes the service relies on, and the document fields they constrain.

A POST's Idempotency-Key is stored in the document it creates (service/storage/idempotency.py);
the unique indexes below are what makes a key create at most one user, or one order per user.
Creating an index that exists is a no-op, so every start may ask for all of them.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

IDEMPOTENCY_KEY, IDEMPOTENCY_DIGEST = "idempotency_key", "idempotency_digest"
_HAS_KEY = {IDEMPOTENCY_KEY: {"$exists": True}}
INDEXES: dict[str, list[IndexModel]] = {
    "users": [
        IndexModel([("email", ASCENDING)], unique=True, name="email_unique"),
        IndexModel(
            [(IDEMPOTENCY_KEY, ASCENDING)],
            unique=True,
            partialFilterExpression=_HAS_KEY,
            name="idempotency_key_unique",
        ),
    ],
    "orders": [
        IndexModel(
            [("user_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
            name="user_newest_first",
        ),
        IndexModel(
            [("user_id", ASCENDING), (IDEMPOTENCY_KEY, ASCENDING)],
            unique=True,
            partialFilterExpression=_HAS_KEY,
            name="idempotency_key_unique",
        ),
    ],
}


async def create_indexes(database: AsyncDatabase[Any]) -> None:
    """Create every index in INDEXES (Motor's database answers the same awaited calls)."""
    for name, models in INDEXES.items():
        await database[name].create_indexes(models)

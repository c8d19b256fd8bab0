"""Queries on the orders collection, each under the retry policy.

Orders never change once written; a user's orders are listed newest first, by the index
`user_newest_first` (service/storage/indexes.py).
"""

from __future__ import annotations

from datetime import datetime

from service.storage.idempotency import IdempotencyKey, insert_once
from service.storage.mongo import Document, Mongo
from service.storage.retry import RetryPolicy, retried


class OrderQueries:
    """The orders collection's reads and writes, as the use cases need them."""

    def __init__(self, mongo: Mongo, policy: RetryPolicy) -> None:
        self._mongo = mongo
        self.policy = policy

    @retried("orders.newest_for_user")
    async def newest_for_user(
        self, user_id: str, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Document]:
        """Up to `limit` of the user's orders, newest first, after (created_at, id) if given."""
        query: Document = {"user_id": user_id}
        if after is not None:
            created, order_id = after
            query["$or"] = [
                {"created_at": {"$lt": created}},
                {"created_at": created, "_id": {"$lt": order_id}},
            ]
        cursor = self._mongo.orders.find(query).sort([("created_at", -1), ("_id", -1)]).limit(limit)
        return await cursor.to_list(length=limit)

    @retried("orders.find")
    async def find(self, order_id: str) -> Document | None:
        return await self._mongo.orders.find_one({"_id": order_id})

    @retried("orders.find_by_key")
    async def find_by_key(self, user_id: str, key: IdempotencyKey) -> Document | None:
        return await self._mongo.orders.find_one({"user_id": user_id, **key.query()})

    @retried("orders.insert")
    async def insert(self, document: Document) -> Document | None:
        """Insert; the stored order: ours, or the one an earlier attempt with our key made
        (None if that one was deleted, with its user, in between)."""
        return await insert_once(self._mongo.orders, document, {"user_id": document["user_id"]})

    @retried("orders.delete")
    async def delete(self, order_id: str) -> None:
        await self._mongo.orders.delete_one({"_id": order_id})

    @retried("orders.ids_for_user")
    async def ids_for_user(self, user_id: str) -> list[str]:
        cursor = self._mongo.orders.find({"user_id": user_id}, {"_id": 1})
        return [str(document["_id"]) async for document in cursor]

    @retried("orders.delete_for_user")
    async def delete_for_user(self, user_id: str) -> int:
        result = await self._mongo.orders.delete_many({"user_id": user_id})
        return int(result.deleted_count)

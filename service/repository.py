"""Queries on users and orders: documents in, plain JSON-ready data out.

Nothing here knows about HTTP; nothing above here knows about BSON or the driver.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from service.db import Document, Mongo
from service.errors import NotFound

ORDER_HISTORY_LIMIT = 100
Plain = dict[str, Any]


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds: the precision MongoDB stores."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_plain(document: Document) -> Plain:
    """`_id` becomes `id`, datetimes become RFC 3339 strings, other values pass through."""
    plain: Plain = {"id": str(document["_id"])}
    for key, value in document.items():
        if key == "_id":
            continue
        plain[key] = format_time(value) if isinstance(value, datetime) else value
    return plain


def user_to_plain(document: Document) -> Plain:
    return to_plain(document)


def order_to_plain(document: Document) -> Plain:
    return to_plain(document)


class UsersRepository:
    def __init__(self, mongo: Mongo) -> None:
        self._mongo = mongo

    async def find(self, user_id: str) -> Plain | None:
        document = await self._mongo.users.find_one({"_id": user_id})
        return None if document is None else user_to_plain(document)


class OrdersRepository:
    def __init__(self, mongo: Mongo) -> None:
        self._mongo = mongo

    async def newest_for_user(self, user_id: str, limit: int = ORDER_HISTORY_LIMIT) -> list[Plain]:
        cursor = (
            self._mongo.orders.find({"user_id": user_id})
            .sort([("created_at", -1), ("_id", -1)])
            .limit(limit)
        )
        return [order_to_plain(document) for document in await cursor.to_list(length=limit)]


class Repository:
    """The handlers' single entry point: the use cases that span both collections."""

    def __init__(self, mongo: Mongo) -> None:
        self.users = UsersRepository(mongo)
        self.orders = OrdersRepository(mongo)

    async def get_user_with_orders(self, user_id: str) -> Plain:
        """The user and their newest orders, both queries in flight at once."""
        user, orders = await asyncio.gather(
            self.users.find(user_id), self.orders.newest_for_user(user_id)
        )
        if user is None:
            raise NotFound(f"No user with id {user_id!r}.")
        return {"user": user, "orders": orders}


REPOSITORY = web.AppKey("repository", Repository)

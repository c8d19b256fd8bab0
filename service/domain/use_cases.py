"""The use cases behind the handlers, and the business rules that span users and orders.

Handlers call these and get plain, JSON-ready data back (or its encoded form, from the
response cache): nothing here knows about HTTP, and only the queries below it
(service/storage/users.py, orders.py) speak to the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import NoReturn

import msgspec
import orjson
from aiohttp import web

from service.cache.response_cache import Cached, ResponseCache
from service.domain.cursors import Cursors, OrderPosition, UserPosition
from service.domain.errors import InvalidInput, NotFound, PreconditionFailed, Unavailable
from service.domain.ids import new_id
from service.domain.representation import (
    ANY_TAG,
    ORDER_HISTORY_LIMIT,
    Page,
    Versioned,
    order_etag,
    user_etag,
    version_condition,
)
from service.domain.schemas import OrderCreate, UserCreate, UserPatch
from service.storage.documents import Plain, now, to_plain
from service.storage.idempotency import IdempotencyKey
from service.storage.mongo import Document
from service.storage.orders import OrderQueries
from service.storage.users import UserQueries


class _UseCases:
    """What the use cases share: the queries, the response cache (None: off), the cursors."""

    def __init__(
        self,
        users: UserQueries,
        orders: OrderQueries,
        cache: ResponseCache | None,
        cursors: Cursors,
    ) -> None:
        self.users = users
        self.orders = orders
        self._cache = cache
        self._cursors = cursors

    async def _cached(
        self, kind: str, ident: str, load: Callable[[], Awaitable[Versioned]]
    ) -> Cached:
        """The encoded representation, from the response cache when there is one."""

        async def encode() -> Cached:
            versioned = await load()
            return Cached(versioned.etag, orjson.dumps(versioned.data))

        if self._cache is None:
            return await encode()
        return await self._cache.read_through(kind, ident, encode)

    async def _invalidate(self, *entries: tuple[str, str]) -> None:
        if self._cache is None or await self._cache.invalidate(entries):
            return
        if self._cache.invalidations_must_land:  # Sentinel: see service/cache/sentinel.py
            raise Unavailable("Stored, but the cache did not confirm retiring the old answer.")


class UserUseCases(_UseCases):
    """Users: each with their newest orders, and the writes conditional on their ETag."""

    def cached_user_with_orders(self, user_id: str) -> Cached | None:
        """`user_with_orders` when the cache answers without waiting (a memory hit);
        None: await `user_with_orders`."""
        return None if self._cache is None else self._cache.peek("user", user_id)

    async def user_with_orders(self, user_id: str) -> Cached:
        return await self._cached("user", user_id, lambda: self.get_user_with_orders(user_id))

    async def get_user_with_orders(self, user_id: str) -> Versioned:
        """The user and their newest orders, both queries in flight at once."""
        user, orders = await asyncio.gather(
            self.users.find_document(user_id),
            self.orders.newest_for_user(user_id, ORDER_HISTORY_LIMIT),
        )
        if user is None:
            raise NotFound(f"No user with id {user_id!r}.")
        aggregate = {"user": to_plain(user), "orders": [to_plain(order) for order in orders]}
        return Versioned(aggregate, user_etag(int(user.get("version", 0))))

    async def create_user(self, data: UserCreate, idempotency_key: str | None) -> Plain:
        """A new user; with a key, the user that key created if any attempt of it landed."""
        key = (
            None
            if idempotency_key is None
            else IdempotencyKey.of(idempotency_key, "POST /users", data)
        )
        if key is not None and (found := await self.users.find_by_key(key)) is not None:
            return to_plain(key.check(found))
        moment = now()
        document = {
            "_id": new_id(),
            "name": data.name.strip(),
            "email": data.email.lower(),
            "created_at": moment,
            "updated_at": moment,
            "version": 0,
        }
        if key is not None:
            document.update(key.stamp())
        stored = await self.users.insert(document)
        return to_plain(stored if key is None else key.check(stored))

    async def list_users(self, limit: int, after: str | None) -> Page:
        after_id = None if after is None else self._cursors.decode(after, UserPosition).id
        documents = await self.users.page(limit + 1, after_id)
        items = [to_plain(document) for document in documents[:limit]]
        more = len(documents) > limit
        return Page(items, self._cursors.encode({"id": items[-1]["id"]}) if more else None)

    async def find_user_by_email(self, email: str) -> Page:
        """The one user with this email, as a page of one or none (stored lower-cased, so
        the match is case-insensitive)."""
        document = await self.users.find_by_email(email.lower())
        return Page([] if document is None else [to_plain(document)], None)

    async def update_user(
        self,
        user_id: str,
        patch: UserPatch,
        if_match: Sequence[str] | None,
        if_none_match: Sequence[str] | None = None,
    ) -> Versioned:
        changes = user_changes(patch)
        changes["updated_at"] = now()
        condition = version_condition(if_match, if_none_match)
        updated = await self.users.update(user_id, changes, condition)
        if updated is None:
            await explain_miss(self.users, user_id, if_match, if_none_match)
        await self._invalidate(("user", user_id))
        return Versioned(to_plain(updated), user_etag(int(updated["version"])))

    async def delete_user(
        self,
        user_id: str,
        if_match: Sequence[str] | None,
        if_none_match: Sequence[str] | None = None,
    ) -> None:
        """Delete the user, then their orders (a user's orders never outlive them)."""
        condition = version_condition(if_match, if_none_match)
        order_ids = await self.orders.ids_for_user(user_id)
        if not await self.users.delete(user_id, condition):
            try:
                await explain_miss(self.users, user_id, if_match, if_none_match)
            except NotFound:
                # A repeat of a DELETE answered 503 (invalidation unconfirmed) confirms it now.
                await self._invalidate(("user", user_id))
                raise
        await self.orders.delete_for_user(user_id)
        await self._invalidate(("user", user_id), *(("order", order_id) for order_id in order_ids))


def user_changes(patch: UserPatch) -> Document:
    """The fields a PATCH sets, normalised as on create; 400 when it sets none."""
    changes: Document = {}
    if isinstance(patch.name, str):
        changes["name"] = patch.name.strip()
    if isinstance(patch.email, str):
        changes["email"] = patch.email.lower()
    if not changes:
        raise InvalidInput(
            "Send at least one of `name`, `email`.",
            errors=[{"pointer": "", "detail": "empty patch"}],
        )
    return changes


async def explain_miss(
    users: UserQueries,
    user_id: str,
    if_match: Sequence[str] | None,
    if_none_match: Sequence[str] | None,
) -> NoReturn:
    """A write matched nothing: the user is gone, or a precondition failed (which one)."""
    version = None
    if if_match is not None or if_none_match is not None:
        version = await users.version(user_id)
    if version is None:
        raise NotFound(f"No user with id {user_id!r}.")
    current = user_etag(version)
    if if_none_match is not None and (ANY_TAG in if_none_match or current in if_none_match):
        if ANY_TAG in if_none_match:
            raise PreconditionFailed("The user exists; `If-None-Match: *` asks that it not.")
        raise PreconditionFailed("The user's current ETag is one If-None-Match lists.")
    raise PreconditionFailed("The user has changed since the given ETag (If-Match).")


class OrderUseCases(_UseCases):
    """A user's orders: created once per Idempotency-Key, never left without their user."""

    def cached_order(self, order_id: str) -> Cached | None:
        """`order` when the cache answers without waiting; None: await `order`."""
        return None if self._cache is None else self._cache.peek("order", order_id)

    async def order(self, order_id: str) -> Cached:
        return await self._cached("order", order_id, lambda: self.get_order(order_id))

    async def get_order(self, order_id: str) -> Versioned:
        document = await self.orders.find(order_id)
        if document is None:
            raise NotFound(f"No order with id {order_id!r}.")
        return Versioned(to_plain(document), order_etag(order_id))

    async def create_order(
        self, user_id: str, data: OrderCreate, idempotency_key: str | None
    ) -> Plain:
        """A new order; with a key, the order that key created if any attempt of it landed."""
        key = None
        if idempotency_key is not None:
            request = f"POST /users/{user_id}/orders"
            key = IdempotencyKey.of(idempotency_key, request, data)
            found = await self.orders.find_by_key(user_id, key)
            if found is not None:
                # The attempt that stored it may have died before invalidating the cache.
                await self._invalidate(("user", user_id))
                return to_plain(key.check(found))
        # Bumping the user's version both proves the user exists and retires the
        # aggregate's ETag, which is about to change.
        if not await self.users.bump_version(user_id):
            raise NotFound(f"No user with id {user_id!r}.")
        order_id = new_id()
        document = {
            "_id": order_id,
            "user_id": user_id,
            "amount": data.amount,
            "currency": data.currency,
            "items": [msgspec.structs.asdict(item) for item in data.items],
            "created_at": now(),
        }
        if key is not None:
            document.update(key.stamp())
        stored = await self.orders.insert(document)
        if stored is None or not await self.users.exists(user_id):
            # The user was deleted while we wrote: do not leave an orphan behind.
            await self.orders.delete(order_id)
            raise NotFound(f"No user with id {user_id!r}.")
        await self._invalidate(("user", user_id))  # the aggregate lists this order now
        return to_plain(stored if key is None else key.check(stored))

    async def list_orders(self, user_id: str, limit: int, after: str | None) -> Page:
        position = None
        if after is not None:
            cursor = self._cursors.decode(after, OrderPosition)
            position = (datetime.fromtimestamp(cursor.t / 1000, UTC), cursor.id)
        exists, documents = await asyncio.gather(
            self.users.exists(user_id), self.orders.newest_for_user(user_id, limit + 1, position)
        )
        if not exists:
            raise NotFound(f"No user with id {user_id!r}.")
        shown = documents[:limit]
        next_cursor = None
        if len(documents) > limit:
            last = shown[-1]
            millis = int(last["created_at"].timestamp() * 1000)
            next_cursor = self._cursors.encode({"t": millis, "id": last["_id"]})
        return Page([to_plain(document) for document in shown], next_cursor)


USER_USE_CASES = web.AppKey("user_use_cases", UserUseCases)
ORDER_USE_CASES = web.AppKey("order_use_cases", OrderUseCases)

"""Queries on users and orders, and the use cases that span them.

Documents in, plain JSON-ready data out: nothing here knows about HTTP, and nothing above
here knows about BSON or the driver. Every user document carries a `version`, bumped by
each write that changes what `GET /users/{user_id}` shows (a PATCH, a new order); the
aggregate's ETag is derived from it, which makes `If-Match` one conditional update.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from aiohttp import web

from service.cache.responses import Cached, ResponseCache
from service.domain.cursors import Cursors, OrderPosition, UserPosition
from service.domain.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
from service.domain.ids import new_id
from service.domain.schemas import OrderCreate, UserCreate, UserPatch
from service.storage.idempotency import IdempotencyKey, insert_once
from service.storage.indexes import IDEMPOTENCY_DIGEST, IDEMPOTENCY_KEY
from service.storage.mongo import Document, DuplicateKeyError, Mongo
from service.storage.retry import RetryPolicy, call_with_retries, retried

ORDER_HISTORY_LIMIT = 100
REPRESENTATION = "1"  # bump when a response shape changes: old ETags then stop matching
ANY_TAG = "*"  # in a list of entity tags: any current representation
Plain = dict[str, Any]
# `version` drives ETags; `last_write` makes a retried update recognisable (see _apply_once);
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


# --- collections ---------------------------------------------------------------------


class UsersRepository:
    def __init__(self, mongo: Mongo, policy: RetryPolicy) -> None:
        self._mongo = mongo
        self._policy = policy

    @retried("users.find")
    async def find_document(self, user_id: str) -> Document | None:
        return await self._mongo.users.find_one({"_id": user_id})

    @retried("users.exists")
    async def exists(self, user_id: str) -> bool:
        return await self._mongo.users.find_one({"_id": user_id}, {"_id": 1}) is not None

    @retried("users.find_by_key")
    async def find_by_key(self, key: IdempotencyKey) -> Document | None:
        return await self._mongo.users.find_one(key.query())

    @retried("users.insert")
    async def insert(self, document: Document) -> Document:
        """Insert; the stored user: ours, or the one an earlier attempt with our key made."""
        stored = await insert_once(self._mongo.users, document, {})
        if stored is None:
            raise Conflict("A user with this email already exists.")
        return stored

    @retried("users.page")
    async def page(self, limit: int, after_id: str | None) -> list[Document]:
        query: Document = {} if after_id is None else {"_id": {"$gt": after_id}}
        cursor = self._mongo.users.find(query).sort("_id", 1).limit(limit)
        return await cursor.to_list(length=limit)

    @retried("users.version")
    async def version(self, user_id: str) -> int | None:
        """The user's current version, None when there is no such user."""
        document = await self._mongo.users.find_one({"_id": user_id}, {"version": 1})
        return None if document is None else int(document.get("version", 0))

    async def update(
        self, user_id: str, changes: Document, version: Document | None
    ) -> Document | None:
        """Apply `changes` if the user exists (and its version meets `version`, when given)."""
        query: Document = {"_id": user_id}
        if version is not None:
            query["version"] = version
        try:
            return await self._apply_once(query, {"$set": changes, "$inc": {"version": 1}})
        except DuplicateKeyError:
            raise Conflict("A user with this email already exists.") from None

    async def bump_version(self, user_id: str) -> bool:
        """Bump the version, once however often it is retried; False when there is no user.

        An update_one, not a find_one_and_update: nothing is returned, and findAndModify
        costs several times more (on SecantusDB seven times; on MongoDB it also records
        a pre-image). The same `last_write` token makes a retry idempotent.
        """
        token = new_id()

        async def attempt() -> bool:
            users = self._mongo.users
            result = await users.update_one(
                {"_id": user_id, "last_write": {"$ne": token}},
                {"$inc": {"version": 1}, "$set": {"last_write": token}},
            )
            if result.matched_count:
                return True
            # Nothing matched: there is no such user, or an earlier attempt of ours landed
            # (its reply lost). Ask whether the user exists, not whether our token is still
            # there: a concurrent write to the same user may have replaced it since, which
            # would turn an existing user's order into a 404.
            return await users.find_one({"_id": user_id}, {"_id": 1}) is not None

        return await call_with_retries(self._policy, "users.update", attempt)

    async def _apply_once(self, query: Document, update: Document) -> Document | None:
        """find_one_and_update that a retry cannot apply twice.

        Each logical write carries a fresh token in `last_write`, and the filter excludes
        documents that already carry it: if an attempt landed but its reply was lost, the
        retry matches nothing, and the document holding our token is the result.
        """
        token = new_id()  # one per logical write, shared by all of its attempts
        guarded = {**query, "last_write": {"$ne": token}}
        update = {**update, "$set": {**update.get("$set", {}), "last_write": token}}

        async def attempt() -> Document | None:
            users = self._mongo.users
            # None when nothing matched (Motor's stub says otherwise).
            result: Document | None = await users.find_one_and_update(
                guarded, update, return_document=True
            )
            if result is None:
                result = await users.find_one({"_id": query["_id"], "last_write": token})
            return result

        return await call_with_retries(self._policy, "users.update", attempt)

    async def delete(self, user_id: str, version: Document | None) -> bool:
        query: Document = {"_id": user_id}
        if version is not None:
            query["version"] = version
        attempts = 0

        async def attempt() -> bool:
            nonlocal attempts
            attempts += 1
            result = await self._mongo.users.delete_one(query)
            # Nothing deleted on a retry: the attempt whose reply was lost deleted it.
            return result.deleted_count == 1 or attempts > 1

        return await call_with_retries(self._policy, "users.delete", attempt)


class OrdersRepository:
    def __init__(self, mongo: Mongo, policy: RetryPolicy) -> None:
        self._mongo = mongo
        self._policy = policy

    @retried("orders.newest_for_user")
    async def newest_for_user(
        self,
        user_id: str,
        limit: int = ORDER_HISTORY_LIMIT,
        after: tuple[datetime, str] | None = None,
    ) -> list[Document]:
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


# --- use cases -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Versioned:
    """A representation and its strong ETag."""

    data: Plain
    etag: str


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Plain]
    next: str | None


class Repository:
    """The handlers' single entry point: the use cases and the business rules behind them."""

    def __init__(
        self, mongo: Mongo, policy: RetryPolicy, cache: ResponseCache | None, cursors: Cursors
    ) -> None:
        self.users = UsersRepository(mongo, policy)
        self.orders = OrdersRepository(mongo, policy)
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
        if self._cache is not None:
            await self._cache.invalidate(entries)

    def cached_user_with_orders(self, user_id: str) -> Cached | None:
        """`user_with_orders` when the cache answers without waiting (a memory hit);
        None: await `user_with_orders`."""
        return None if self._cache is None else self._cache.peek("user", user_id)

    def cached_order(self, order_id: str) -> Cached | None:
        """`order` when the cache answers without waiting; None: await `order`."""
        return None if self._cache is None else self._cache.peek("order", order_id)

    async def user_with_orders(self, user_id: str) -> Cached:
        return await self._cached("user", user_id, lambda: self.get_user_with_orders(user_id))

    async def order(self, order_id: str) -> Cached:
        return await self._cached("order", order_id, lambda: self.get_order(order_id))

    async def get_user_with_orders(self, user_id: str) -> Versioned:
        """The user and their newest orders, both queries in flight at once."""
        user, orders = await asyncio.gather(
            self.users.find_document(user_id), self.orders.newest_for_user(user_id)
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

    async def update_user(
        self,
        user_id: str,
        patch: UserPatch,
        if_match: Sequence[str] | None,
        if_none_match: Sequence[str] | None = None,
    ) -> Versioned:
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
        changes["updated_at"] = now()
        condition = version_condition(if_match, if_none_match)
        updated = await self.users.update(user_id, changes, condition)
        if updated is None:
            await self._explain_miss(user_id, if_match, if_none_match)
        assert updated is not None
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
            await self._explain_miss(user_id, if_match, if_none_match)
        await self.orders.delete_for_user(user_id)
        await self._invalidate(("user", user_id), *(("order", order_id) for order_id in order_ids))

    async def _explain_miss(
        self, user_id: str, if_match: Sequence[str] | None, if_none_match: Sequence[str] | None
    ) -> None:
        """A write matched nothing: the user is gone, or a precondition failed (which one)."""
        version = None
        if if_match is not None or if_none_match is not None:
            version = await self.users.version(user_id)
        if version is None:
            raise NotFound(f"No user with id {user_id!r}.")
        current = user_etag(version)
        if if_none_match is not None and (ANY_TAG in if_none_match or current in if_none_match):
            if ANY_TAG in if_none_match:
                raise PreconditionFailed("The user exists; `If-None-Match: *` asks that it not.")
            raise PreconditionFailed("The user's current ETag is one If-None-Match lists.")
        raise PreconditionFailed("The user has changed since the given ETag (If-Match).")

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

    async def get_order(self, order_id: str) -> Versioned:
        document = await self.orders.find(order_id)
        if document is None:
            raise NotFound(f"No order with id {order_id!r}.")
        return Versioned(to_plain(document), order_etag(order_id))


REPOSITORY = web.AppKey("repository", Repository)

"""Queries on the users collection, each under the retry policy.

Every user document carries a `version`, bumped by each write that changes what
`GET /users/{user_id}` shows (a PATCH, a new order); the aggregate's ETag is derived from
it, which makes `If-Match` one conditional update. Writes that a retry could apply twice
carry a fresh `last_write` token, so an attempt whose reply was lost is recognised.
"""

from __future__ import annotations

from service.domain.errors import Conflict
from service.domain.ids import new_id
from service.storage.idempotency import IdempotencyKey, insert_once
from service.storage.mongo import Collection, Document, DuplicateKeyError, Mongo
from service.storage.retry import RetryPolicy, call_with_retries, retried


class UserQueries:
    """The users collection's reads and writes, as the use cases need them."""

    def __init__(self, mongo: Mongo, policy: RetryPolicy) -> None:
        self._mongo = mongo
        self.policy = policy

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

    @retried("users.find_by_email")
    async def find_by_email(self, email: str) -> Document | None:
        """The user with this (lower-cased) email: one `find` on the unique index."""
        return await self._mongo.users.find_one({"email": email})

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
            changed = {"$set": changes, "$inc": {"version": 1}}
            return await update_once(self._mongo.users, self.policy, query, changed)
        except DuplicateKeyError:
            raise Conflict("A user with this email already exists.") from None

    async def bump_version(self, user_id: str) -> bool:
        """Bump the version, once however often it is retried; False when there is no user.

        An update_one, not a find_one_and_update: nothing is returned, and findAndModify
        costs several times more (on MongoDB it also records a pre-image). The same
        `last_write` token makes a retry idempotent.
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

        return await call_with_retries(self.policy, "users.update", attempt)

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

        return await call_with_retries(self.policy, "users.delete", attempt)


async def update_once(
    users: Collection, policy: RetryPolicy, query: Document, update: Document
) -> Document | None:
    """find_one_and_update that a retry cannot apply twice.

    Each logical write carries a fresh token in `last_write`, and the filter excludes
    documents that already carry it: if an attempt landed but its reply was lost, the
    retry matches nothing, and the document holding our token is the result.
    """
    token = new_id()  # one per logical write, shared by all of its attempts
    guarded = {**query, "last_write": {"$ne": token}}
    update = {**update, "$set": {**update.get("$set", {}), "last_write": token}}

    async def attempt() -> Document | None:
        # None when nothing matched (Motor's stub says otherwise).
        result: Document | None = await users.find_one_and_update(
            guarded, update, return_document=True
        )
        if result is None:
            result = await users.find_one({"_id": query["_id"], "last_write": token})
        return result

    return await call_with_retries(policy, "users.update", attempt)

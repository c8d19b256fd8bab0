"""Idempotency-Key support: a repeated POST returns the original result and creates nothing.

The key's record is inserted *before* the work starts, under a unique `_id`, so concurrent
repeats collapse onto one record: the first does the work, the others wait for its result.
Only successful creations are remembered; a failed attempt removes its record, so the
client may retry with the same key. Records expire after 24 hours (a TTL index in db.py).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from service.db import Document, DuplicateKeyError, Mongo
from service.errors import Conflict, Unprocessable
from service.ids import new_id
from service.retry import RetryPolicy, retried

WAIT_FOR_FIRST_SECONDS = 1.5
_POLL_SECONDS = 0.02
Result = dict[str, Any]


class IdempotencyStore:
    def __init__(self, mongo: Mongo, policy: RetryPolicy) -> None:
        self._records = mongo.idempotency
        self._policy = policy

    @retried("idempotency.claim")
    async def _claim(self, record: Document) -> Document | None:
        """Insert our record; on a clash return the record holding the key ({} if it just left).

        The record carries an `owner` token, so a retried insert whose first attempt landed
        finds its own record and knows the key is ours.
        """
        try:
            await self._records.insert_one(record)
        except DuplicateKeyError:
            holder = await self._records.find_one({"_id": record["_id"]})
            if holder is None:
                return {}
            if holder.get("owner") != record["owner"]:
                return holder
        return None

    @retried("idempotency.release")
    async def _release(self, key: str, owner: str) -> None:
        await self._records.delete_one({"_id": key, "owner": owner, "state": "pending"})

    @retried("idempotency.complete")
    async def _complete(self, key: str, result: Result) -> None:
        await self._records.update_one({"_id": key}, {"$set": {"state": "done", "result": result}})

    async def run(
        self, key: str, fingerprint: bytes, create: Callable[[], Awaitable[Result]]
    ) -> Result:
        digest = hashlib.sha256(fingerprint).hexdigest()
        owner = new_id()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_FOR_FIRST_SECONDS
        record: Document = {"_id": key, "owner": owner, "fingerprint": digest, "state": "pending"}
        while (
            holder := await self._claim({**record, "created_at": datetime.now(UTC)})
        ) is not None:
            if not holder:
                continue  # the first attempt failed and let go of the key: take it
            if holder["fingerprint"] != digest:
                raise Unprocessable(
                    "This Idempotency-Key was already used with a different request."
                )
            if holder["state"] == "done":
                result: Result = holder["result"]
                return result
            if loop.time() > deadline:
                raise Conflict(
                    "A request with this Idempotency-Key is still in progress; retry shortly."
                )
            await asyncio.sleep(_POLL_SECONDS)
        try:
            result = await create()
        except BaseException:
            await self._release(key, owner)
            raise
        await self._complete(key, result)
        return result

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

from service.db import DuplicateKeyError, Mongo
from service.errors import Conflict, Unprocessable

WAIT_FOR_FIRST_SECONDS = 1.5
_POLL_SECONDS = 0.02
Result = dict[str, Any]


class IdempotencyStore:
    def __init__(self, mongo: Mongo) -> None:
        self._records = mongo.idempotency

    async def run(
        self, key: str, fingerprint: bytes, create: Callable[[], Awaitable[Result]]
    ) -> Result:
        digest = hashlib.sha256(fingerprint).hexdigest()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_FOR_FIRST_SECONDS
        while True:
            try:
                await self._records.insert_one(
                    {
                        "_id": key,
                        "fingerprint": digest,
                        "state": "pending",
                        "created_at": datetime.now(UTC),
                    }
                )
            except DuplicateKeyError:
                record = await self._records.find_one({"_id": key})
                if record is None:
                    continue  # the first attempt failed and let go of the key: take it
                if record["fingerprint"] != digest:
                    raise Unprocessable(
                        "This Idempotency-Key was already used with a different request."
                    ) from None
                if record["state"] == "done":
                    result: Result = record["result"]
                    return result
                if loop.time() > deadline:
                    raise Conflict(
                        "A request with this Idempotency-Key is still in progress; retry shortly."
                    ) from None
                await asyncio.sleep(_POLL_SECONDS)
                continue
            break
        try:
            result = await create()
        except BaseException:
            await self._records.delete_one({"_id": key, "state": "pending"})
            raise
        await self._records.update_one({"_id": key}, {"$set": {"state": "done", "result": result}})
        return result

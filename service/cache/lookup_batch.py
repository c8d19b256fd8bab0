"""One loop turn's lookups sent to Redis as one script call.

redis-py has no automatic pipelining (redis/redis-py#3767): every call awaited on its own
takes a pooled connection, writes, and waits for its reply alone, and under load that
per-call work was most of a Redis hit's CPU. Here the first lookup of a loop turn opens a
batch and starts the task that sends it; every lookup made before that task's first step
(the rest of the turn) joins the batch, and the batch goes as one EVALSHA carrying every
lookup's keys. One command rather than a redis-py pipeline of one EVALSHA per lookup:
redis-py packs and parses each command of a pipeline with its own Python calls, about
half of a batched lookup's CPU in process (bench/README.md has the figures).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

# A batch never holds more lookups than this; the next one opens a batch of its own.
MAX_BATCH = 64

_Waiter = tuple[tuple[str, ...], "asyncio.Future[list[Any]]"]


class LookupBatch:
    """Runs a lookup script over many lookups' keys at once.

    The script takes the keys of every lookup in the batch, one after another, and answers
    each key with one reply in the same place, an error reply included (`redis.pcall`).

    Each caller gets its own replies, or its own error reply (a `ResponseError`). A batch
    that fails as a whole (connection lost, socket timeout, pool exhausted) fails every
    caller still waiting in it with that error, so each counts a miss. A caller cancelled
    while waiting leaves the others alone. A batch takes as long as one call did: the
    client's socket timeouts bound it. On NOSCRIPT (a restarted or flushed Redis),
    `register_script`'s Script object loads the script and sends the batch again.
    """

    def __init__(self, client: Redis, script: str) -> None:
        self._client = client
        self._script = client.register_script(script)
        self._open: list[_Waiter] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, keys: tuple[str, ...]) -> list[Any]:
        """The script's replies for `keys`, one per key."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        batch = self._open
        if batch is None or len(batch) >= MAX_BATCH:
            batch = self._open = []
            task = loop.create_task(self._send(batch))  # its first step: the next turn
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        batch.append((keys, future))
        return await future

    async def _send(self, batch: list[_Waiter]) -> None:
        if self._open is batch:
            self._open = None  # closed: later lookups open the next batch
        waiting = [(keys, future) for keys, future in batch if not future.done()]
        if not waiting:
            return
        keys = [key for lookup, _ in waiting for key in lookup]
        try:
            replies = await self._call(keys)
        except BaseException as error:
            failure = error if isinstance(error, Exception) else RedisError("lookup cancelled")
            for _, future in waiting:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(error, Exception):
                raise
            return
        start = 0
        for lookup, future in waiting:
            mine = replies[start : start + len(lookup)]
            start += len(lookup)
            if future.done():
                continue
            refused = next((reply for reply in mine if isinstance(reply, Exception)), None)
            if refused is None:
                future.set_result(mine)
            else:
                future.set_exception(refused)

    async def _call(self, keys: list[str]) -> list[Any]:
        replies = await self._script(keys)  # NOSCRIPT: the Script loads it, sends again
        if not isinstance(replies, list) or len(replies) != len(keys):
            # Left unanswered, its callers would wait forever: a reply of another shape fails them.
            raise ResponseError(f"lookup script: {len(keys)} replies expected")
        return replies

    async def close(self) -> None:
        """Waits for the batches in flight (each bounded by the socket timeout)."""
        await asyncio.gather(*self._sending, return_exceptions=True)

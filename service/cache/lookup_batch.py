"""One loop turn's lookup scripts sent to Redis as one pipeline.

redis-py has no automatic pipelining (redis/redis-py#3767): every call awaited on its own
takes a pooled connection, writes, and waits for its reply alone, and under load that
per-call work was most of a Redis hit's CPU. Here the first lookup of a loop turn opens a
batch and starts the task that sends it; every lookup made before that task's first step
(the rest of the turn) joins the batch, and the batch goes as one redis-py pipeline
(`transaction=False`): one connection, one write, the replies read in one go.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

# A batch never holds more lookups than this; the next one opens a batch of its own.
MAX_BATCH = 64

_Waiter = tuple[tuple[str, ...], "asyncio.Future[Any]"]


class LookupBatch:
    """Runs one Lua script per lookup, batching the lookups of a loop turn.

    Each caller gets its own reply, or its own error reply (a `ResponseError`). A batch that
    fails as a whole (connection lost, socket timeout, pool exhausted) fails every caller
    still waiting in it with that error, so each counts a miss. A caller cancelled while
    waiting leaves the others alone. A batch takes as long as one call did: the client's
    socket timeouts bound it. NOSCRIPT (a restarted or flushed Redis) loads the script and
    sends those lookups again, once, as `register_script`'s own calls do.
    """

    def __init__(self, client: Redis, script: str) -> None:
        self._client = client
        # A Script object queued on a pipeline would ask SCRIPT EXISTS before every batch:
        # its hash is sent as EVALSHA instead, and NOSCRIPT handled here.
        self._script = client.register_script(script)
        self._open: list[_Waiter] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, keys: tuple[str, ...]) -> Any:
        """The script's reply for `keys`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
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
        try:
            replies = await self._execute(waiting)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                self._script.sha = await self._client.script_load(self._script.script)
                again = await self._execute([waiting[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except BaseException as error:
            failure = error if isinstance(error, Exception) else RedisError("lookup cancelled")
            for _, future in waiting:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(error, Exception):
                raise
            return
        for (_, future), reply in zip(waiting, replies, strict=True):
            if not future.done():
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    async def _execute(self, waiting: list[_Waiter]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for keys, _ in waiting:
            pipe.evalsha(self._script.sha, len(keys), *keys)
        # Error replies come back in their places, not raised: they are each caller's own.
        return await pipe.execute(raise_on_error=False)

    async def close(self) -> None:
        """Waits for the batches in flight (each bounded by the socket timeout)."""
        await asyncio.gather(*self._sending, return_exceptions=True)

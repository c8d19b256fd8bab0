"""The response cache: keys, generation tokens, single-flight misses, and tolerance of failure.

What is cached is the exact response a GET served (its ETag and body bytes), so a hit does
no database call and no JSON encoding.

Never stale after a write. Every resource has a *generation token* next to its data, and
data lives under `<key>:<token>`. A write replaces the token with a fresh random one,
before its response is sent, so every reader, in any worker or instance that shares Redis,
looks under the new token from then on. A slow reader that fetched the token before the
write can only fill a key nobody reads any more, and concurrent misses share a load only
when they saw the same token: a read that begins after a write never waits for a load that
began before it. Tokens are random, so a token key that expires and comes back can never
resurrect an old entry.

Cache failure is not service failure. Every cache call is bounded by `cache.timeout_ms`.
Errors and timeouts count as misses, are counted, and are logged at most every 10 s. An
invalidation that fails is kept and retried; until it is delivered, this process reads
around the cache, so an outage cannot leave it serving an entry older than its own writes.

The backends (memory.py, redis_backend.py) implement `Backend`; backends.py picks one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from redis.exceptions import RedisError

from service.cache.stats import ERROR, HIT, INVALIDATION, MISS, CacheStats, kind_of
from service.settings.model import CacheSettings

log = logging.getLogger(__name__)

SCHEMA_VERSION = "v1"  # bump when a cached response shape changes: old entries are never read
WARN_EVERY_SECONDS = 10.0
# A write's invalidation is tried this often before its response: after a Redis restart the
# first command on a pooled connection fails ("closed by server") while Redis is back, and
# other instances would go on serving the entry the write retired.
DELIVERY_TRIES = 3
# Unreachable, slow, refusing or answering nonsense: all mean "no cache right now".
BACKEND_ERRORS = (RedisError, OSError, TimeoutError, ValueError, IndexError, UnicodeDecodeError)


@dataclass(frozen=True, slots=True)
class Cached:
    etag: str
    body: bytes

    def pack(self) -> bytes:
        return self.etag.encode() + b"\n" + self.body

    @classmethod
    def unpack(cls, raw: bytes) -> Cached:
        etag, _, body = raw.partition(b"\n")
        return cls(etag.decode(), body)


class Backend(Protocol):
    """Where entries live, each under the generation token it was loaded with."""

    def peek(self, key: str) -> Cached | None:
        """The entry without suspending, or None (always, where that takes I/O)."""

    async def lookup(self, key: str) -> tuple[str, Cached | None]:
        """The key's current token, and its entry stored under that token if any."""

    async def store(self, key: str, token: str, value: Cached, ttl: int) -> None:
        """Keep `value`, readable only while `token` is still the key's current one."""

    async def bump(self, keys: list[str], ttl: int) -> None:
        """Give each key a fresh token: every entry stored before is retired."""

    async def close(self) -> None: ...


class _FailSoft:
    """Runs backend calls so that a failing cache is a miss, never a 5xx: each failure is
    counted, a warning logged at most every WARN_EVERY_SECONDS, and the call returns None."""

    def __init__(self, stats: CacheStats) -> None:
        self._stats = stats
        self._last_warning = 0.0

    async def run(self, kind: str, operation: Awaitable[Any]) -> Any:
        """The call's result (True for None), or None when the backend failed."""
        try:
            result = await operation
        except BACKEND_ERRORS as error:
            self._stats.count(kind, ERROR)
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY_SECONDS:
                self._last_warning = now
                log.warning(
                    "cache unavailable (%s); serving from the database", type(error).__name__
                )
            return None
        return True if result is None else result


class ResponseCache:
    """Read-through caching of rendered responses, with single-flight misses."""

    def __init__(
        self,
        settings: CacheSettings,
        backend: Backend,
        stats: CacheStats,
        invalidations_must_land: bool = False,
    ) -> None:
        self._backend = backend
        # Sentinel: a Redis that fails over can lose an undelivered bump, and other instances
        # would then serve the retired entry; such a write must not be acknowledged.
        self.invalidations_must_land = invalidations_must_land
        self._prefix = f"{settings.namespace}:{SCHEMA_VERSION}"
        self._ttl = settings.ttl_seconds
        # A token must outlive every entry stored under it, plus a slow reader's deadline.
        self._token_ttl = 2 * settings.ttl_seconds + 60
        self.stats = stats
        # Keyed by (key, token): a load started under an older token may predate a write.
        self._flights: dict[tuple[str, str], asyncio.Future[Cached]] = {}
        self._undelivered: set[str] = set()
        self._call = _FailSoft(stats).run

    def key(self, kind: str, ident: str) -> str:
        return f"{self._prefix}:{kind}:{ident}"

    def peek(self, kind: str, ident: str) -> Cached | None:
        """A hit answered without suspending, when the backend can (memory); None means
        ask `read_through`, which then looks again and counts the miss."""
        if self._undelivered:
            return None  # an invalidation is owed: read_through reads around the cache
        found = self._backend.peek(f"{self._prefix}:{kind}:{ident}")
        if found is not None:
            self.stats.count(kind, HIT)
        return found

    async def read_through(
        self, kind: str, ident: str, load: Callable[[], Awaitable[Cached]]
    ) -> Cached:
        """The cached response, or `load()`'s, shared by concurrent misses on one key."""
        key = self.key(kind, ident)
        if self._undelivered and not await self._deliver():
            return await load()  # an invalidation is owed: never trust entries until it lands
        found: tuple[str, Cached | None] | None = await self._call(kind, self._backend.lookup(key))
        if found is not None and found[1] is not None:
            self.stats.count(kind, HIT)
            return found[1]
        self.stats.count(kind, MISS)
        if found is None:
            return await load()  # no token seen: a shared load could predate an unseen write
        token = found[0]
        flight = self._flights.get((key, token))
        if flight is not None:
            return await asyncio.shield(flight)
        flight = asyncio.get_running_loop().create_future()
        self._flights[(key, token)] = flight
        try:
            try:
                value = await load()
            except BaseException as error:
                flight.set_exception(error)
                flight.exception()  # retrieved: waiters re-raise it, nobody warns about it
                raise
            flight.set_result(value)
            # Still registered while storing: a reader arriving now shares this value
            # instead of missing the not-yet-stored entry and loading again.
            # Under the token read before loading, so a write wins the race.
            await self._call(kind, self._backend.store(key, token, value, self._ttl))
            return value
        finally:
            self._flights.pop((key, token), None)

    async def invalidate(self, entries: Iterable[tuple[str, str]]) -> bool:
        """Retire entries so no reader anywhere sees them again (call before responding);
        False when the backend could not take it (it stays owed, and is retried)."""
        keys = {self.key(kind, ident): kind for kind, ident in entries}
        if not keys:
            return True
        self._undelivered.update(keys)
        delivered = False
        for _ in range(DELIVERY_TRIES):
            if delivered := await self._deliver():
                break
        for kind in keys.values():
            self.stats.count(kind, INVALIDATION)
        return delivered

    async def _deliver(self) -> bool:
        pending = sorted(self._undelivered)
        if not pending:  # a concurrent request delivered it meanwhile
            return True
        kind = kind_of(pending[0])  # errors are counted against the first entry's cache
        ok = await self._call(kind, self._backend.bump(pending, self._token_ttl))
        if ok is not None:
            self._undelivered.difference_update(pending)
            return True
        return False

    async def close(self) -> None:
        await self._backend.close()


RESPONSE_CACHE = web.AppKey("response_cache", ResponseCache)

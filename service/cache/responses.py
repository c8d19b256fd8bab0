"""The response cache: aiocache backends, keys, invalidation, and tolerance of cache failure.

What is cached is the exact response a GET served (its ETag and body bytes), so a hit does
no database call and no JSON encoding.

Never stale after a write. Every resource has a *generation token* next to its data, and
data lives under `<key>:<token>`. A write replaces the token with a fresh random one,
before its response is sent, so every reader, in any worker or instance that shares Redis,
looks under the new token from then on. A slow reader that fetched the token before the
write can only fill a key nobody reads any more, and concurrent misses share a load only
when they saw the same token: a read that begins after a write never waits for a load that
began before it. Tokens are random, so a token key that
expires and comes back can never resurrect an old entry. A Redis hit is one round trip: a
Lua script reads the token and the data together.

Cache failure is not service failure. Every cache call is bounded by `cache.timeout_ms`.
Errors and timeouts count as misses, are counted, and are logged at most every 10 s. An
invalidation that fails is kept and retried; until it is delivered, this process reads
around the cache, so an outage cannot leave it serving an entry older than its own writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiocache import RedisCache, SimpleMemoryCache
from aiocache.serializers import NullSerializer
from aiohttp import web
from redis.exceptions import RedisError, ResponseError

from service.cache.pipelined import PipelinedRedis, RedisTarget
from service.domain.ids import new_id
from service.settings.model import SETTINGS, CacheSettings

log = logging.getLogger(__name__)

SCHEMA_VERSION = "v1"  # bump when a cached response shape changes: old entries are never read
WARN_EVERY_SECONDS = 10.0
# A write's invalidation is tried this often before its response: after a Redis restart the
# first command on a pooled connection fails ("closed by server") while Redis is back, and
# other instances would go on serving the entry the write retired.
DELIVERY_TRIES = 3
HIT, MISS, ERROR, INVALIDATION, EVICTION = "hit", "miss", "error", "invalidation", "eviction"
# What an entry costs beyond its key, ETag and body: the tuple, the Cached, the dict slot and
# aiocache's expiry timer. An estimate: the bound is on what the service holds, not on RSS.
ENTRY_OVERHEAD_BYTES = 256
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
    def peek(self, key: str) -> Cached | None: ...
    async def lookup(self, key: str) -> tuple[str, Cached | None]: ...
    async def store(self, key: str, token: str, value: Cached, ttl: int) -> None: ...
    async def bump(self, keys: list[str], ttl: int) -> None: ...
    async def close(self) -> None: ...


class MemoryBackend:
    """aiocache's SimpleMemoryCache: per process, so coherent only with a single worker.

    An entry is stored unserialized, with the generation token it was loaded under. A
    hit is one `get`: invalidation deletes the entries it retires, and `store` writes an
    entry only while its token is still the current one. SimpleMemoryCache never
    suspends, so that check and the write are one step of the event loop: a write's
    invalidation cannot fall between them.

    Bounded by `cache.memory_max_bytes`: an LRU index beside aiocache (which has no size
    bound, only TTLs) holds each entry's estimated size; a store beyond the bound evicts
    the least recently used entries. Generation tokens are not counted: they are a few
    bytes per written resource and expire with their TTL.
    """

    def __init__(self, max_bytes: int, stats: CacheStats) -> None:
        self._cache = SimpleMemoryCache(serializer=NullSerializer(), timeout=None)
        self._entries: dict[str, Any] = self._cache._cache  # SimpleMemoryBackend's storage
        self.max_bytes = max_bytes
        self.bytes = 0
        self._sizes: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._stats = stats

    def peek(self, key: str) -> Cached | None:
        """The entry, read from aiocache's own dict: its `get` runs three decorators, an
        environment lookup and a coroutine for the same dictionary lookup, and that was
        most of a hit's time in the cache. Stores, expiry and deletes stay aiocache's."""
        entry: tuple[str, Cached] | None = self._entries.get(key)
        if entry is None:
            return None
        self._sizes.move_to_end(key)
        return entry[1]

    async def lookup(self, key: str) -> tuple[str, Cached | None]:
        entry: tuple[str, Cached] | None = await self._cache.get(key)
        if entry is not None:
            self._sizes.move_to_end(key)
            return entry
        self._forget(key)  # expired by its TTL, if it was here at all
        return await self._cache.get(f"{key}:gen") or "0", None

    async def store(self, key: str, token: str, value: Cached, ttl: int) -> None:
        size = len(key) + len(value.etag) + len(value.body) + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes:
            return  # would evict everything else and still not fit
        if (await self._cache.get(f"{key}:gen") or "0") == token:
            await self._cache.set(key, (token, value), ttl=ttl)
            self._forget(key)
            self._sizes[key] = size
            self.bytes += size
            while self.bytes > self.max_bytes:
                victim, victim_size = self._sizes.popitem(last=False)
                self.bytes -= victim_size
                await self._cache.delete(victim)
                self._stats.count(kind_of(victim), EVICTION)

    async def bump(self, keys: list[str], ttl: int) -> None:
        await self._cache.multi_set([(f"{key}:gen", new_id()) for key in keys], ttl=ttl)
        for key in keys:
            await self._cache.delete(key)
            self._forget(key)

    def _forget(self, key: str) -> None:
        size = self._sizes.pop(key, None)
        if size is not None:
            self.bytes -= size

    async def close(self) -> None:
        await self._cache.close()


def kind_of(key: str) -> str:
    """The cache name in a `<namespace>:<schema>:<kind>:<id>` key."""
    return key.rsplit(":", 2)[-2]


# KEYS[1] = the generation key, KEYS[2] = the data key prefix; one round trip per lookup.
_LOOKUP = """
local token = redis.call('GET', KEYS[1]) or '0'
return {token, redis.call('GET', KEYS[2] .. token)}
"""
_LOOKUP_SHA = hashlib.sha1(_LOOKUP.encode()).hexdigest().encode()  # noqa: S324 - Redis's script id


class RedisBackend:
    """aiocache's RedisCache (redis-py with hiredis), shared by every worker and instance.

    Lookups, the hit path, take one round trip on a pipelined connection (cache/pipelined.py);
    stores and invalidations go through aiocache. Every call is bounded by
    `cache.timeout_ms`: redis-py applies it as socket_timeout to each read and as
    create_connection_timeout to each connect, and the pipelined connection enforces it on
    its connect and on every reply, so a stopped or stalled Redis cannot hold a request.
    """

    def __init__(self, target: RedisTarget, timeout_seconds: float) -> None:
        # Both clients see the URL as redis-py read it (TLS, ACL user, database, options).
        self._cache = RedisCache(
            endpoint=target.host,
            port=target.port,
            db=target.db,
            password=target.password,
            pool_max_size=target.max_connections,
            create_connection_timeout=timeout_seconds,
            serializer=NullSerializer(),
            timeout=None,  # the socket timeouts below bound every call
            connection_pool_kwargs={**target.pool_options, "socket_timeout": timeout_seconds},
        )
        self._pipe = PipelinedRedis(target, timeout_seconds)

    def peek(self, key: str) -> Cached | None:
        return None  # every lookup is a round trip

    async def lookup(self, key: str) -> tuple[str, Cached | None]:
        keys = (f"{key}:gen".encode(), f"{key}:".encode())
        try:
            result = await self._pipe.call(b"EVALSHA", _LOOKUP_SHA, b"2", *keys)
        except ResponseError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
            result = await self._pipe.call(b"EVAL", _LOOKUP.encode(), b"2", *keys)
        token = result[0].decode()
        raw = result[1] if len(result) > 1 else None
        return token, (None if raw is None else Cached.unpack(raw))

    async def store(self, key: str, token: str, value: Cached, ttl: int) -> None:
        await self._cache.set(f"{key}:{token}", value.pack(), ttl=ttl)

    async def bump(self, keys: list[str], ttl: int) -> None:
        await self._cache.multi_set([(f"{key}:gen", new_id()) for key in keys], ttl=ttl)

    async def close(self) -> None:
        await self._pipe.close()
        await self._cache.close()


OnEvent = Callable[[str, str, int], None]  # cache, event, how many


@dataclass
class CacheStats:
    """Hits, misses, errors and invalidations per cache name, for the metrics."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    hooks: list[OnEvent] = field(default_factory=list)

    def count(self, cache: str, event: str, n: int = 1) -> None:
        self.counts[(cache, event)] += n
        for hook in self.hooks:
            hook(cache, event, n)


class ResponseCache:
    """Read-through caching of rendered responses, with single-flight misses."""

    def __init__(self, settings: CacheSettings, backend: Backend, stats: CacheStats) -> None:
        self._backend = backend
        self._prefix = f"{settings.namespace}:{SCHEMA_VERSION}"
        self._ttl = settings.ttl_seconds
        # A token must outlive every entry stored under it, plus a slow reader's deadline.
        self._token_ttl = 2 * settings.ttl_seconds + 60
        self.stats = stats
        # Keyed by (key, token): a load started under an older token may predate a write.
        self._flights: dict[tuple[str, str], asyncio.Future[Cached]] = {}
        self._undelivered: set[str] = set()
        self._last_warning = 0.0

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

    async def invalidate(self, entries: Iterable[tuple[str, str]]) -> None:
        """Retire entries so no reader anywhere sees them again (call before responding)."""
        keys = {self.key(kind, ident): kind for kind, ident in entries}
        if not keys:
            return
        self._undelivered.update(keys)
        for _ in range(DELIVERY_TRIES):
            if await self._deliver():
                break
        for kind in keys.values():
            self.stats.count(kind, INVALIDATION)

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

    async def _call(self, kind: str, operation: Awaitable[Any]) -> Any:
        """Run one backend call within the timeout; on failure count, warn (rarely), return None."""
        try:
            result = await operation
        except BACKEND_ERRORS as error:  # a failing cache degrades to a miss, never a 5xx
            self.stats.count(kind, ERROR)
            now = time.monotonic()
            if now - self._last_warning >= WARN_EVERY_SECONDS:
                self._last_warning = now
                log.warning(
                    "cache unavailable (%s); serving from the database", type(error).__name__
                )
            return None
        return True if result is None else result

    async def close(self) -> None:
        await self._backend.close()


RESPONSE_CACHE = web.AppKey("response_cache", ResponseCache)
CACHE_STATS = web.AppKey("cache_stats", CacheStats)


def create_backend(settings: CacheSettings, stats: CacheStats) -> Backend | None:
    if settings.backend == "memory":
        return MemoryBackend(settings.memory_max_bytes, stats)
    if settings.backend == "redis":
        return RedisBackend(RedisTarget.from_url(settings.redis_url), settings.timeout_ms / 1000)
    return None


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the configured backend (none: no cache at all), close it on shutdown."""
    settings = app[SETTINGS].cache
    backend = create_backend(settings, app[CACHE_STATS])
    if backend is None:
        yield
        return
    cache = ResponseCache(settings, backend, app[CACHE_STATS])
    app[RESPONSE_CACHE] = cache
    yield
    await cache.close()

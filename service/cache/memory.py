"""The memory backend: aiocache's SimpleMemoryCache, per process, bounded in bytes."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from aiocache import SimpleMemoryCache
from aiocache.serializers import NullSerializer

from service.cache.response_cache import Cached
from service.cache.stats import EVICTION, CacheStats, kind_of
from service.domain.ids import new_id

# What an entry costs beyond its key, ETag and body: the tuple, the Cached, the dict slot and
# aiocache's expiry timer. An estimate: the bound is on what the service holds, not on RSS.
ENTRY_OVERHEAD_BYTES = 256


class MemoryBackend:
    """Coherent only with a single worker: each process holds its own entries.

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
        """The entry, read from aiocache's own dict: its `get` adds three decorators, an
        environment lookup and a coroutine to the same dictionary lookup, which made up
        most of a hit's time. Stores, expiry and deletes stay aiocache's."""
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

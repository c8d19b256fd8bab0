"""The memory backend: cachetools' TLRUCache, per process, bounded in bytes.

cachetools rather than aiocache: a memory hit is answered without suspending (`peek`, before
the handler runs), which aiocache's coroutine-only API cannot do; in process, a hit through
`ResponseCache.peek` costs 0.8 µs of CPU here against 2.9 µs awaited through aiocache's `get`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from cachetools import TLRUCache

from service.cache.response_cache import Cached
from service.cache.stats import EVICTION, CacheStats, kind_of
from service.domain.ids import new_id

# What an entry costs beyond its key, ETag and body: the tuples, the Cached, the dict slots
# and TLRUCache's expiry record. An estimate: the bound is on what the service holds, not RSS.
ENTRY_OVERHEAD_BYTES = 256


class _Entry(NamedTuple):
    token: str  # the generation token it was loaded under
    value: Cached
    size: int  # what it counts against the bound
    ttl: int


class _Token(NamedTuple):
    token: str
    ttl: int


def _expires(_key: str, item: _Entry | _Token, now: float) -> float:
    return now + item.ttl


def _size(entry: _Entry) -> int:
    return entry.size


class MemoryBackend:
    """Coherent only with a single worker: each process holds its own entries.

    An entry is stored with the generation token it was loaded under, and expires after
    the TTL it was stored with. Invalidation gives the key a fresh token and deletes its
    entry; `store` writes an entry only while its token is still the current one. Nothing
    here suspends, so that check and the write are one step of the event loop: a write's
    invalidation cannot fall between them.

    Bounded by `cache.memory_max_bytes`, least recently used out first: a store that would
    not fit evicts entries through `popitem` (counted in cache_evictions_total) before it
    is written. Tokens live apart, unbounded: evicting one would let a load that began
    before the write store the state it replaced. They are a few bytes per written resource
    and expire with their TTL.
    """

    def __init__(self, max_bytes: int, stats: CacheStats) -> None:
        self._entries: TLRUCache[str, _Entry] = TLRUCache(max_bytes, _expires, getsizeof=_size)
        self._tokens: TLRUCache[str, _Token] = TLRUCache(math.inf, _expires)
        self._stats = stats

    @property
    def bytes(self) -> int:
        """What the entries held now count against `cache.memory_max_bytes`."""
        return int(self._entries.currsize)

    def peek(self, key: str) -> Cached | None:
        try:
            return self._entries[key].value  # a lookup marks it the most recently used
        except KeyError:
            return None

    async def lookup(self, key: str) -> tuple[str, Cached | None]:
        entry = self._entries.get(key)
        if entry is not None:
            return entry.token, entry.value
        return self._token(key), None

    async def store(self, key: str, token: str, value: Cached, ttl: int) -> None:
        size = len(key) + len(value.etag) + len(value.body) + ENTRY_OVERHEAD_BYTES
        if size > self._entries.maxsize:
            return  # would evict everything else and still not fit
        if self._token(key) != token:
            return  # a write retired the token this value was loaded under
        self._entries.pop(key, None)
        while self._entries.currsize + size > self._entries.maxsize:
            victim, _ = self._entries.popitem()  # the least recently used one
            self._stats.count(kind_of(victim), EVICTION)
        self._entries[key] = _Entry(token, value, size, ttl)

    async def bump(self, keys: list[str], ttl: int) -> None:
        for key in keys:
            self._tokens[key] = _Token(new_id(), ttl)
            self._entries.pop(key, None)

    def _token(self, key: str) -> str:
        found = self._tokens.get(key)
        return "0" if found is None else found.token

    async def close(self) -> None:
        self._entries.clear()
        self._tokens.clear()

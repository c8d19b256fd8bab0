"""What the cache counts: hits, misses, errors, invalidations and evictions per cache name."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

HIT, MISS, ERROR, INVALIDATION, EVICTION = "hit", "miss", "error", "invalidation", "eviction"
PRIMARY_CHANGE = "primary_change"  # Sentinel named another Redis primary (cache/sentinel.py)

OnEvent = Callable[[str, str, int], None]  # cache, event, how many


@dataclass
class CacheStats:
    """The counts, and the hooks (the metrics) told of every event."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    hooks: list[OnEvent] = field(default_factory=list)

    def count(self, cache: str, event: str, n: int = 1) -> None:
        self.counts[(cache, event)] += n
        for hook in self.hooks:
            hook(cache, event, n)


def kind_of(key: str) -> str:
    """The cache name in a `<namespace>:<schema>:<kind>:<id>` key."""
    return key.rsplit(":", 2)[-2]


CACHE_STATS = web.AppKey("cache_stats", CacheStats)

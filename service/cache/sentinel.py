"""Redis Sentinel: the cache's clients find the primary through the sentinels, and a write's
invalidation counts as delivered only once every replica the sentinels could promote holds it.

Why replicas: replication is asynchronous, so a bump the primary acknowledged can be lost
when a replica is promoted; the new primary would then still hold the retired token and the
entry stored under it, and serve it. `WAIT n` on the connection that sent the bump returns
once n replicas have it, and n is every replica the sentinels could promote (those not
judged down, polled with the primary): whichever they promote holds the bump. A bump sent to
a primary Sentinel has already replaced has no replica left to confirm it. A bump not
confirmed is a failed delivery: the write is stored but answered 503 (ResponseCache,
use_cases), so no acknowledged write is followed by a stale read (README, Cache: Sentinel).

Clients come from redis-py's `Sentinel.master_for` and its `SentinelConnectionPool` (for
aiocache's RedisCache, through its `connection_pool_class` argument): each new connection
asks the sentinels for the primary, and a demoted primary's READONLY answer drops the
connection. The lookup script is declared `#!lua` (no `no-writes` flag), so a demoted primary
refuses it with READONLY too, instead of answering from a replica that may lag.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.exceptions import RedisError

from service.cache.stats import PRIMARY_CHANGE, CacheStats
from service.settings.redis_url import RedisTarget

log = logging.getLogger(__name__)

WATCH_SECONDS = 1.0  # how often the sentinels are asked which node is the primary


class SentinelLink:
    """The sentinels, and the primary's clients built through them."""

    def __init__(self, target: RedisTarget, options: Mapping[str, Any]) -> None:
        timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
        self.sentinel = Sentinel(
            target.sentinels,
            sentinel_kwargs={**timeouts, "password": target.sentinel_password},
        )
        self.service_name = target.service_name
        options = dict(options)
        tls = options.pop("connection_class", None) is SSLConnection
        # The sentinel pool's own connection classes: each asks the sentinels where to go.
        self.options = {
            **options,
            "connection_class": SentinelManagedSSLConnection if tls else SentinelManagedConnection,
        }
        self.primary: tuple[str, int] | None = None
        self.replicas = 1  # how many replicas a bump waits for: every one not judged down

    def client(self) -> Redis:
        """A client of the current primary (the lookups' and the bumps')."""
        return self.sentinel.master_for(self.service_name, **self.options)  # type: ignore[no-any-return]

    def pool_class(self) -> Callable[..., SentinelConnectionPool]:
        """For aiocache's RedisCache(connection_pool_class=...): the host and port it passes
        are replaced by the primary's address at every connect."""
        return functools.partial(SentinelConnectionPool, self.service_name, self.sentinel)

    async def watch(self, stats: CacheStats) -> None:
        """Forever: a changed primary is a WARNING and a count (cache_primary_changes_total).
        Polled: redis-py's Sentinel does not report `+switch-master` (redis/redis-py#3867)."""
        while True:
            try:
                primary = await self.sentinel.discover_master(self.service_name)
                replicas = await self.sentinel.discover_replicas(self.service_name)
                self.replicas = max(1, len(replicas))
            except (RedisError, OSError):
                primary = None  # no primary right now: cache calls fail open meanwhile
            if primary is not None and primary != self.primary:
                if self.primary is not None:
                    log.warning(
                        "Redis primary of %s changed from %s:%s to %s:%s",
                        self.service_name, *self.primary, *primary,
                    )  # fmt: skip
                    stats.count("redis", PRIMARY_CHANGE)
                self.primary = primary
            await asyncio.sleep(WATCH_SECONDS)

    async def close(self) -> None:
        await self.sentinel.aclose()


async def bump_confirmed(
    client: Redis, tokens: list[tuple[str, str]], ttl: int, wait_ms: int, replicas: int
) -> None:
    """Set the tokens, then `WAIT replicas` on the same connection (one pipeline, one round
    trip)."""
    pipe = client.pipeline(transaction=False)
    for key, token in tokens:
        pipe.set(key, token, ex=ttl)
    pipe.wait(replicas, wait_ms)
    *_, confirmed = await pipe.execute()
    if confirmed < replicas:  # it could be lost in a failover: a failed delivery
        raise RedisError(f"{confirmed} of {replicas} replicas confirmed the invalidation")

"""The Redis backend: shared by every worker and instance, so coherent across all of them."""

from __future__ import annotations

from aiocache import RedisCache
from aiocache.serializers import NullSerializer
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.cache.lookup_batch import LookupBatch
from service.cache.response_cache import Cached
from service.cache.sentinel import SentinelLink, bump_confirmed
from service.domain.ids import new_id
from service.settings.redis_url import RedisTarget

# aiocache's RedisCache takes these as arguments of its own (the connect timeout as
# create_connection_timeout); the rest of redis-py's connection options (ACL user, TLS
# files, socket timeout, ...) go to its pool as they are.
_AIOCACHE_ARGUMENTS = frozenset(
    ("host", "port", "db", "password", "max_connections", "socket_connect_timeout")
)

# KEYS: each lookup's generation key and data key prefix, lookup after lookup (a loop turn's
# lookups in one call, LookupBatch). The reply holds, in the same places, each lookup's
# token and its entry; redis.pcall keeps an error reply (a key of another type) to its own
# lookup instead of failing the batch.
_LOOKUP = """
local replies = {}
for i = 1, #KEYS, 2 do
  local token = redis.pcall('GET', KEYS[i]) or '0'
  replies[i] = token
  replies[i + 1] = type(token) == 'string' and redis.pcall('GET', KEYS[i + 1] .. token) or false
end
return replies
"""


class RedisBackend:
    """redis-py's asyncio client for lookups, aiocache's RedisCache for stores and bumps.

    A lookup, the hit path, is one round trip: a Lua script (redis-py's `register_script`:
    EVALSHA, and the script sent again when Redis answers NOSCRIPT) returns the key's
    generation token and the entry stored under it, for a loop turn's lookups at once
    (`LookupBatch`). Both clients are built from the one reading of REDIS_URL
    (`RedisTarget`), so they agree on TLS, ACL user, password and database.

    Every call is bounded by `cache.timeout_ms`, which both clients take as their connect
    timeout (TCP and TLS handshake) and their socket timeout (every reply, AUTH and SELECT
    included), in place of any the URL names. Neither retries: a stalled or stopped Redis
    fails the call within the timeout, redis-py drops that connection, and the next call
    connects afresh. ResponseCache counts the failure and serves from the database.

    Each batch in flight holds a pooled connection of its own: redis-py has no automatic
    pipelining (redis/redis-py#3767). The pool holds up to redis-py's default (100
    in 8.x), or the URL's `max_connections`; a call beyond that fails at once, a counted miss.
    """

    def __init__(self, target: RedisTarget, timeout_seconds: float) -> None:
        options = {
            **target.options,
            "socket_timeout": timeout_seconds,
            "socket_connect_timeout": timeout_seconds,
            "retry": Retry(NoBackoff(), 0),
        }
        # Sentinel (cache/sentinel.py): both clients ask the sentinels for the primary.
        self.sentinel = SentinelLink(target, options) if target.service_name else None
        self._wait_ms = max(1, int(timeout_seconds * 500))  # WAIT within the socket timeout
        pool_class = None
        if self.sentinel is None:
            self._client = Redis.from_pool(ConnectionPool(**options))
            script = _LOOKUP
        else:
            options = self.sentinel.options
            pool_class = self.sentinel.pool_class()
            self._client = self.sentinel.client()
            script = "#!lua\n" + _LOOKUP  # a write script: a demoted primary answers READONLY
        self._lookups = LookupBatch(self._client, script)
        self._cache = RedisCache(
            endpoint=options.get("host", "localhost"),
            port=options.get("port", 6379),
            db=options.get("db", 0),
            password=options.get("password"),
            pool_max_size=options.get("max_connections"),
            create_connection_timeout=timeout_seconds,
            serializer=NullSerializer(),
            timeout=None,  # the socket timeouts bound every call
            connection_pool_class=pool_class,
            connection_pool_kwargs={
                k: v for k, v in options.items() if k not in _AIOCACHE_ARGUMENTS
            },
        )

    def peek(self, key: str) -> Cached | None:
        return None  # every lookup is a round trip

    async def lookup(self, key: str) -> tuple[str, Cached | None]:
        token, raw = await self._lookups.run((f"{key}:gen", f"{key}:"))  # raw: None, or bytes
        return token.decode(), (None if raw is None else Cached.unpack(raw))

    async def store(self, key: str, token: str, value: Cached, ttl: int) -> None:
        await self._cache.set(f"{key}:{token}", value.pack(), ttl=ttl)

    async def bump(self, keys: list[str], ttl: int) -> None:
        tokens = [(f"{key}:gen", new_id()) for key in keys]
        if self.sentinel is not None:  # delivered only once every promotable replica holds it
            replicas = self.sentinel.replicas
            await bump_confirmed(self._client, tokens, ttl, self._wait_ms, replicas)
            return
        await self._cache.multi_set(tokens, ttl=ttl)

    async def close(self) -> None:
        await self._lookups.close()
        await self._client.aclose()
        await self._cache.close()
        if self.sentinel is not None:
            await self.sentinel.close()

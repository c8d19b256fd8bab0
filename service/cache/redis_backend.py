"""The Redis backend: shared by every worker and instance, so coherent across all of them."""

from __future__ import annotations

import hashlib

from aiocache import RedisCache
from aiocache.serializers import NullSerializer
from redis.exceptions import ResponseError

from service.cache.pipelined import PipelinedRedis
from service.cache.response_cache import Cached
from service.domain.ids import new_id
from service.settings.redis_url import RedisTarget

# aiocache's RedisCache takes these as arguments of its own; the rest of redis-py's
# connection options (ACL user, TLS files, ...) go to its pool as they are.
_AIOCACHE_ARGUMENTS = ("host", "port", "db", "password", "max_connections")

# KEYS[1] = the generation key, KEYS[2] = the data key prefix; one round trip per lookup.
_LOOKUP = """
local token = redis.call('GET', KEYS[1]) or '0'
return {token, redis.call('GET', KEYS[2] .. token)}
"""
_LOOKUP_SHA = hashlib.sha1(_LOOKUP.encode()).hexdigest().encode()  # noqa: S324 - Redis's script id


class RedisBackend:
    """aiocache's RedisCache (redis-py with hiredis), plus a pipelined connection for hits.

    Lookups, the hit path, take one round trip on the pipelined connection (pipelined.py);
    stores and invalidations go through aiocache. Both clients are built from the same
    `RedisTarget`, so they agree on TLS, ACL user, password and database. Every call is
    bounded by `cache.timeout_ms`: redis-py applies it as socket_timeout to each read and as
    create_connection_timeout to each connect, and the pipelined connection enforces it on
    its connect and on every reply, so a stopped or stalled Redis cannot hold a request.
    """

    def __init__(self, target: RedisTarget, timeout_seconds: float) -> None:
        options = {k: v for k, v in target.options.items() if k not in _AIOCACHE_ARGUMENTS}
        self._cache = RedisCache(
            endpoint=target.host,
            port=target.port,
            db=target.db,
            password=target.password,
            pool_max_size=target.options.get("max_connections"),
            create_connection_timeout=timeout_seconds,
            serializer=NullSerializer(),
            timeout=None,  # the socket timeouts below bound every call
            connection_pool_kwargs={**options, "socket_timeout": timeout_seconds},
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

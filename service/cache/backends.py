"""Which backend the settings choose, and its lifetime with the application."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from service.background import running
from service.cache.memory import MemoryBackend
from service.cache.redis_backend import RedisBackend
from service.cache.response_cache import RESPONSE_CACHE, Backend, ResponseCache
from service.cache.stats import CACHE_STATS, CacheStats
from service.cache.traced import TracedBackend
from service.observability.tracing import TRACER
from service.settings.model import SETTINGS, CacheSettings
from service.settings.redis_url import RedisTarget


def create_backend(settings: CacheSettings, stats: CacheStats) -> Backend | None:
    """memory: per process (memory.py); redis: shared (redis_backend.py); none: no cache."""
    if settings.backend == "memory":
        return MemoryBackend(settings.memory_max_bytes, stats)
    if settings.backend == "redis":
        return RedisBackend(RedisTarget.from_url(settings.redis_url), settings.timeout_ms / 1000)
    return None


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the configured backend (none: no cache at all), close it on shutdown.
    Redis calls are traced when tracing is on (traced.py)."""
    settings = app[SETTINGS].cache
    backend = create_backend(settings, app[CACHE_STATS])
    if backend is None:
        yield
        return
    sentinel = backend.sentinel if isinstance(backend, RedisBackend) else None
    tracer = app.get(TRACER)
    if tracer is not None and isinstance(backend, RedisBackend):
        backend = TracedBackend(backend, tracer, RedisTarget.from_url(settings.redis_url))
    cache = ResponseCache(settings, backend, app[CACHE_STATS], sentinel is not None)
    app[RESPONSE_CACHE] = cache
    if sentinel is None:
        yield
    else:
        async with running(sentinel.watch(app[CACHE_STATS]), "redis-primary-watch"):
            yield
    await cache.close()

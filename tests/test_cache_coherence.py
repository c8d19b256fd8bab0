"""Cache coherence across a write: a read that starts after the write is acknowledged never
gets the state from before it, even when a load that began earlier is still in flight.

The fleet test (tests/test_fleet.py) found this through a balancer during rolling restarts,
where cold instances load slowly; here the same race is arranged deterministically.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from service.cache.backends import create_backend
from service.cache.response_cache import Cached, ResponseCache
from service.cache.stats import CacheStats
from service.settings.loading import load_settings
from service.settings.model import CacheBackend
from tests.helpers.servers import RedisServer
from tests.helpers.tools import require_command


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> ResponseCache:
    backend: CacheBackend = request.param
    env = {"SERVICE_ENV": "test", "CACHE_BACKEND": backend,
           "CACHE_NAMESPACE": f"coherence-{uuid.uuid4().hex[:8]}"}  # fmt: skip
    if backend == "redis":
        require_command("redis-server", "redis-server")
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        env["REDIS_URL"] = redis_server.url
    settings = load_settings(env).cache
    stats = CacheStats()
    made = create_backend(settings, stats)
    assert made is not None
    return ResponseCache(settings, made, stats)


async def test_a_read_after_a_write_never_shares_a_load_that_began_before_it(
    cache: ResponseCache,
) -> None:
    database = {"orders": 0}
    began = asyncio.Event()
    release = asyncio.Event()

    async def slow_load() -> Cached:  # read the database before the write, answers after it
        seen = database["orders"]
        began.set()
        await release.wait()
        return Cached('"v0"', str(seen).encode())

    async def load() -> Cached:
        return Cached(f'"v{database["orders"]}"', str(database["orders"]).encode())

    try:
        early = asyncio.create_task(cache.read_through("user", "u1", slow_load))
        await asyncio.wait_for(began.wait(), 5)
        database["orders"] = 1  # the write lands, then its invalidation; then it is acknowledged
        await cache.invalidate([("user", "u1")])
        late = asyncio.create_task(cache.read_through("user", "u1", load))
        await asyncio.sleep(0.05)
        release.set()
        assert (await asyncio.wait_for(early, 5)).body == b"0"  # began before: may be old
        assert (await asyncio.wait_for(late, 5)).body == b"1"
        # Neither load left the old state where a later read would find it.
        assert (await cache.read_through("user", "u1", load)).body == b"1"
    finally:
        release.set()
        await cache.close()

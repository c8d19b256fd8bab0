"""Cache coherence across two instances when Redis restarts (found by the fault run)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Literal

import pytest

from service.app import create_app
from service.cache.backends import create_backend
from service.cache.response_cache import Cached, ResponseCache
from service.cache.stats import CacheStats
from service.settings.model import Settings
from tests.helpers.app import AiohttpClient, Client, ready_client
from tests.helpers.servers import RedisServer


async def _instance(aiohttp_client: AiohttpClient, settings: Settings, url: str) -> Client:
    cache = dataclasses.replace(settings.cache, backend="redis", redis_url=url)
    app = create_app(dataclasses.replace(settings, cache=cache))
    return await ready_client(aiohttp_client, app)


async def _name(client: Client, path: str) -> str:
    response = await client.get(path)
    assert response.status == 200
    name: str = (await response.json())["user"]["name"]
    return name


async def test_the_first_write_after_a_redis_restart_is_seen_by_the_other_instance(
    aiohttp_client: AiohttpClient, settings: Settings, own_redis_server: RedisServer
) -> None:
    """After a restart, the writer's pooled Redis connection is dead: its first
    invalidation fails although Redis is back, while the reader has cached the old state."""
    writer = await _instance(aiohttp_client, settings, own_redis_server.url)
    reader = await _instance(aiohttp_client, settings, own_redis_server.url)
    user = await (await writer.post("/users", json={"name": "A", "email": "a@x.io"})).json()
    path = f"/users/{user['id']}"
    assert (await writer.patch(path, json={"name": "B"})).status == 200  # a pooled connection
    own_redis_server.restart()
    for _ in range(2):  # the reader reconnects and caches the current state again
        assert await _name(reader, path) == "B"
    assert (await writer.patch(path, json={"name": "C"})).status == 200
    assert await _name(reader, path) == "C"
    placed = await writer.post(f"{path}/orders", json={"amount": 1})
    assert placed.status == 201
    assert len((await (await reader.get(path)).json())["orders"]) == 1


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_read_after_a_write_never_joins_a_load_that_began_before_it(
    settings: Settings, redis_server: RedisServer, backend: Literal["memory", "redis"]
) -> None:
    """Concurrent misses share one load, but only under the same generation token."""
    cache_settings = dataclasses.replace(
        settings.cache,
        backend=backend,
        redis_url=redis_server.url,
        namespace=f"t{uuid.uuid4().hex}",
    )
    stats = CacheStats()
    backend_ = create_backend(cache_settings, stats)
    assert backend_ is not None
    cache = ResponseCache(cache_settings, backend_, stats)
    loading, release = asyncio.Event(), asyncio.Event()

    async def old_load() -> Cached:
        loading.set()
        await release.wait()
        return Cached('"old"', b"old body")

    async def fresh_load() -> Cached:
        return Cached('"new"', b"new body")

    try:
        first = asyncio.create_task(cache.read_through("user", "flight", old_load))
        await asyncio.wait_for(loading.wait(), 10)
        await cache.invalidate([("user", "flight")])  # a write lands and is acknowledged
        after = asyncio.create_task(cache.read_through("user", "flight", fresh_load))
        await asyncio.sleep(0.05)
        release.set()
        assert (await first).body == b"old body"  # it began before the write: fine
        assert (await after).body == b"new body"
    finally:
        await cache.close()


async def test_a_repeated_invalidation_that_another_request_delivered_is_done(
    settings: Settings,
) -> None:
    """A write's repeat of a failed delivery can find that a concurrent request already
    delivered everything owed: nothing is left to send, and that is success, not a 500."""
    cache_settings = dataclasses.replace(settings.cache, backend="memory")
    stats = CacheStats()
    backend = create_backend(cache_settings, stats)
    assert backend is not None
    cache = ResponseCache(cache_settings, backend, stats)
    try:
        assert await cache._deliver()  # what the repeat finds: nothing owed
    finally:
        await cache.close()

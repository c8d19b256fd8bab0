"""The memory cache is bounded in bytes, least recently used first out (issue: walking every
user used to pull each one into every worker's memory for the whole TTL)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.app import create_app
from service.cache.memory import ENTRY_OVERHEAD_BYTES, MemoryBackend
from service.cache.response_cache import RESPONSE_CACHE, Cached, ResponseCache
from service.cache.stats import CACHE_STATS, EVICTION, CacheStats
from service.settings.loading import load_settings
from service.settings.model import Settings
from service.storage.mongo import MONGO_LISTENERS
from tests.helpers.app import AiohttpClient, Client, ready_client
from tests.helpers.mongo import CommandRecorder

BOUND = 16 * 1024


def _backend(app: web.Application) -> MemoryBackend:
    backend = app[RESPONSE_CACHE]._backend
    assert isinstance(backend, MemoryBackend)
    return backend


async def _bounded_client(
    aiohttp_client: AiohttpClient, settings: Settings, recorder: CommandRecorder
) -> Client:
    cache = dataclasses.replace(settings.cache, backend="memory", memory_max_bytes=BOUND)
    app = create_app(dataclasses.replace(settings, cache=cache))
    app[MONGO_LISTENERS].append(recorder)
    return await ready_client(aiohttp_client, app)


async def test_walking_every_user_stays_within_the_bound(
    aiohttp_client: AiohttpClient, settings: Settings, recorder: CommandRecorder
) -> None:
    client = await _bounded_client(aiohttp_client, settings, recorder)
    ids = []
    for n in range(40):
        response = await client.post(
            "/users", json={"name": f"User {n} " + "x" * 80, "email": f"u{n}@example.com"}
        )
        assert response.status == 201
        user_id = (await response.json())["id"]
        for _ in range(3):
            order = {"amount": 1999 + n}
            placed = await client.post(f"/users/{user_id}/orders", json=order)
            assert placed.status == 201, await placed.text()
        ids.append(user_id)
    for user_id in ids:  # every user read once: each is a miss that stores an entry
        assert (await client.get(f"/users/{user_id}")).status == 200
    backend = _backend(client.app)
    assert 0 < backend.bytes <= BOUND
    evicted = client.app[CACHE_STATS].counts[("user", EVICTION)]
    assert evicted > 0
    scrape = await (await client.get("/metrics")).text()
    assert f'cache_evictions_total{{cache="user"}} {evicted}' in scrape.replace(".0\n", "\n")
    # An evicted user is read again from the database, correctly.
    before = len(recorder.started_names())
    again = await client.get(f"/users/{ids[0]}")
    assert again.status == 200
    assert (await again.json())["user"]["id"] == ids[0]
    assert len(recorder.started_names()) > before


async def test_the_least_recently_used_entry_goes_first(settings: Settings) -> None:
    stats = CacheStats()
    key_bytes = len("user-service:v1:user:k0")
    size = key_bytes + len('"e"') + 1000 + ENTRY_OVERHEAD_BYTES
    cache_settings = dataclasses.replace(settings.cache, memory_max_bytes=3 * size)
    backend = MemoryBackend(cache_settings.memory_max_bytes, stats)
    cache = ResponseCache(cache_settings, backend, stats)
    try:
        loads: list[str] = []

        def loader(ident: str) -> Callable[[], Awaitable[Cached]]:
            async def load() -> Cached:
                loads.append(ident)
                return Cached('"e"', b"b" * 1000)

            return load

        for ident in ("k0", "k1", "k2"):
            await cache.read_through("user", ident, loader(ident))
        await cache.read_through("user", "k0", loader("k0"))  # k0 is now the most recent
        await cache.read_through("user", "k3", loader("k3"))  # evicts k1, the least recent
        assert stats.counts[("user", EVICTION)] == 1
        loads.clear()
        for ident in ("k0", "k2", "k3"):
            await cache.read_through("user", ident, loader(ident))
        assert loads == []  # all three still cached
        await cache.read_through("user", "k1", loader("k1"))
        assert loads == ["k1"]
        assert backend.bytes <= cache_settings.memory_max_bytes
        # An entry larger than the whole bound is served but never stored.
        await cache.read_through("user", "big", lambda: _big(4 * size))
        assert backend.bytes <= cache_settings.memory_max_bytes
    finally:
        await cache.close()


async def test_entries_and_tokens_expire_with_the_ttl_they_were_stored_with() -> None:
    stats = CacheStats()
    backend = MemoryBackend(BOUND, stats)
    try:
        await backend.store("user-service:v1:user:short", "0", Cached('"e"', b"b"), ttl=1)
        await backend.store("user-service:v1:user:long", "0", Cached('"e"', b"b"), ttl=60)
        await backend.bump(["user-service:v1:user:bumped"], ttl=1)
        token, _ = await backend.lookup("user-service:v1:user:bumped")
        assert token != "0"
        held = backend.bytes
        assert backend.peek("user-service:v1:user:short") is not None
        await asyncio.sleep(1.1)
        assert backend.peek("user-service:v1:user:short") is None
        assert await backend.lookup("user-service:v1:user:short") == ("0", None)
        assert backend.peek("user-service:v1:user:long") is not None
        assert 0 < backend.bytes < held  # the expired entry no longer counts
        assert await backend.lookup("user-service:v1:user:bumped") == ("0", None)
        assert stats.counts[("user", EVICTION)] == 0  # expiry is not eviction
    finally:
        await backend.close()


async def _big(n: int) -> Cached:
    return Cached('"e"', b"b" * n)


def test_the_bound_is_a_setting() -> None:
    env = {"SERVICE_ENV": "test", "CACHE_MEMORY_MAX_BYTES": "65536"}
    assert load_settings(env).cache.memory_max_bytes == 65536
    assert load_settings({"SERVICE_ENV": "test"}).cache.memory_max_bytes == 8 * 1024 * 1024

"""The response cache against real backends: hits skip the database, writes are never
followed by stale reads, concurrent misses read once, and a failing Redis is harmless."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from service.app import create_app
from service.cache.backends import create_backend
from service.cache.response_cache import Cached, ResponseCache
from service.cache.stats import CACHE_STATS, CacheStats
from service.settings.checks import check_worker_cache
from service.settings.loading import load_settings
from service.settings.model import CacheBackend, ConfigError, Settings
from service.storage.mongo import MONGO_LISTENERS
from tests.helpers.app import AiohttpClient, Client, ready_client
from tests.helpers.http import until_ready
from tests.helpers.mongo import CommandRecorder
from tests.helpers.servers import RedisServer, free_port, wait_for_port
from tests.helpers.service import run_service, spawn_service


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> CacheBackend:
    value: CacheBackend = request.param
    return value


@pytest.fixture
def cache_settings(
    settings: Settings, backend: CacheBackend, request: pytest.FixtureRequest
) -> Settings:
    cache = dataclasses.replace(settings.cache, backend=backend)
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        cache = dataclasses.replace(cache, redis_url=server.url)
    return dataclasses.replace(settings, cache=cache)


@pytest.fixture
async def cached_client(
    aiohttp_client: AiohttpClient, cache_settings: Settings, recorder: CommandRecorder
) -> Client:
    app = create_app(cache_settings)
    app[MONGO_LISTENERS].append(recorder)
    return await ready_client(aiohttp_client, app)


def stats(client: Client) -> CacheStats:
    app: web.Application = client.app
    return app[CACHE_STATS]


async def new_user(client: Client, email: str = "ada@example.com") -> dict[str, Any]:
    response = await client.post("/users", json={"name": "Ada", "email": email})
    assert response.status == 201
    user: dict[str, Any] = await response.json()
    return user


async def test_a_hit_makes_no_database_call_and_serves_identical_bytes(
    cached_client: Client, recorder: CommandRecorder
) -> None:
    user = await new_user(cached_client)
    first = await cached_client.get(f"/users/{user['id']}")
    recorder.clear()
    second = await cached_client.get(f"/users/{user['id']}")
    assert second.status == 200
    assert recorder.started_names() == []
    assert await second.read() == await first.read()
    assert second.headers["ETag"] == first.headers["ETag"]
    assert stats(cached_client).counts[("user", "hit")] == 1
    not_modified = await cached_client.get(
        f"/users/{user['id']}", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert not_modified.status == 304


async def test_orders_are_cached_too(cached_client: Client, recorder: CommandRecorder) -> None:
    user = await new_user(cached_client)
    order = await (
        await cached_client.post(f"/users/{user['id']}/orders", json={"amount": 3})
    ).json()
    await cached_client.get(f"/orders/{order['id']}")
    recorder.clear()
    assert (await cached_client.get(f"/orders/{order['id']}")).status == 200
    assert recorder.started_names() == []


async def test_every_write_invalidates_what_it_changes(cached_client: Client) -> None:
    user = await new_user(cached_client)
    path = f"/users/{user['id']}"
    await cached_client.get(path)  # cached
    await cached_client.patch(path, json={"name": "Countess"})
    assert (await (await cached_client.get(path)).json())["user"]["name"] == "Countess"
    order = await (await cached_client.post(f"{path}/orders", json={"amount": 9})).json()
    assert [o["id"] for o in (await (await cached_client.get(path)).json())["orders"]] == [
        order["id"]
    ]
    assert (await cached_client.get(f"/orders/{order['id']}")).status == 200  # cached
    assert (await cached_client.delete(path)).status == 204
    assert (await cached_client.get(path)).status == 404
    assert (await cached_client.get(f"/orders/{order['id']}")).status == 404  # cascade
    assert stats(cached_client).counts[("user", "invalidation")] >= 3


async def test_concurrent_misses_read_the_database_once(
    cached_client: Client, recorder: CommandRecorder
) -> None:
    user = await new_user(cached_client)
    recorder.clear()
    responses = await asyncio.gather(
        *(cached_client.get(f"/users/{user['id']}") for _ in range(25))
    )
    assert {r.status for r in responses} == {200}
    assert sorted(recorder.started_names()) == ["find", "find"]  # one user + one orders query


@pytest.mark.one_driver  # no database: and a second run would find this run's entry
async def test_a_slow_read_cannot_refill_the_cache_after_a_write(
    cache_settings: Settings,
) -> None:
    """The read fetches the token, a write lands, then the read stores its old result."""
    stats = CacheStats()
    backend = create_backend(cache_settings.cache, stats)
    assert backend is not None
    cache = ResponseCache(cache_settings.cache, backend, stats)
    loading = asyncio.Event()
    release = asyncio.Event()

    async def slow_old_load() -> Cached:
        loading.set()
        await release.wait()
        return Cached('"old"', b"old body")

    async def fresh_load() -> Cached:
        return Cached('"new"', b"new body")

    try:
        reader = asyncio.create_task(cache.read_through("user", "race", slow_old_load))
        await loading.wait()
        await cache.invalidate([("user", "race")])  # the write's invalidation
        release.set()
        assert (await reader).body == b"old body"  # it started before the write: fine
        after = await cache.read_through("user", "race", fresh_load)
        assert after.body == b"new body"
    finally:
        await cache.close()


async def test_keys_are_namespaced_and_versioned(
    aiohttp_client: AiohttpClient, settings: Settings, redis_server: RedisServer
) -> None:
    for namespace in ("user-service", "blue"):
        cache = dataclasses.replace(
            settings.cache, backend="redis", redis_url=redis_server.url, namespace=namespace
        )
        client = await ready_client(
            aiohttp_client, create_app(dataclasses.replace(settings, cache=cache))
        )
        user = await new_user(client, email=f"{namespace}@example.com")
        await client.get(f"/users/{user['id']}")
        async with aioredis.from_url(redis_server.url) as direct:
            keys = [key.decode() async for key in direct.scan_iter(f"*{user['id']}*")]
        assert keys
        assert all(key.startswith(f"{namespace}:v1:user:{user['id']}:") for key in keys)


async def test_redis_down_slow_or_back(
    aiohttp_client: AiohttpClient, settings: Settings, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    redis_server = RedisServer(tmp_path / "redis")  # this test stops it: its own instance
    redis_server.start()
    try:
        cache = dataclasses.replace(settings.cache, backend="redis", redis_url=redis_server.url)
        client = await ready_client(
            aiohttp_client, create_app(dataclasses.replace(settings, cache=cache))
        )
        path = f"/users/{(await new_user(client))['id']}"
        await client.get(path)
        assert (await client.get(path)).status == 200
        assert stats(client).counts[("user", "hit")] == 1

        redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="service.cache.response_cache"):
            for _ in range(5):
                assert (await client.get(path)).status == 200
            assert (await client.patch(path, json={"name": "Down"})).status == 200
            body = await (await client.get(path)).json()
        assert body["user"]["name"] == "Down"
        assert stats(client).counts[("user", "error")] >= 5
        warnings = [r for r in caplog.records if r.name == "service.cache.response_cache"]
        assert len(warnings) == 1  # rate-limited

        redis_server.start()
        for _ in range(3):
            assert (await client.get(path)).status == 200
        hits_before = stats(client).counts[("user", "hit")]
        assert (await (await client.get(path)).json())["user"]["name"] == "Down"
        assert stats(client).counts[("user", "hit")] == hits_before + 1  # caching resumed

        async with aioredis.from_url(redis_server.url) as direct:
            stall = direct.execute_command("DEBUG", "SLEEP", "1.5")  # type: ignore[no-untyped-call]
            sleeper = asyncio.ensure_future(stall)
            await asyncio.sleep(0.1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert (await client.get(path)).status == 200  # a stalled Redis is skipped
            assert loop.time() - started < 1.2
            await sleeper
    finally:
        redis_server.stop()


async def test_invalidation_owed_during_an_outage_is_delivered_before_trusting_the_cache(
    aiohttp_client: AiohttpClient, settings: Settings, redis_server: RedisServer
) -> None:
    """Redis keeps its data but stops answering (CLIENT PAUSE): a write's invalidation
    cannot land, so the old entry must not be served once Redis answers again."""
    cache = dataclasses.replace(settings.cache, backend="redis", redis_url=redis_server.url)
    client = await ready_client(
        aiohttp_client, create_app(dataclasses.replace(settings, cache=cache))
    )
    path = f"/users/{(await new_user(client))['id']}"
    await client.get(path)
    async with aioredis.from_url(redis_server.url) as direct:
        await direct.execute_command("CLIENT", "PAUSE", "1000", "ALL")  # type: ignore[no-untyped-call]
        assert (await client.patch(path, json={"name": "Paused"})).status == 200
        assert (await (await client.get(path)).json())["user"]["name"] == "Paused"
        await asyncio.sleep(1.1)  # Redis answers again, the old entry still stored in it
        for _ in range(3):
            assert (await (await client.get(path)).json())["user"]["name"] == "Paused"


def test_memory_cache_with_several_workers_needs_an_opt_in(test_env: dict[str, str]) -> None:
    settings = load_settings({**test_env, "CACHE_BACKEND": "memory"})
    check_worker_cache(settings, 1)
    with pytest.raises(ConfigError, match="CACHE_BACKEND: memory with 2 workers"):
        check_worker_cache(settings, 2)
    allowed = load_settings(
        {**test_env, "CACHE_BACKEND": "memory", "CACHE_MEMORY_ACROSS_WORKERS": "1"}
    )
    check_worker_cache(allowed, 4)
    env = {**os.environ, **test_env, "CACHE_BACKEND": "memory", "WEB_CONCURRENCY": "2"}
    result = run_service(env, kind="gunicorn")
    assert result.returncode == 2
    assert "CACHE_BACKEND: memory with 2 workers" in result.stderr


@pytest.fixture
def two_instances(
    test_env: dict[str, str], redis_server: RedisServer, tmp_path: Path
) -> Iterator[list[str]]:
    processes, bases = [], []
    for name in ("a", "b"):
        port = free_port()
        env = {**os.environ, **test_env, "PORT": str(port), "CACHE_BACKEND": "redis",
               "REDIS_URL": redis_server.url}  # fmt: skip
        processes.append(spawn_service("python -m service", env, tmp_path / f"{name}.log"))
        wait_for_port(port, process=processes[-1])
        bases.append(f"http://127.0.0.1:{port}")
    yield bases
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=30)


async def test_two_instances_sharing_redis_never_serve_a_stale_read(
    two_instances: list[str],
) -> None:
    a, b = two_instances
    async with aiohttp.ClientSession() as session:
        for base in (a, b):
            await until_ready(session, base)
        async with session.post(f"{a}/users", json={"name": "n0", "email": "x@example.com"}) as r:
            user = await r.json()
        path = f"/users/{user['id']}"
        stale = 0
        for i in range(1, 41):
            async with session.get(f"{b}{path}") as primed:  # B caches the current state
                assert primed.status == 200
            async with session.patch(f"{a}{path}", json={"name": f"n{i}"}) as written:
                assert written.status == 200
            if i % 4 == 0:
                async with session.post(f"{a}{path}/orders", json={"amount": i}) as placed:
                    assert placed.status == 201
            async with session.get(f"{b}{path}") as read:
                body = await read.json()
            stale += body["user"]["name"] != f"n{i}"
            stale += len(body["orders"]) != i // 4
        assert stale == 0

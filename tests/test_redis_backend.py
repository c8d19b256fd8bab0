"""The Redis backend against a real redis-server: lookups (redis-py's client running the
lookup script, a loop turn's lookups in one call) and stores and invalidations (aiocache),
under concurrency, a chosen database, a stall, a restart and a server that never answers."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from service.cache.lookup_batch import MAX_BATCH
from service.cache.redis_backend import RedisBackend
from service.cache.response_cache import BACKEND_ERRORS, Cached, ResponseCache
from service.cache.stats import ERROR, CacheStats
from service.settings.loading import load_settings
from service.settings.redis_url import RedisTarget
from tests.helpers.servers import RedisServer, silent_server


def entry(n: int) -> Cached:
    return Cached(f'"v{n}"', b"body %d" % n)


@pytest.fixture
def key() -> str:
    return f"backend-test:{uuid.uuid4().hex}"


@pytest.fixture
async def backend(redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    made = RedisBackend(RedisTarget.from_url(redis_server.url), 1.0)
    yield made
    await made.close()


async def test_concurrent_lookups_get_their_own_entries(
    backend: RedisBackend, redis_server: RedisServer, key: str
) -> None:
    n = 100
    await asyncio.gather(*(backend.store(f"{key}:{i}", "0", entry(i), 60) for i in range(n)))
    async with aioredis.from_url(redis_server.url) as direct:
        await direct.hset(f"{key}:wrong:gen", "field", "value")  # a key of another type
        await direct.set(f"{key}:wrong-entry:gen", "0")
        await direct.hset(f"{key}:wrong-entry:0", "field", "value")
    found = await asyncio.gather(
        *(backend.lookup(f"{key}:{i}") for i in range(n)),
        backend.lookup(f"{key}:missing"),
        backend.lookup(f"{key}:wrong"),
        backend.lookup(f"{key}:wrong-entry"),
        return_exceptions=True,
    )
    assert found[:n] == [("0", entry(i)) for i in range(n)]
    assert found[n] == ("0", None)
    # An error reply fails that lookup alone, not the others batched with it.
    for failed in found[n + 1 :]:
        assert isinstance(failed, ResponseError), failed
        assert "WRONGTYPE" in str(failed)
    assert await backend.lookup(f"{key}:0") == ("0", entry(0))


async def test_concurrent_lookups_share_connections_and_calls(
    own_redis_server: RedisServer, key: str
) -> None:
    """A loop turn's lookups go as one call; with a connection and a call each, as redis-py
    does by itself (redis/redis-py#3767), 300 lookups took 300 of both, or failed beyond
    the pool's 100 connections."""
    n = 300
    backend = RedisBackend(RedisTarget.from_url(own_redis_server.url), 1.0)
    try:
        for start in range(0, n, 100):  # aiocache's stores still take a connection each
            stores = (
                backend.store(f"{key}:{i}", "0", entry(i), 60) for i in range(start, start + 100)
            )
            await asyncio.gather(*stores)
        await backend.lookup(key)  # Redis has the script now (a fresh one answers NOSCRIPT)
        async with aioredis.from_url(own_redis_server.url) as direct:
            before = {**await direct.info("stats"), **await direct.info("commandstats")}
            found = await asyncio.gather(*(backend.lookup(f"{key}:{i}") for i in range(n)))
            after = {**await direct.info("stats"), **await direct.info("commandstats")}
    finally:
        await backend.close()
    assert found == [("0", entry(i)) for i in range(n)]
    calls = after["cmdstat_evalsha"]["calls"] - before.get("cmdstat_evalsha", {}).get("calls", 0)
    connections = after["total_connections_received"] - before["total_connections_received"]
    assert calls == math.ceil(n / MAX_BATCH), calls
    assert connections <= calls, connections


async def test_a_cancelled_lookup_leaves_the_others_in_its_batch_alone(
    backend: RedisBackend, redis_server: RedisServer, key: str
) -> None:
    await asyncio.gather(*(backend.store(f"{key}:{i}", "0", entry(i), 60) for i in range(10)))
    async with aioredis.from_url(redis_server.url) as direct:
        stall = asyncio.ensure_future(direct.execute_command("DEBUG", "SLEEP", "0.2"))  # type: ignore[no-untyped-call]
        await asyncio.sleep(0.05)
        lookups = [asyncio.create_task(backend.lookup(f"{key}:{i}")) for i in range(10)]
        await asyncio.sleep(0)  # every lookup has joined the batch; it is not sent yet
        lookups[3].cancel()
        await asyncio.sleep(0.05)  # the batch is sent, its reply held up by the stall
        lookups[6].cancel()
        found = await asyncio.gather(*lookups, return_exceptions=True)
        await stall
    for i, result in enumerate(found):
        if i in (3, 6):
            assert isinstance(result, asyncio.CancelledError), result
        else:
            assert result == ("0", entry(i))
    assert await backend.lookup(f"{key}:6") == ("0", entry(6))


async def test_redis_stopped_mid_batch_fails_each_lookup_as_a_counted_miss(
    own_redis_server: RedisServer,
) -> None:
    env = {"SERVICE_ENV": "test", "CACHE_BACKEND": "redis", "REDIS_URL": own_redis_server.url,
           "CACHE_NAMESPACE": f"batch-{uuid.uuid4().hex[:8]}"}  # fmt: skip
    settings = dataclasses.replace(load_settings(env).cache, timeout_ms=5000)
    stats = CacheStats()
    cache = ResponseCache(
        settings, RedisBackend(RedisTarget.from_url(own_redis_server.url), 5.0), stats
    )
    loads = 0

    async def load() -> Cached:
        nonlocal loads
        loads += 1
        return entry(loads)

    loop = asyncio.get_running_loop()
    try:
        await cache.read_through("user", "warm", load)  # a pooled connection for the lookups
        async with aioredis.from_url(own_redis_server.url) as direct:
            stall = asyncio.ensure_future(direct.execute_command("DEBUG", "SLEEP", "3"))  # type: ignore[no-untyped-call]
            await asyncio.sleep(0.05)
            reads = [
                asyncio.create_task(cache.read_through("user", str(i), load)) for i in range(10)
            ]
            await asyncio.sleep(0.1)  # the batch is sent, its reply held up by the stall
            started = loop.time()
            assert own_redis_server.process is not None
            own_redis_server.process.kill()  # gone without a reply
            found = await asyncio.gather(*reads)
            assert loop.time() - started < 1.0  # failed by the lost connection, not a timeout
            await asyncio.gather(stall, return_exceptions=True)  # its connection is gone too
        assert len(set(found)) == 10  # each read served by its own load
        assert loads == 11
        assert stats.counts[("user", ERROR)] == 10
    finally:
        own_redis_server.stop()
        await cache.close()


async def test_a_bump_retires_the_entry_for_every_reader(
    backend: RedisBackend, redis_server: RedisServer, key: str
) -> None:
    await backend.store(key, "0", entry(0), 60)
    other = RedisBackend(RedisTarget.from_url(redis_server.url), 1.0)  # another instance
    try:
        assert await other.lookup(key) == ("0", entry(0))
        await backend.bump([key], 60)
        token, found = await other.lookup(key)
        assert (token != "0", found) == (True, None)
        await backend.store(key, "0", entry(1), 60)  # a load that began before the bump
        assert await other.lookup(key) == (token, None)
        await other.store(key, token, entry(2), 60)
        assert await backend.lookup(key) == (token, entry(2))
    finally:
        await other.close()


async def test_the_lookup_script_is_sent_again_after_redis_forgets_it(
    backend: RedisBackend, redis_server: RedisServer, key: str
) -> None:
    await asyncio.gather(*(backend.store(f"{key}:{i}", "0", entry(i), 60) for i in range(10)))
    assert await backend.lookup(f"{key}:0") == ("0", entry(0))
    async with aioredis.from_url(redis_server.url) as direct:
        await direct.script_flush()  # as a restarted or failed-over Redis has
    found = await asyncio.gather(*(backend.lookup(f"{key}:{i}") for i in range(10)))
    assert found == [("0", entry(i)) for i in range(10)]


async def test_both_clients_use_the_database_the_url_names(
    redis_server: RedisServer, key: str
) -> None:
    base = redis_server.url.rsplit("/", 1)[0]
    five = RedisBackend(RedisTarget.from_url(f"{base}/5"), 1.0)
    zero = RedisBackend(RedisTarget.from_url(f"{base}/0"), 1.0)
    try:
        await five.store(key, "0", entry(5), 60)  # aiocache's client
        assert await five.lookup(key) == ("0", entry(5))  # redis-py's client
        assert await zero.lookup(key) == ("0", None)
        async with aioredis.from_url(f"{base}/5") as direct:
            assert await direct.exists(f"{key}:0") == 1
    finally:
        await five.close()
        await zero.close()


async def test_a_stalled_redis_fails_calls_at_the_timeout_then_recovers(
    own_redis_server: RedisServer, key: str
) -> None:
    # The URL's own socket_timeout is longer: cache.timeout_ms (here 0.2 s) still governs.
    url = f"{own_redis_server.url}?socket_timeout=30"
    backend = RedisBackend(RedisTarget.from_url(url), 0.2)
    loop = asyncio.get_running_loop()
    try:
        await backend.store(key, "0", entry(0), 60)
        assert await backend.lookup(key) == ("0", entry(0))
        async with aioredis.from_url(own_redis_server.url) as direct:
            stall = asyncio.ensure_future(direct.execute_command("DEBUG", "SLEEP", "1"))  # type: ignore[no-untyped-call]
            await asyncio.sleep(0.05)
            started = loop.time()
            # A write that timed out may still land once Redis wakes: another key's.
            calls: list[Awaitable[object]] = [backend.lookup(key) for _ in range(10)]
            calls += [backend.store(f"{key}:w", "0", entry(1), 60), backend.bump([f"{key}:w"], 60)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, BACKEND_ERRORS) for r in results), results
            assert loop.time() - started < 0.6
            await stall
        assert await backend.lookup(key) == ("0", entry(0))  # fresh connections
        await backend.bump([key], 60)
        assert (await backend.lookup(key))[1] is None
    finally:
        await backend.close()


async def test_a_restarted_redis_is_reconnected(own_redis_server: RedisServer, key: str) -> None:
    backend = RedisBackend(RedisTarget.from_url(own_redis_server.url), 0.5)
    try:
        await backend.store(key, "0", entry(0), 60)
        assert await backend.lookup(key) == ("0", entry(0))
        own_redis_server.stop()
        for _ in range(2):  # the lost connection, then refused connects
            with pytest.raises(RedisConnectionError):
                await backend.lookup(key)
        with pytest.raises(RedisConnectionError):
            await backend.store(key, "0", entry(1), 60)
        own_redis_server.start()
        assert await backend.lookup(key) == ("0", None)  # it kept no data
        await backend.store(key, "0", entry(2), 60)
        assert await backend.lookup(key) == ("0", entry(2))
    finally:
        await backend.close()


async def test_a_redis_that_never_answers_fails_calls_at_the_timeout(key: str) -> None:
    """Connected, but no reply to the connection's set-up or to the command."""
    loop = asyncio.get_running_loop()
    async with silent_server() as port:
        backend = RedisBackend(RedisTarget.from_url(f"redis://127.0.0.1:{port}/2"), 0.2)
        try:
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: backend.lookup(key),
                lambda: backend.store(key, "0", entry(0), 60),
            ]
            for call in calls:
                started = loop.time()
                with pytest.raises(BACKEND_ERRORS):
                    await call()
                assert loop.time() - started < 0.6
        finally:
            await backend.close()

"""The Redis backend against a real redis-server: lookups (redis-py's client running the
lookup script) and stores and invalidations (aiocache), under concurrency, a chosen
database, a stall, a restart and a server that never answers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from service.cache.redis_backend import RedisBackend
from service.cache.response_cache import BACKEND_ERRORS, Cached
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
    n = 100  # redis-py's pool size: each lookup in flight holds a connection of its own
    await asyncio.gather(*(backend.store(f"{key}:{i}", "0", entry(i), 60) for i in range(n)))
    found = await asyncio.gather(*(backend.lookup(f"{key}:{i}") for i in range(n)))
    assert found == [("0", entry(i)) for i in range(n)]
    assert await backend.lookup(f"{key}:missing") == ("0", None)
    # An error reply (a generation key of another type) fails that lookup alone.
    async with aioredis.from_url(redis_server.url) as direct:
        await direct.hset(f"{key}:wrong:gen", "field", "value")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await backend.lookup(f"{key}:wrong")
    assert await backend.lookup(f"{key}:0") == ("0", entry(0))


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
    await backend.store(key, "0", entry(0), 60)
    assert await backend.lookup(key) == ("0", entry(0))
    async with aioredis.from_url(redis_server.url) as direct:
        await direct.script_flush()  # as a restarted or failed-over Redis has
    assert await backend.lookup(key) == ("0", entry(0))


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

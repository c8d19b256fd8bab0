"""The pipelined Redis connection of the cache's hit path, against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from service.cache.pipelined import PipelinedRedis, pack
from service.settings.redis_url import RedisTarget
from tests.helpers.servers import RedisServer


def test_commands_are_packed_as_resp_arrays() -> None:
    assert pack(b"GET", b"k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert pack(b"SET", b"", b"a\r\nb") == b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\na\r\nb\r\n"


async def test_concurrent_commands_get_their_own_replies(redis_server: RedisServer) -> None:
    async with aioredis.from_url(redis_server.url) as direct:
        await direct.mset({f"resp:{i}": f"value-{i}" for i in range(500)})
    pipe = PipelinedRedis(RedisTarget.from_url(redis_server.url), 1.0)
    try:
        replies = await asyncio.gather(*(pipe.call(b"GET", b"resp:%d" % i) for i in range(500)))
        assert replies == [b"value-%d" % i for i in range(500)]
        assert await pipe.call(b"GET", b"resp:missing") is None
        with pytest.raises(ResponseError, match="unknown command"):
            await pipe.call(b"NOSUCHCOMMAND")
        assert await pipe.call(b"PING") == b"PONG"  # an error reply does not break the pipe
    finally:
        await pipe.close()


async def test_the_database_index_is_selected(redis_server: RedisServer) -> None:
    async with aioredis.from_url(redis_server.url.rsplit("/", 1)[0] + "/5") as direct:
        await direct.set("resp:db", "five")
    pipe = PipelinedRedis(RedisTarget.from_url(redis_server.url.rsplit("/", 1)[0] + "/5"), 1.0)
    other = PipelinedRedis(RedisTarget.from_url(redis_server.url), 1.0)
    try:
        assert await pipe.call(b"GET", b"resp:db") == b"five"
        assert await other.call(b"GET", b"resp:db") is None
    finally:
        await pipe.close()
        await other.close()


async def test_a_stalled_redis_fails_calls_at_the_timeout_then_recovers(
    own_redis_server: RedisServer,
) -> None:
    pipe = PipelinedRedis(RedisTarget.from_url(own_redis_server.url), 0.2)
    loop = asyncio.get_running_loop()
    try:
        assert await pipe.call(b"PING") == b"PONG"
        async with aioredis.from_url(own_redis_server.url) as direct:
            stall = asyncio.ensure_future(direct.execute_command("DEBUG", "SLEEP", "1"))  # type: ignore[no-untyped-call]
            await asyncio.sleep(0.05)
            started = loop.time()
            results = await asyncio.gather(
                *(pipe.call(b"PING") for _ in range(10)), return_exceptions=True
            )
            assert all(isinstance(r, TimeoutError) for r in results), results
            assert loop.time() - started < 0.6
            await stall
        assert await pipe.call(b"PING") == b"PONG"  # a fresh connection
    finally:
        await pipe.close()


async def test_a_restarted_redis_is_reconnected(own_redis_server: RedisServer) -> None:
    pipe = PipelinedRedis(RedisTarget.from_url(own_redis_server.url), 0.5)
    try:
        assert await pipe.call(b"PING") == b"PONG"
        own_redis_server.stop()
        with pytest.raises(ConnectionError):  # the lost connection, then refused connects
            await pipe.call(b"PING")
        with pytest.raises(ConnectionError):
            await pipe.call(b"PING")
        own_redis_server.start()
        assert await pipe.call(b"PING") == b"PONG"
    finally:
        await pipe.close()

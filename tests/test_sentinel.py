"""Redis Sentinel: REDIS_URL read by redis-py's own rules, and two instances that follow a
forced failover and then the SIGKILL of the new primary with no stale read after an
acknowledged write, no failed read, and hits resuming after each (the short `make chaos
ARGS=--sentinel`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.connection import parse_url
from redis.exceptions import RedisError

from service.app import create_app
from service.cache.redis_backend import RedisBackend
from service.cache.response_cache import Cached
from service.cache.sentinel import SentinelLink
from service.cache.stats import CACHE_STATS, HIT, PRIMARY_CHANGE, CacheStats
from service.settings.loading import load_settings
from service.settings.model import ConfigError, Settings
from service.settings.redis_url import RedisTarget
from tests.helpers.app import AiohttpClient, Client, ready_client, wait_until
from tests.helpers.sentinel import SERVICE_NAME, SentinelGroup
from tests.helpers.tools import require_command


@pytest.mark.parametrize(
    ("sentinel_url", "redis_url"),
    [
        ("redis+sentinel://h:1/mymaster", "redis://x"),
        ("redis+sentinel://u:p%40ss@h:1,k:2/mymaster/3", "redis://u:p%40ss@x/3"),
        ("redis+sentinel://:pw@h/mymaster/2?socket_keepalive=yes", "redis://:pw@x/2?socket_keepalive=yes"),
        ("rediss+sentinel://h/m?ssl_cert_reqs=none&ssl_check_hostname=no", "rediss://x?ssl_cert_reqs=none&ssl_check_hostname=no"),
        ("REDIS+SENTINEL://h/m?db=4&sentinel_password=s", "redis://x/?db=4"),
    ],
)  # fmt: skip
def test_data_node_options_are_redis_pys_reading_of_the_redis_url(
    sentinel_url: str, redis_url: str
) -> None:
    expected = {k: v for k, v in parse_url(redis_url).items() if k not in ("host", "port")}
    assert dict(RedisTarget.from_url(sentinel_url).options) == expected


def test_sentinels_service_name_and_sentinel_password() -> None:
    target = RedisTarget.from_url("redis+sentinel://a:1,b,[::1]:3/mymaster/0?sentinel_password=s")
    assert target.sentinels == (("a", 1), ("b", 26379), ("::1", 3))
    assert target.service_name == SERVICE_NAME
    assert target.sentinel_password == "s"
    assert RedisTarget.from_url("redis://h/0").service_name == ""  # not Sentinel


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://h:1,k:2/", "no service name"),
        ("redis+sentinel://h:1", "no service name"),
        ("redis+sentinel:///mymaster", "no sentinel named"),
        ("redis+sentinel://u:secret@/mymaster", "no sentinel named"),
        ("redis+sentinel://h:port/mymaster", "a sentinel is not host[:port]"),
        ("redis+sentinel://h/mymaster/x", "the path must be a database number"),
        ("redis+sentinel://h/mymaster?bogus=1", "unknown option 'bogus'"),
        ("redis+cluster://h:7000/0", "Redis Cluster is not supported"),
        ("rediss+cluster://h:7000", "Redis Cluster is not supported"),
        ("redis+sentinel+cluster://h/m", "Redis Cluster is not supported"),
    ],
)
def test_unusable_sentinel_and_cluster_urls_are_one_line_naming_redis_url(
    url: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"SERVICE_ENV": "test", "CACHE_BACKEND": "redis", "REDIS_URL": url})
    message = str(caught.value)
    assert message.startswith("REDIS_URL: ")
    assert reason in message
    assert "\n" not in message
    assert "secret" not in message


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    require_command("redis-server", "redis-server")
    group = SentinelGroup(tmp_path)
    group.start()
    yield group
    group.stop()


@dataclasses.dataclass
class Tally:
    stale: int = 0
    failed_reads: int = 0
    refused_writes: int = 0
    acknowledged: int = 0


async def _instance(aiohttp_client: AiohttpClient, settings: Settings, url: str) -> Client:
    cache = dataclasses.replace(settings.cache, backend="redis", redis_url=url)
    return await ready_client(
        aiohttp_client, create_app(dataclasses.replace(settings, cache=cache))
    )


def _hits(client: Client) -> int:
    return client.app[CACHE_STATS].counts[("user", HIT)]


async def _write_and_check(
    writer: Client, readers: list[Client], path: str, name: str, tally: Tally
) -> None:
    """PATCH until acknowledged (a 503 is repeated, as a client would), then read back
    from every instance: an older name is a stale read, anything but 200 a failed one."""
    while True:
        response = await writer.patch(path, json={"name": name})
        if response.status == 200:
            break
        assert response.status == 503
        assert "Retry-After" in response.headers
        tally.refused_writes += 1
        await asyncio.sleep(0.1)
    tally.acknowledged += 1
    for reader in readers:
        for _ in range(2):  # the second may be a hit on what the first stored
            read = await reader.get(path)
            if read.status != 200:
                tally.failed_reads += 1
                continue
            body: dict[str, Any] = await read.json()
            if body["user"]["name"] != name:
                tally.stale += 1


async def _through(
    group: SentinelGroup, writer: Client, reader: Client, path: str, tally: Tally, label: str
) -> None:
    """Writes and reads until the cache answers hits again and a replica is back."""
    hits_before, n = _hits(reader), 0
    while _hits(reader) <= hits_before or not group.replicas_in_sync():
        n += 1
        await _write_and_check(writer, [writer, reader], path, f"{label}-{n}", tally)
        assert n < 400, "hits never resumed"


async def test_failover_then_sigkill_of_the_new_primary_serves_nothing_stale(
    aiohttp_client: AiohttpClient,
    settings: Settings,
    sentinel_group: SentinelGroup,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="service.cache.sentinel")
    writer = await _instance(aiohttp_client, settings, sentinel_group.url)
    reader = await _instance(aiohttp_client, settings, sentinel_group.url)
    user = await (await writer.post("/users", json={"name": "start", "email": "s@x.io"})).json()
    path, tally = f"/users/{user['id']}", Tally()
    await _through(sentinel_group, writer, reader, path, tally, "before")

    first = sentinel_group.current_primary_port()
    sentinel_group.force_failover()
    await _through(sentinel_group, writer, reader, path, tally, "forced")
    await wait_until(lambda: _changed(sentinel_group, first), timeout=20)
    await _through(sentinel_group, writer, reader, path, tally, "after-forced")

    second = sentinel_group.current_primary_port()
    assert second != first
    sentinel_group.node(second).kill()
    await wait_until(lambda: _changed(sentinel_group, second), timeout=30)
    # Back as a replica: writes can be confirmed again.
    sentinel_group.node(second).start_as_replica(sentinel_group.current_primary_port())
    await _through(sentinel_group, writer, reader, path, tally, "killed")

    assert (tally.stale, tally.failed_reads) == (0, 0)
    assert tally.acknowledged > 0
    await wait_until(lambda: _counted_changes(writer, 2), timeout=10)
    assert any("Redis primary of mymaster changed" in r.getMessage() for r in caplog.records)


async def _changed(group: SentinelGroup, old: int) -> bool:
    return group.current_primary_port() != old


async def _counted_changes(client: Client, n: int) -> bool:
    return client.app[CACHE_STATS].counts[("redis", PRIMARY_CHANGE)] >= n


@pytest.mark.one_driver
async def test_a_write_no_replica_confirms_is_stored_but_not_acknowledged(
    aiohttp_client: AiohttpClient, settings: Settings, sentinel_group: SentinelGroup
) -> None:
    """With the replica gone, a failover could lose the write's invalidation: 503."""
    writer = await _instance(aiohttp_client, settings, sentinel_group.url)
    user = await (await writer.post("/users", json={"name": "a", "email": "a@x.io"})).json()
    path = f"/users/{user['id']}"
    assert (await writer.get(path)).status == 200
    sentinel_group.replica.kill()
    refused = await writer.patch(path, json={"name": "b"})
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    read = await writer.get(path)  # stored; this process reads around the cache meanwhile
    assert (read.status, (await read.json())["user"]["name"]) == (200, "b")
    sentinel_group.replica.start_as_replica(sentinel_group.primary.port)
    await wait_until(lambda: _in_sync(sentinel_group), timeout=30)
    assert (await writer.patch(path, json={"name": "c"})).status == 200


async def _in_sync(group: SentinelGroup) -> bool:
    return group.replicas_in_sync()


async def test_a_bump_only_a_replaced_primary_holds_is_not_confirmed(
    sentinel_group: SentinelGroup,
) -> None:
    """The failure this design exists for, made deterministic: the replica is promoted
    behind the primary's back (as in a failover's first moments), and a bump then lands on
    the old primary alone. Unconfirmed (the redis:// way) it is acknowledged, and the new
    primary still serves the entry it retired; through Sentinel it is a failed delivery."""
    key, entry = "sentinel-test:zombie", Cached('"v1"', b"old body")
    backend = RedisBackend(RedisTarget.from_url(sentinel_group.url), 1.0)
    direct = RedisBackend(RedisTarget.from_url(sentinel_group.primary.url), 1.0)
    promoted = RedisBackend(RedisTarget.from_url(sentinel_group.replica.url), 1.0)
    try:
        await backend.store(key, "0", entry, 60)
        await backend.bump([f"{key}-other"], 60)  # confirmed: the entry is on the replica too
        with sentinel_group.replica.client() as replica:
            replica.replicaof("NO", "ONE")
        with pytest.raises(RedisError, match="0 of 1 replicas confirmed"):
            await backend.bump([key], 60)
        await direct.bump([key], 60)  # acknowledged by the old primary alone
        assert (await direct.lookup(key))[1] is None  # retired there...
        assert await promoted.lookup(key) == ("0", entry)  # ...but not on the new primary
    finally:
        for made in (backend, direct, promoted):
            await made.close()


@pytest.fixture
def two_replica_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    require_command("redis-server", "redis-server")
    group = SentinelGroup(tmp_path, replicas=2)
    group.start()
    yield group
    group.stop()


@pytest.fixture
async def watched(
    two_replica_group: SentinelGroup,
) -> AsyncIterator[tuple[RedisBackend, SentinelLink]]:
    """A backend on the two-replica group, its link watching the sentinels as in the app."""
    backend = RedisBackend(RedisTarget.from_url(two_replica_group.url), 1.0)
    link = backend.sentinel
    assert link is not None
    watching = asyncio.create_task(link.watch(CacheStats()))
    yield backend, link
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    await backend.close()


async def test_with_two_replicas_a_bump_both_lack_is_not_confirmed_by_one(
    two_replica_group: SentinelGroup, watched: tuple[RedisBackend, SentinelLink]
) -> None:
    """Sentinel may promote either replica (the Bitnami chart's default has two): a bump
    counts as delivered only once every replica the sentinels could promote holds it.
    One replica frozen (SIGSTOP, not yet judged down): the other's acknowledgement alone
    is a failed delivery, where `WAIT 1` would have called it delivered."""
    backend, link = watched

    async def both_known() -> bool:
        return link.replicas == 2

    frozen = two_replica_group.replicas[1].process
    assert frozen is not None
    await wait_until(both_known, timeout=30)  # the sentinels list replicas from INFO
    await backend.bump(["sentinel-test:two"], 60)  # both in sync: confirmed
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        with pytest.raises(RedisError, match="1 of 2 replicas confirmed"):
            await backend.bump(["sentinel-test:two"], 60)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)


async def test_after_a_forced_failover_the_old_primary_counts_until_it_replicates(
    two_replica_group: SentinelGroup, watched: tuple[RedisBackend, SentinelLink]
) -> None:
    """After `SENTINEL FAILOVER` the sentinels list the old primary as a replica while it
    still runs as a primary (they reconfigure it only once it has reported that role for
    8 s), and they could promote it although it lacks what the new primary took since: a
    bump it has not confirmed is a failed delivery, confirmed again once it replicates."""
    group = two_replica_group
    backend, link = watched
    old = group.current_primary_port()

    async def both_known() -> bool:
        return link.replicas == 2 and link.primary is not None

    async def moved() -> bool:
        return link.primary is not None and link.primary[1] != old

    def old_role() -> str:
        with group.node(old).client() as client:
            return str(client.info("replication")["role"])

    async def confirmed() -> bool:
        try:
            await backend.bump(["sentinel-test:forced"], 60)
        except RedisError:
            return False
        return True

    await wait_until(both_known, timeout=30)
    group.force_failover()
    await wait_until(moved, timeout=20)
    assert old_role() == "master"  # not reconfigured yet: listed, and still counted
    with pytest.raises(RedisError, match="of 2 replicas confirmed"):
        await backend.bump(["sentinel-test:forced"], 60)
    await wait_until(confirmed, timeout=40, interval=0.2)
    assert old_role() == "slave"


async def test_a_demoted_primary_refuses_lookups_instead_of_answering_as_a_replica(
    sentinel_group: SentinelGroup,
) -> None:
    """Pooled connections outlive a failover: one still open to a primary that has become a
    replica must not answer lookups from data that may lag (the script is `#!lua`)."""
    key, entry = "sentinel-test:demoted", Cached('"v1"', b"body")
    backend = RedisBackend(RedisTarget.from_url(sentinel_group.url), 1.0)
    try:
        await backend.store(key, "0", entry, 60)
        assert await backend.lookup(key) == ("0", entry)  # a pooled connection to the primary
        with sentinel_group.primary.client() as primary:
            primary.replicaof("127.0.0.1", sentinel_group.replica.port)
        with pytest.raises(RedisError, match="previous master is now a slave"):
            await backend.lookup(key)
    finally:
        await backend.close()

"""REDIS_URL as redis-py reads it: TLS (`rediss://`) and ACL users reach a real redis-server.

The test makes its own CA and server certificate (tests/helpers/tls.py), and starts
redis-server with TLS only (`--port 0`), the default user off and one ACL user. The
service's cache must land its keys there (read back with redis-py over TLS), count no error,
and never show the password; a URL it cannot use stops it at start-up with one line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from service.app import create_app
from service.cache.stats import CACHE_STATS
from service.settings.loading import load_settings
from service.settings.model import ConfigError
from tests.helpers.app import AiohttpClient, Client, ready_client
from tests.helpers.servers import RedisServer, free_port
from tests.helpers.service import run_service
from tests.helpers.tls import make_certificates
from tests.helpers.tools import require_command

PASSWORD = "acl-pass-Zq8xW3"
USER = "cache-writer"


class TlsAclRedis(RedisServer):
    """redis-server speaking TLS only, with the default user off and one ACL user."""

    def command(self) -> list[str]:
        plain = super().command()
        plain[plain.index("--port") + 1] = "0"  # no plaintext listener at all
        d = self.directory
        return [*plain,
                "--tls-port", str(self.port),
                "--tls-cert-file", str(d / "server.crt"),
                "--tls-key-file", str(d / "server.key"),
                "--tls-ca-cert-file", str(d / "ca.crt"),
                "--tls-auth-clients", "no",
                "--user", "default", "off",
                "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all"]  # fmt: skip

    def tls_url(self, password: str = PASSWORD, **query: str) -> str:
        options = {"ssl_ca_certs": str(self.directory / "ca.crt"), "ssl_cert_reqs": "required"}
        options.update(query)
        text = "&".join(f"{name}={value}" for name, value in options.items())
        return f"rediss://{USER}:{password}@127.0.0.1:{self.port}/3?{text}"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsAclRedis]:
    require_command("redis-server", "redis-server")
    make_certificates(tmp_path / "redis")
    server = TlsAclRedis(tmp_path / "redis", port=free_port())
    server.start()
    yield server
    server.stop()


async def _cached_client(
    aiohttp_client: AiohttpClient, test_env: dict[str, str], url: str
) -> Client:
    settings = load_settings({**test_env, "CACHE_BACKEND": "redis", "REDIS_URL": url})
    # A TLS handshake on a busy test machine can outlast the 100 ms meant for a LAN.
    cache = dataclasses.replace(settings.cache, timeout_ms=5000)
    return await ready_client(
        aiohttp_client, create_app(dataclasses.replace(settings, cache=cache))
    )


def _counts(client: Client) -> dict[Any, int]:
    app: web.Application = client.app
    return dict(app[CACHE_STATS].counts)


def _metric(text: str, name: str, cache: str) -> float:
    match = re.search(rf'^\w*{name}{{[^}}]*cache="{cache}"[^}}]*}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_the_cache_speaks_tls_and_logs_in_as_an_acl_user(
    aiohttp_client: AiohttpClient, test_env: dict[str, str], tls_redis: TlsAclRedis
) -> None:
    client = await _cached_client(aiohttp_client, test_env, tls_redis.tls_url())
    created = await client.post("/users", json={"name": "Ada", "email": "ada@example.com"})
    user = await created.json()
    first = await client.get(f"/users/{user['id']}")
    second = await client.get(f"/users/{user['id']}")
    assert first.status == second.status == 200
    assert await first.read() == await second.read()
    counts = _counts(client)
    assert counts.get(("user", "hit")) == 1, counts
    assert not any(event == "error" for _, event in counts), counts
    metrics = await (await client.get("/metrics")).text()
    assert _metric(metrics, "cache_hits_total", "user") == 1
    assert _metric(metrics, "cache_errors_total", "user") == 0

    # The keys are there: read back over TLS, as the ACL user, from database 3.
    async with aioredis.from_url(tls_redis.tls_url()) as direct:
        keys = [key.decode() async for key in direct.scan_iter(f"*{user['id']}*")]
        assert keys == [f"user-service:v1:user:{user['id']}:0"], keys  # token 0: never written
        stored = await direct.get(keys[0])
        assert isinstance(stored, bytes)
        assert stored.partition(b"\n")[2] == await second.read()
    async with aioredis.from_url(tls_redis.tls_url().replace("/3?", "/0?")) as other_db:
        assert [key async for key in other_db.scan_iter(f"*{user['id']}*")] == []


async def test_both_clients_take_the_database_from_the_query_as_redis_py_does(
    aiohttp_client: AiohttpClient, test_env: dict[str, str], redis_server: RedisServer
) -> None:
    base = redis_server.url.rsplit("/", 1)[0]
    client = await _cached_client(aiohttp_client, test_env, f"{base}/?db=4")
    created = await client.post("/users", json={"name": "Db", "email": "db@example.com"})
    user = await created.json()
    for _ in range(2):
        assert (await client.get(f"/users/{user['id']}")).status == 200
    # Stored through aiocache, found by the lookup script: only if both chose database 4.
    counts = _counts(client)
    assert counts.get(("user", "hit")) == 1, counts
    async with aioredis.from_url(f"{base}/4") as direct:
        assert [key async for key in direct.scan_iter(f"*{user['id']}*")] != []


async def test_a_refused_login_or_certificate_is_a_counted_miss_that_never_shows_the_password(
    aiohttp_client: AiohttpClient,
    test_env: dict[str, str],
    tls_redis: TlsAclRedis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "wrong-pass-Kp4Rt9"
    other_ca = make_certificates(tmp_path / "other-ca")
    urls = [tls_redis.tls_url(password=wrong), tls_redis.tls_url(ssl_ca_certs=str(other_ca))]
    for url in urls:
        with caplog.at_level(logging.DEBUG):
            client = await _cached_client(aiohttp_client, test_env, url)
            created = await client.post("/users", json={"name": "B", "email": f"{len(url)}@b.co"})
            user = await created.json()
            for _ in range(3):
                assert (await client.get(f"/users/{user['id']}")).status == 200
        assert _counts(client).get(("user", "error"), 0) >= 3
    logged = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''} {record.args!r}"
        for record in caplog.records
    )
    assert "cache unavailable" in logged
    assert PASSWORD not in logged
    assert wrong not in logged


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://cache:6379/0", "schemes"),
        ("redis://:pw-Xy12@cache:abc/0", "Port"),
        ("redis://:pw-Xy12@cache:6379/zero", "database number"),
        ("redis://:pw-Xy12@cache:6379/0?no_such_option=1", "unknown option 'no_such_option'"),
        ("redis://:pw-Xy12@cache:6379/0?socket_timeout=soon", "socket_timeout"),
        ("rediss://:pw-Xy12@cache:6379/0?ssl_cert_reqs=maybe", "Certificate Requirements"),
        ("rediss://:pw-Xy12@cache:6379/0?ssl_ca_certs=/nonexistent/ca.pem", "TLS files"),
        ("unix://:pw-Xy12@/run/redis.sock", "unix sockets"),
    ],
)
def test_a_url_the_cache_cannot_use_is_a_configuration_error(url: str, reason: str) -> None:
    env = {"SERVICE_ENV": "test", "CACHE_BACKEND": "redis", "REDIS_URL": url}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert message.startswith("REDIS_URL: ")
    assert reason in message
    assert "pw-Xy12" not in message
    assert "\n" not in message


def test_settings_never_print_the_redis_password() -> None:
    url = "rediss://alice:pw-Xy12@cache:6379/0"
    settings = load_settings({"SERVICE_ENV": "test", "CACHE_BACKEND": "redis", "REDIS_URL": url})
    assert settings.cache.redis_url == url
    assert "pw-Xy12" not in repr(settings)


def test_the_command_exits_2_with_one_line_and_no_password() -> None:
    env = {**os.environ, "SERVICE_ENV": "test", "CACHE_BACKEND": "redis",
           "REDIS_URL": "rediss://alice:pw-Xy12@cache:6379/0?ssl_cert_reqs=maybe"}  # fmt: skip
    result = run_service(env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "REDIS_URL" in result.stderr
    assert "pw-Xy12" not in result.stderr
    assert "Traceback" not in result.stderr

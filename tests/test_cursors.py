"""Paging cursors are signed with a configured secret: forged or foreign ones get 400,
the previous secret still works during a rotation, production refuses to run without one."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest

from service.app import create_app
from service.settings.loading import load_settings
from service.settings.model import ConfigError, PagingSettings, Settings
from service.storage.mongo import Mongo
from tests.helpers.api import checked
from tests.helpers.app import AiohttpClient, Client, ready_client
from tests.helpers.servers import free_port, wait_for_port
from tests.helpers.service import run_service, spawn_service

SECRET_A = "first-cursor-secret-for-tests"
SECRET_B = "second-cursor-secret-for-test"
PRODUCTION = {
    "SERVICE_ENV": "production",
    "MONGO_URL": "mongodb://db:27017/?replicaSet=rs0",
    "REDIS_URL": "redis://cache:6379/0",
    "API_TOKENS": "a-long-enough-write-token",
}


async def _client(
    aiohttp_client: AiohttpClient, settings: Settings, secret: str, previous: str = ""
) -> Client:
    paging = PagingSettings(cursor_secret=secret, cursor_secret_previous=previous)
    return await ready_client(
        aiohttp_client, create_app(dataclasses.replace(settings, paging=paging))
    )


async def _first_page(client: Client) -> str:
    for i in range(3):
        body = {"name": f"U{i}", "email": f"u{i}@example.com"}
        assert (await client.post("/users", json=body)).status == 201
    page = await checked(await client.get("/users?limit=1"), "GET", "/users")
    assert page["next"]
    cursor: str = page["next"]
    return cursor


async def _refused(client: Client, cursor: str) -> None:
    response = await client.get(f"/users?limit=1&after={cursor}")
    assert response.status == 400
    problem = await checked(response, "GET", "/users")
    assert [error["pointer"] for error in problem["errors"]] == ["after"]


def _signed_with(key: bytes, position: dict[str, str]) -> str:
    payload = base64.urlsafe_b64encode(msgspec.json.encode(position)).rstrip(b"=")
    mac = hmac.new(key, payload, hashlib.sha256).digest()[:12]
    return f"{payload.decode()}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def test_cursors_from_another_secret_are_refused_and_rotation_keeps_old_ones(
    aiohttp_client: AiohttpClient, settings: Settings, mongo: Mongo
) -> None:
    first = await _client(aiohttp_client, settings, SECRET_A)
    cursor = await _first_page(first)
    assert (await first.get(f"/users?limit=1&after={cursor}")).status == 200

    await _refused(await _client(aiohttp_client, settings, SECRET_B), cursor)
    # The key that used to be in the source signs nothing any more.
    some_id = (await mongo.users.find_one({}))["_id"]  # type: ignore[index]
    await _refused(first, _signed_with(b"user-service cursor v1", {"id": some_id}))

    rotated = await _client(aiohttp_client, settings, SECRET_B, previous=SECRET_A)
    page = await checked(await rotated.get(f"/users?limit=1&after={cursor}"), "GET", "/users")
    assert page["next"]
    assert (await rotated.get(f"/users?limit=1&after={page['next']}")).status == 200
    await _refused(first, page["next"])  # new cursors are signed with the new secret


async def test_without_a_secret_development_generates_one_and_says_so(
    aiohttp_client: AiohttpClient, test_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    env = {name: value for name, value in test_env.items() if name != "CURSOR_SECRET"}
    settings = load_settings(env)
    assert settings.paging.cursor_secret == ""
    with caplog.at_level(logging.WARNING, logger="service.domain.cursors"):
        client = await ready_client(aiohttp_client, create_app(settings))
        other = await ready_client(aiohttp_client, create_app(settings))
    lines = [r.getMessage() for r in caplog.records if r.name == "service.domain.cursors"]
    assert len(lines) == 2
    assert all("CURSOR_SECRET" in line and "generated" in line for line in lines)
    cursor = await _first_page(client)
    assert (await client.get(f"/users?limit=1&after={cursor}")).status == 200
    await _refused(other, cursor)  # another process, another secret


def test_production_refuses_to_start_without_a_secret() -> None:
    with pytest.raises(ConfigError, match=r"^CURSOR_SECRET: production needs it set"):
        load_settings(PRODUCTION)
    result = run_service({**os.environ, **PRODUCTION})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "CURSOR_SECRET" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["CURSOR_SECRET", "CURSOR_SECRET_PREVIOUS"])
def test_short_secrets_are_refused_without_echoing_them(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**PRODUCTION, "CURSOR_SECRET": SECRET_A, name: "short-secret"})
    assert str(caught.value).startswith(f"{name}: expected at least 16 bytes")
    assert "short-secret" not in str(caught.value)


def test_secrets_never_show_when_settings_are_printed() -> None:
    settings = load_settings(
        {**PRODUCTION, "CURSOR_SECRET": SECRET_A, "CURSOR_SECRET_PREVIOUS": SECRET_B}
    )
    assert settings.paging.cursor_secret == SECRET_A
    assert settings.paging.cursor_secret_previous == SECRET_B
    assert SECRET_A not in repr(settings)
    assert SECRET_B not in repr(settings)


def _http(method: str, url: str, body: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request on a fresh connection, so that any worker may answer it."""
    data = None if body is None else json.dumps(body).encode()
    assert url.startswith("http://127.0.0.1:")
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None


def test_gunicorn_workers_share_the_secret_it_generated(
    test_env: dict[str, str], tmp_path: Path
) -> None:
    """Without CURSOR_SECRET, the gunicorn master makes one for all its workers: a page
    fetched from one worker continues on any other."""
    port = free_port()
    env = {name: value for name, value in {**os.environ, **test_env}.items()
           if name != "CURSOR_SECRET"}  # fmt: skip
    env.update({"PORT": str(port), "WEB_CONCURRENCY": "2", "SHUTDOWN_DRAIN_SECONDS": "0",
                "METRICS_DIR": str(tmp_path / "metrics")})  # fmt: skip
    log = tmp_path / "gunicorn.log"
    process = spawn_service("gunicorn", env, log)
    try:
        wait_for_port(port, process=process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while _http("GET", f"{base}/health/ready")[0] != 200:  # the indexes exist
            assert time.monotonic() < deadline, "not ready within 20 s"
            time.sleep(0.1)
        for i in range(4):
            created = _http("POST", f"{base}/users", {"name": f"U{i}", "email": f"u{i}@b.co"})
            assert created[0] == 201
        statuses = []
        for _ in range(20):
            cursor = _http("GET", f"{base}/users?limit=1")[1]["next"]
            statuses.append(_http("GET", f"{base}/users?limit=1&after={cursor}")[0])
        assert statuses == [200] * 20
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text()
    assert text.count("CURSOR_SECRET) is not set") == 1, text  # said once, by the master

"""Probes: liveness never does I/O; readiness follows the database and shutdown."""

from __future__ import annotations

import dataclasses
import time

from aiohttp import web

from service.app import create_app
from service.lifecycle import LIFECYCLE
from service.settings.model import Settings
from service.storage.mongo import MONGO
from tests.helpers.app import AiohttpClient, Client, wait_until
from tests.helpers.servers import MongoServer, free_port, silent_server


def _pointed_at(settings: Settings, url: str) -> Settings:
    return dataclasses.replace(settings, mongo=dataclasses.replace(settings.mongo, url=url))


async def test_live_and_ready(client: Client) -> None:
    live = await client.get("/health/live")
    assert live.status == 200
    assert await live.json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status == 200
    assert (await ready.json())["status"] == "ok"


async def test_starts_without_database_and_becomes_ready_when_it_appears(
    aiohttp_client: AiohttpClient, settings: Settings, own_mongo_server: MongoServer
) -> None:
    own_mongo_server.stop()
    app = create_app(_pointed_at(settings, own_mongo_server.url))
    client = await aiohttp_client(app)

    assert (await client.get("/health/live")).status == 200
    started = time.monotonic()
    ready = await client.get("/health/ready")
    assert time.monotonic() - started < 2.5
    assert ready.status == 503
    assert ready.content_type == "application/problem+json"
    assert "mongodb" in (await ready.json())["detail"]
    assert not app[MONGO].indexes_ready

    own_mongo_server.start()

    async def is_ready() -> bool:
        return (await client.get("/health/ready")).status == 200

    await wait_until(is_ready, timeout=15)
    assert app[MONGO].indexes_ready  # the background task created them without a restart


async def test_ready_follows_a_database_outage_without_restart(
    aiohttp_client: AiohttpClient, settings: Settings, own_mongo_server: MongoServer
) -> None:
    client = await aiohttp_client(create_app(_pointed_at(settings, own_mongo_server.url)))

    async def status_is(code: int) -> bool:
        return (await client.get("/health/ready")).status == code

    await wait_until(lambda: status_is(200))
    own_mongo_server.stop()
    started = time.monotonic()
    await wait_until(lambda: status_is(503), timeout=5)
    assert time.monotonic() - started < 2.5
    own_mongo_server.start()
    await wait_until(lambda: status_is(200), timeout=10)


async def test_ready_bounds_its_wait_on_a_silent_server(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    """A port that accepts connections but never answers must not hang the probe."""
    async with silent_server() as port:
        client = await aiohttp_client(
            create_app(_pointed_at(settings, f"mongodb://127.0.0.1:{port}"))
        )
        started = time.monotonic()
        response = await client.get("/health/ready")
        assert response.status == 503
        assert time.monotonic() - started < 2.5
        await client.close()  # shutdown cancels calls still waiting on the silent server


async def test_ready_is_503_once_shutdown_begins(client: Client) -> None:
    app: web.Application = client.app
    app[LIFECYCLE].shutting_down = True
    response = await client.get("/health/ready")
    assert response.status == 503
    assert "shutting down" in (await response.json())["detail"]
    assert (await client.get("/health/live")).status == 200


async def test_credentials_never_appear_in_readiness(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    url = f"mongodb://admin:hunter2@127.0.0.1:{free_port()}"
    client = await aiohttp_client(create_app(_pointed_at(settings, url)))
    response = await client.get("/health/ready")
    assert response.status == 503
    assert "hunter2" not in await response.text()

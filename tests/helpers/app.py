"""The app under test: the test client's types, a client once the app is ready, and an app
whose access log the test can read back."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.observability.access_log import ACCESS_LOG
from service.settings.model import Settings
from service.storage.mongo import MONGO
from service.storage.retry import RETRY_POLICY

# The suite's paging secret: tests that sign cursors themselves use it (service/domain/cursors.py).
CURSOR_SECRET = "the-test-suite-cursor-secret"
AiohttpClient = Callable[[web.Application], Awaitable[TestClient[Any, web.Application]]]
Client = TestClient[Any, web.Application]


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05
) -> None:
    """Poll `check` every `interval` seconds (0: every turn of the event loop) until it
    holds; fail the test with a clear message if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def ready_client(aiohttp_client: AiohttpClient, app: web.Application) -> Client:
    """A test client on the real app, once its indexes exist (uniqueness depends on them)."""
    client = await aiohttp_client(app)

    async def indexes_ready() -> bool:
        return app[MONGO].indexes_ready

    await wait_until(indexes_ready)
    return client


def client_port(client: Client) -> int:
    """The port the test server listens on, for clients other than aiohttp's (curl, sockets)."""
    assert client.port is not None
    return client.port


def retries(client: Client) -> int:
    """How many database calls the app has retried so far, over every reason."""
    return sum(client.app[RETRY_POLICY].counts.values())


def json_log_app(settings: Settings) -> web.Application:
    """The app with JSON access lines at INFO, written to a string the test reads back."""
    app = create_app(
        dataclasses.replace(
            settings, log=dataclasses.replace(settings.log, format="json", level="INFO")
        )
    )
    app[ACCESS_LOG].stream = io.StringIO()
    return app


def access_lines(app: web.Application) -> list[dict[str, Any]]:
    """What a `json_log_app`'s access log has written, flushed now rather than at the next tick."""
    access = app[ACCESS_LOG]
    assert isinstance(access.stream, io.StringIO)
    access.flush()
    return [json.loads(line) for line in access.stream.getvalue().splitlines()]

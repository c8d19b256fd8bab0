"""Every error is problem+json; unexpected ones leak nothing and are logged with the request id."""

from __future__ import annotations

import logging
import uuid

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers.app import AiohttpClient

# The subject is the HTTP layer, not the database driver: one run, on the first driver.
pytestmark = pytest.mark.one_driver

PROBLEM_KEYS = {"type", "title", "status", "detail"}


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret internal detail: mongodb://admin:pw@db-7.internal")


@pytest.fixture
async def boom_client(aiohttp_client: AiohttpClient, app: web.Application) -> TestClient:  # type: ignore[type-arg]
    app.router.add_get("/boom", _boom)  # a deliberately broken route on the real app
    return await aiohttp_client(app)


async def test_unknown_route_is_404_problem(boom_client: TestClient) -> None:  # type: ignore[type-arg]
    response = await boom_client.get("/no/such/thing")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    assert set(await response.json()) >= PROBLEM_KEYS


async def test_wrong_method_is_405_with_allow(boom_client: TestClient) -> None:  # type: ignore[type-arg]
    response = await boom_client.delete("/health/live")
    assert response.status == 405
    assert response.headers["Allow"] == "GET,HEAD"  # HEAD wherever GET (RFC 9110 §9.1)
    assert (await response.json())["status"] == 405


async def test_unexpected_error_is_a_bare_500_logged_with_request_id(
    boom_client: TestClient,  # type: ignore[type-arg]
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await boom_client.get("/boom")
    assert response.status == 500
    assert response.content_type == "application/problem+json"
    text = await response.text()
    for leak in ("secret", "Traceback", "RuntimeError", "internal", "pw@"):
        assert leak not in text
    request_id = response.headers["X-Request-ID"]
    records = [r for r in caplog.records if r.exc_info and r.levelno == logging.ERROR]
    assert records, "the exception was not logged"
    assert getattr(records[-1], "request_id", None) == request_id


async def test_incoming_request_id_is_reused_and_bad_ones_replaced(
    boom_client: TestClient,  # type: ignore[type-arg]
) -> None:
    mine = f"req-{uuid.uuid4().hex}"
    response = await boom_client.get("/health/live", headers={"X-Request-ID": mine})
    assert response.headers["X-Request-ID"] == mine
    response = await boom_client.get("/health/live", headers={"X-Request-ID": "bad id\t<script>"})
    assert response.headers["X-Request-ID"] != "bad id\t<script>"
    assert len(response.headers["X-Request-ID"]) == 32
